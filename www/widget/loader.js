// quantweb-chat.js, the one script tag a site adds to get <quantweb-chat>: it imports the element
// module and, when the tag carries data-model, places one element in the page. Site generators
// load it as a classic script (mdBook's additional-js) or as a module, so it has no import/export
// statements and no import.meta (a classic script cannot parse them): it finds its own URL from
// its script tag and resolves the element module against that, which keeps it working under any
// sub-path.
(() => {
  // Where the element module is, relative to this file. `cargo xtask dist` rewrites this line to
  // the bundle's content-hashed directory, where this file is not.
  const BASE = './';

  // A module script has no currentScript; it runs after parsing, so the last matching tag is the
  // best guess. widget/loader.js is this file's name in the source tree.
  const script = document.currentScript
    || [...document.querySelectorAll('script[src*="quantweb-chat"], script[src$="widget/loader.js"]')].pop();
  if (!script) {
    console.error('quantweb-chat: cannot find its own <script> tag (its src must contain "quantweb-chat")');
    return;
  }
  const moduleUrl = new URL(BASE + 'quantweb-chat.js', script.src).href;
  import(moduleUrl).catch((e) => console.error(`quantweb-chat: cannot load ${moduleUrl}:`, e));

  if (!script.hasAttribute('data-model')) return;
  const place = () => {
    if (document.querySelector('quantweb-chat')) return;
    const el = document.createElement('quantweb-chat');
    for (const { name, value } of script.attributes) {
      if (name.startsWith('data-')) el.setAttribute(name.slice('data-'.length), value);
    }
    document.body.append(el);
  };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', place, { once: true });
  else place();
})();

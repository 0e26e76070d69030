// The element's styles, adopted into its shadow root: nothing here can reach the host page,
// and the host's styles reach in only through the --quantweb-* custom properties below.

export const css = `
:host {
  all: initial;
  --qw-accent: var(--quantweb-accent, #2563eb);
  --qw-accent-fg: var(--quantweb-accent-fg, #ffffff);
  --qw-bg: var(--quantweb-bg, #ffffff);
  --qw-fg: var(--quantweb-fg, #1f2328);
  --qw-muted: var(--quantweb-muted, #59636e);
  --qw-border: var(--quantweb-border, #d1d9e0);
  --qw-surface: var(--quantweb-surface, #f6f8fa);
  --qw-error: var(--quantweb-error, #b42318);
  --qw-font: var(--quantweb-font, system-ui, -apple-system, "Segoe UI", Roboto, sans-serif);
  --qw-radius: var(--quantweb-radius, 12px);
  --qw-width: var(--quantweb-width, 420px);
  --qw-height: var(--quantweb-height, min(640px, calc(100vh - 96px)));
  --qw-z: var(--quantweb-z-index, 2147483000);
  display: block;
  font-family: var(--qw-font);
  font-size: 14px;
  line-height: 1.5;
  color: var(--qw-fg);
}
.root[data-scheme=dark] {
  --qw-accent: var(--quantweb-accent, #4493f8);
  --qw-accent-fg: var(--quantweb-accent-fg, #ffffff);
  --qw-bg: var(--quantweb-bg, #161b22);
  --qw-fg: var(--quantweb-fg, #e6edf3);
  --qw-muted: var(--quantweb-muted, #9198a1);
  --qw-border: var(--quantweb-border, #3d444d);
  --qw-surface: var(--quantweb-surface, #0d1117);
  --qw-error: var(--quantweb-error, #f85149);
  color: var(--qw-fg);
}
*, *::before, *::after { box-sizing: border-box; }
[hidden] { display: none !important; }
button, textarea, input { font: inherit; color: inherit; }
button {
  cursor: pointer; border: 1px solid var(--qw-border); background: var(--qw-surface);
  border-radius: 8px; padding: 6px 12px;
}
button.primary { background: var(--qw-accent); color: var(--qw-accent-fg); border-color: var(--qw-accent); }
button:disabled { opacity: .6; cursor: default; }
button:focus-visible, textarea:focus-visible, a:focus-visible, input:focus-visible {
  outline: 2px solid var(--qw-accent); outline-offset: 2px;
}
a { color: var(--qw-accent); }
.launcher {
  position: fixed; right: 20px; bottom: 20px; z-index: var(--qw-z);
  background: var(--qw-accent); color: var(--qw-accent-fg); border: none; border-radius: 999px;
  padding: 10px 16px; box-shadow: 0 4px 16px rgb(0 0 0 / .2); font-weight: 600;
}
.launcher kbd { font: inherit; opacity: .75; margin-left: 6px; font-size: 12px; }
.panel {
  display: flex; flex-direction: column; background: var(--qw-bg); color: var(--qw-fg);
  border: 1px solid var(--qw-border); border-radius: var(--qw-radius); overflow: hidden;
}
.root[data-placement=launcher] .panel {
  position: fixed; right: 20px; bottom: 20px; z-index: var(--qw-z);
  width: min(var(--qw-width), calc(100vw - 40px)); height: var(--qw-height);
  box-shadow: 0 8px 32px rgb(0 0 0 / .25);
}
.root[data-placement=inline] .panel { width: 100%; min-height: 320px; max-height: var(--qw-height); }
.head { display: flex; align-items: center; gap: 8px; padding: 10px 12px; border-bottom: 1px solid var(--qw-border); }
.head h2 { font-size: 15px; margin: 0; flex: 1; }
.head .close { border: none; background: none; font-size: 18px; line-height: 1; padding: 4px 8px; }
.body { flex: 1; overflow-y: auto; padding: 12px; display: flex; flex-direction: column; gap: 10px; }
.foot { border-top: 1px solid var(--qw-border); padding: 10px 12px; display: flex; flex-direction: column; gap: 8px; }
.muted { color: var(--qw-muted); font-size: 13px; }
.card { border: 1px solid var(--qw-border); border-radius: 8px; padding: 10px; background: var(--qw-surface); }
.card dl { display: grid; grid-template-columns: auto 1fr; gap: 2px 12px; margin: 6px 0; }
.card dt { color: var(--qw-muted); }
.card dd { margin: 0; }
.verdict { font-weight: 600; }
.verdict[data-level=fits] { color: #1a7f37; }
.root[data-scheme=dark] .verdict[data-level=fits] { color: #3fb950; }
.verdict[data-level=tight] { color: #9a6700; }
.root[data-scheme=dark] .verdict[data-level=tight] { color: #d29922; }
.verdict[data-level=does_not_fit] { color: var(--qw-error); }
.reasons { margin: 4px 0 0; padding-left: 18px; color: var(--qw-muted); font-size: 13px; }
.actions { display: flex; gap: 8px; flex-wrap: wrap; align-items: center; }
progress { width: 100%; height: 8px; accent-color: var(--qw-accent); }
.error { border: 1px solid var(--qw-error); color: var(--qw-error); border-radius: 8px; padding: 8px 10px; }
.error strong { display: block; }
.log { display: flex; flex-direction: column; gap: 10px; }
.msg { white-space: pre-wrap; overflow-wrap: anywhere; }
.msg.user { align-self: flex-end; background: var(--qw-accent); color: var(--qw-accent-fg); border-radius: 12px 12px 2px 12px; padding: 6px 10px; max-width: 85%; }
.msg.assistant { align-self: stretch; }
.sources { margin: 4px 0 0; padding-left: 18px; font-size: 13px; }
.sources-label { font-size: 12px; color: var(--qw-muted); margin-top: 4px; }
.starters { display: flex; flex-wrap: wrap; gap: 6px; }
.starters button { font-size: 13px; border-radius: 999px; }
.ask { display: flex; gap: 8px; align-items: flex-end; }
.ask textarea {
  flex: 1; resize: none; min-height: 38px; max-height: 120px; padding: 8px;
  border: 1px solid var(--qw-border); border-radius: 8px; background: var(--qw-bg);
}
.scope { display: flex; gap: 6px; align-items: center; font-size: 13px; color: var(--qw-muted); }
.sr-only { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
`;

// A site's script against <quantweb-chat>'s declarations: the element and its events typed.
import type { QuantwebSource } from '../../www/widget/quantweb-chat.js';

const chat = document.querySelector('quantweb-chat');
if (chat) {
  chat.open({ question: 'How do I install it?' });
  chat.addEventListener('quantweb-answer', (e) => {
    const links: QuantwebSource[] = e.detail.sources;
    console.log(e.detail.answer, links.map((s) => `${s.heading} ${s.href}`), e.detail.stopped);
  });
  chat.addEventListener('quantweb-error', (e) => console.warn(e.detail.name, e.detail.message));
  const placement: 'launcher' | 'inline' = chat.placement;
  void placement;
  void chat.removeModel();
}

// Types of <quantweb-chat> (quantweb-chat.js beside this file). Importing the module defines
// the element; with these declarations, `document.querySelector('quantweb-chat')` and the
// element's events are typed.

/** A section of the site the answer was given from. */
export interface QuantwebSource {
  /** Absolute http(s) URL of the section (page URL and `#anchor`). */
  href: string;
  /** The page's title. */
  title: string;
  /** The section's heading ("" for a page's lead text). */
  heading: string;
}

export interface QuantwebAnswerDetail {
  question: string;
  answer: string;
  /** Links shown under the answer: the sections put in the prompt, in that order. */
  sources: QuantwebSource[];
  /** True when the reader pressed Stop. */
  stopped: boolean;
}

export interface QuantwebErrorDetail {
  /** The error's name: HttpError, NetworkError, UnsupportedModelError, IndexError, ConfigError, … */
  name: string;
  message: string;
  /** What the widget shows above the message. */
  title: string;
}

/**
 * The docs assistant. Attributes: `model` (URL of a GGUF file or its first shard), `index`
 * (URL of a `quantweb index` file; without it, answers come from the current page),
 * `context-length` (tokens, default 2048), `max-tokens` (answer length, default 512),
 * `system-prompt`, `starter-questions` (a JSON array, or questions separated by `|`),
 * `placement` ('launcher', default, or 'inline'), `shortcut` ('mod+i' by default, e.g.
 * 'ctrl+k', or 'none') and `theme` ('auto', default, 'light' or 'dark').
 */
export declare class QuantwebChat extends HTMLElement {
  readonly placement: 'launcher' | 'inline';
  readonly contextLength: number;
  readonly maxTokens: number;
  readonly isOpen: boolean;
  /** Opens the widget (reading the model's header the first time); asks `question` once ready. */
  open(options?: { question?: string }): void;
  /** Closes the launcher's panel; focus returns where it was. */
  close(): void;
  /** Stops the answer being generated. */
  stop(): void;
  /** Unloads the model and deletes it from this browser's storage. */
  removeModel(): Promise<void>;
}

/** Parses a shortcut such as 'mod+i' (Cmd on Apple devices, Ctrl elsewhere); null for 'none'. */
export declare function parseShortcut(text: string | null | undefined): { label: string; matches(e: KeyboardEvent): boolean } | null;

declare global {
  interface HTMLElementTagNameMap {
    'quantweb-chat': QuantwebChat;
  }
  interface HTMLElementEventMap {
    'quantweb-open': CustomEvent<void>;
    'quantweb-answer': CustomEvent<QuantwebAnswerDetail>;
    'quantweb-error': CustomEvent<QuantwebErrorDetail>;
  }
}

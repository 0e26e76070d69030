//! Byte-level BPE (`tokenizer.ggml.model = "gpt2"`), following llama.cpp's
//! `llm_tokenizer_bpe_session`: each pre-tokenized word is written in GPT-2's byte alphabet, split
//! into characters, and the adjacent pair with the lowest merge rank (leftmost on ties) is merged
//! until no listed merge applies.

use super::pretokenize::PreTokenizer;
use super::unicode::byte_to_char;
use super::Vocab;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

pub(crate) struct Bpe {
    pub(crate) pre: Arc<PreTokenizer>,
    /// Merge rank by the merge's text `"left right"` (see [`Bpe::rank`]).
    ranks: HashMap<String, u32>,
    /// A word that is itself a token is emitted whole (llama.cpp's `ignore_merges`).
    ignore_merges: bool,
}

/// A character run of the word being merged; `len == 0` once merged into its left neighbour.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

impl Bpe {
    pub(crate) fn new(pre: Arc<PreTokenizer>, merges: &[String], ignore_merges: bool) -> Self {
        let mut ranks = HashMap::with_capacity(merges.len());
        for (rank, m) in merges.iter().enumerate() {
            // As llama.cpp, the first rank of a pair listed twice. Every merge is two tokens
            // split at the first space from byte 1 (the tokenizer's check_merges saw to it).
            ranks.entry(m.clone()).or_insert(rank as u32);
        }
        Self {
            pre,
            ranks,
            ignore_merges,
        }
    }

    /// Rank of merging `left` and `right`. The merge `"a b c"` means (`a`, `b c`), never
    /// (`a b`, `c`): the pair is split at the first space after the first byte.
    fn rank(&self, left: &str, right: &str) -> Option<u32> {
        if left.as_bytes()[1..].contains(&b' ') {
            return None;
        }
        let mut key = String::with_capacity(left.len() + 1 + right.len());
        key.push_str(left);
        key.push(' ');
        key.push_str(right);
        self.ranks.get(&key).copied()
    }

    /// Tokenizes one text fragment (no special tokens in it) onto `out`.
    pub(crate) fn tokenize(&self, text: &str, vocab: &Vocab, out: &mut Vec<u32>) {
        let mut encoded = String::new();
        for word in self.pre.split(text) {
            encoded.clear();
            encoded.extend(word.bytes().map(byte_to_char));
            self.merge_word(&encoded, vocab, out);
        }
    }

    fn merge_word(&self, word: &str, vocab: &Vocab, out: &mut Vec<u32>) {
        if self.ignore_merges {
            if let Some(id) = vocab.id(word) {
                out.push(id);
                return;
            }
        }
        let mut symbols: Vec<Symbol> = Vec::with_capacity(word.len());
        for (i, (start, c)) in word.char_indices().enumerate() {
            symbols.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: Some(i + 1),
            });
        }
        if let Some(last) = symbols.last_mut() {
            last.next = None;
        }
        let text = |s: &Symbol| &word[s.start..s.start + s.len];

        // Min-heap on (rank, left index): lowest rank first, leftmost on ties. `size` is the
        // byte length of the pair when queued; a pair whose right symbol has grown since is stale.
        let mut queue: BinaryHeap<Reverse<(u32, usize, usize, usize)>> = BinaryHeap::new();
        let push = |queue: &mut BinaryHeap<_>, symbols: &[Symbol], l: usize, r: usize| {
            let (a, b) = (&symbols[l], &symbols[r]);
            if let Some(rank) = self.rank(text(a), text(b)) {
                queue.push(Reverse((rank, l, r, a.len + b.len)));
            }
        };
        for i in 1..symbols.len() {
            push(&mut queue, &symbols, i - 1, i);
        }
        while let Some(Reverse((_, l, r, size))) = queue.pop() {
            let (left, right) = (symbols[l], symbols[r]);
            if left.len == 0 || right.len == 0 || left.len + right.len != size {
                continue;
            }
            symbols[l].len += right.len;
            symbols[r].len = 0;
            symbols[l].next = right.next;
            if let Some(n) = right.next {
                symbols[n].prev = Some(l);
            }
            if let Some(p) = symbols[l].prev {
                push(&mut queue, &symbols, p, l);
            }
            if let Some(n) = symbols[l].next {
                push(&mut queue, &symbols, l, n);
            }
        }

        for s in symbols.iter().filter(|s| s.len > 0) {
            let t = text(s);
            if let Some(id) = vocab.id(t) {
                out.push(id);
            } else {
                // As llama.cpp: each byte of the (byte-encoded) text looked up on its own, which
                // can only find single ASCII characters; anything else is dropped.
                for b in t.bytes().filter(u8::is_ascii) {
                    if let Some(id) = vocab.id(std::str::from_utf8(&[b]).expect("ASCII")) {
                        out.push(id);
                    }
                }
            }
        }
    }
}

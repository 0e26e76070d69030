//! SentencePiece-style tokenization (`tokenizer.ggml.model = "llama"`: Llama 2, Gemma …),
//! following llama.cpp's `llm_tokenizer_spm_session`: the text (spaces already written as `▁`)
//! is split into UTF-8 characters, and the adjacent pair whose concatenation is the vocabulary
//! entry with the highest score (leftmost on ties) is merged while any such pair exists.
//! Characters left that are no token are written as byte tokens `<0xXX>`.
//!
//! Every merge forms a vocabulary entry, so a symbol that is not a token is always a single
//! character, and llama.cpp's re-segmentation of unknown merged symbols never comes into play.

use super::Vocab;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge. Ordered as llama.cpp's `llm_bigram_spm::comparator`: higher score first,
/// then the leftmost; `size` (bytes when queued) detects stale entries.
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// `Greater` pops first from the max-heap. Scores are compared with `<`/`>` like the C++
    /// (so -0.0 and 0.0 tie), then the smaller left index wins.
    fn cmp(&self, other: &Self) -> Ordering {
        if self.score > other.score {
            Ordering::Greater
        } else if self.score < other.score {
            Ordering::Less
        } else {
            other.left.cmp(&self.left)
        }
    }
}

/// Tokenizes `text` (whitespace already escaped) onto `out`.
pub(crate) fn tokenize(text: &str, vocab: &Vocab, out: &mut Vec<u32>) {
    let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
    for (i, (start, c)) in text.char_indices().enumerate() {
        symbols.push(Symbol {
            start,
            len: c.len_utf8(),
            prev: i.checked_sub(1),
            next: Some(i + 1),
        });
    }
    let Some(last) = symbols.last_mut() else {
        return;
    };
    last.next = None;

    let mut queue = BinaryHeap::new();
    let try_add = |queue: &mut BinaryHeap<Bigram>, symbols: &[Symbol], l: usize, r: usize| {
        let (a, b) = (&symbols[l], &symbols[r]);
        let pair = &text[a.start..a.start + a.len + b.len];
        if let Some(id) = vocab.id(pair) {
            queue.push(Bigram {
                score: vocab.scores[id as usize],
                left: l,
                right: r,
                size: pair.len(),
            });
        }
    };
    for i in 1..symbols.len() {
        try_add(&mut queue, &symbols, i - 1, i);
    }
    while let Some(b) = queue.pop() {
        let (left, right) = (symbols[b.left], symbols[b.right]);
        if left.len == 0 || right.len == 0 || left.len + right.len != b.size {
            continue;
        }
        symbols[b.left].len += right.len;
        symbols[b.right].len = 0;
        symbols[b.left].next = right.next;
        if let Some(n) = right.next {
            symbols[n].prev = Some(b.left);
        }
        if let Some(p) = symbols[b.left].prev {
            try_add(&mut queue, &symbols, p, b.left);
        }
        if let Some(n) = symbols[b.left].next {
            try_add(&mut queue, &symbols, b.left, n);
        }
    }

    let mut i = Some(0);
    while let Some(k) = i {
        let s = symbols[k];
        let piece = &text[s.start..s.start + s.len];
        match vocab.id(piece) {
            Some(id) => out.push(id),
            None => out.extend(piece.bytes().filter_map(|b| vocab.byte_token(b))),
        }
        i = s.next;
    }
}

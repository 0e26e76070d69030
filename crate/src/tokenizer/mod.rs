//! Text ↔ token ids, identical to llama.cpp (`src/llama-vocab.cpp`, `src/unicode.cpp`).
//!
//! A [`Tokenizer`] is built from a model's GGUF metadata (`tokenizer.ggml.*`):
//!
//! - `model = "gpt2"`: byte-level BPE with `merges`, pre-tokenized by the regex list llama.cpp
//!   uses for `pre` (see [`pretokenize`]); `"llama"`: SentencePiece-style merges by `scores`
//!   with `<0xXX>` byte fallback and spaces written as `▁` (Llama 2, Gemma).
//! - `token_type` gives each token its attributes; llama.cpp then adjusts them by token text
//!   (`<|im_end|>`, `<end_of_turn>` … become control tokens; control tokens named `unused` are
//!   marked unused), and so does this.
//! - Special tokens are split out of the text first (llama.cpp's `tokenizer_st_partition`),
//!   longest first: control and unknown tokens only with `parse_special`, user-defined tokens
//!   (e.g. Gemma's runs of spaces and newlines) always.
//!
//! Decoding follows `llama_detokenize(remove_special = false)`; [`StreamDecoder`] gives the same
//! text token by token (except the `clean_spaces` clean-up of some BPE models, which llama.cpp
//! applies to whole texts only), holding back bytes of an unfinished UTF-8 character.

mod bpe;
mod pretokenize;
mod spm;
mod unicode;
mod unicode_table;

use crate::error::{Error, Result};
use crate::gguf::{GgufModel, Value};
use bpe::Bpe;
pub(crate) use pretokenize::supported_pre_names;
use pretokenize::{pre_spec, PreTokenizer};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// llama.cpp's `llama_token_attr` bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenAttr(pub u16);

impl TokenAttr {
    pub const UNDEFINED: TokenAttr = TokenAttr(0);
    pub const UNKNOWN: TokenAttr = TokenAttr(1 << 0);
    pub const UNUSED: TokenAttr = TokenAttr(1 << 1);
    pub const NORMAL: TokenAttr = TokenAttr(1 << 2);
    pub const CONTROL: TokenAttr = TokenAttr(1 << 3);
    pub const USER_DEFINED: TokenAttr = TokenAttr(1 << 4);
    pub const BYTE: TokenAttr = TokenAttr(1 << 5);
    pub const NORMALIZED: TokenAttr = TokenAttr(1 << 6);
    pub const LSTRIP: TokenAttr = TokenAttr(1 << 7);
    pub const RSTRIP: TokenAttr = TokenAttr(1 << 8);

    /// Whether any bit of `other` is set.
    pub fn has(self, other: TokenAttr) -> bool {
        self.0 & other.0 != 0
    }

    fn from_token_type(t: i64) -> TokenAttr {
        // GGUF token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
        match t {
            1 => Self::NORMAL,
            2 => Self::UNKNOWN,
            3 => Self::CONTROL,
            4 => Self::USER_DEFINED,
            5 => Self::UNUSED,
            6 => Self::BYTE,
            _ => Self::UNDEFINED,
        }
    }
}

impl std::ops::BitOr for TokenAttr {
    type Output = TokenAttr;
    fn bitor(self, rhs: TokenAttr) -> TokenAttr {
        TokenAttr(self.0 | rhs.0)
    }
}

/// Which algorithm turns text into tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenizerKind {
    /// `tokenizer.ggml.model = "gpt2"`
    Bpe,
    /// `tokenizer.ggml.model = "llama"`
    Spm,
}

/// The vocabulary as both algorithms look it up.
pub(crate) struct Vocab {
    tokens: Vec<String>,
    pub(crate) scores: Vec<f32>,
    to_id: HashMap<String, u32>,
    /// Token for each byte: `<0xXX>` (SPM) or GPT-2's byte character (BPE).
    bytes: [Option<u32>; 256],
}

impl Vocab {
    pub(crate) fn id(&self, text: &str) -> Option<u32> {
        self.to_id.get(text).copied()
    }

    pub(crate) fn byte_token(&self, b: u8) -> Option<u32> {
        self.bytes[b as usize]
    }
}

enum Algorithm {
    Bpe(Bpe),
    Spm,
}

/// A text fragment or a special token found in it.
enum Fragment<'t> {
    Text(&'t str),
    Token(u32),
}

/// Tokenizer of one model. See the module documentation.
pub struct Tokenizer {
    vocab: Vocab,
    attrs: Vec<TokenAttr>,
    algorithm: Algorithm,
    kind: TokenizerKind,
    pre: String,
    /// Tokens split out of the text before tokenizing: control, user-defined and unknown ones,
    /// longest text first (ties by id; llama.cpp leaves their order unspecified).
    special: Vec<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    eog: BTreeSet<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    clean_spaces: bool,
}

/// Typed access to metadata, with errors naming the file and key.
struct Meta<'a> {
    source: &'a str,
    md: &'a BTreeMap<String, Value>,
}

impl<'a> Meta<'a> {
    fn wrong(&self, key: &str, expected: &'static str, v: &Value) -> Error {
        Error::WrongValueType {
            source_name: self.source.to_string(),
            key: key.to_string(),
            expected,
            found: v.describe(),
        }
    }

    fn str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.md.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "string", v)),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.md.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "bool", v)),
        }
    }

    /// A token id; negative values (some converters write -1) count as absent.
    fn id(&self, key: &str) -> Result<Option<u64>> {
        match self.md.get(key) {
            None => Ok(None),
            Some(Value::I8(_) | Value::I16(_) | Value::I32(_) | Value::I64(_))
                if self.md[key].as_u64().is_none() =>
            {
                Ok(None)
            }
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "integer", v)),
        }
    }

    fn array(&self, key: &str) -> Result<Option<&'a [Value]>> {
        match self.md.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_array()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "array", v)),
        }
    }

    /// Fails unless the array at `key`, if any, has at most `max` items: checked before
    /// anything is built from it.
    fn at_most(&self, key: &str, max: usize, what: &str) -> Result<()> {
        match self.array(key)? {
            Some(a) if a.len() > max => Err(self.bad(
                key,
                format!(
                    "{} {what} is more than {max}, the most quantweb accepts",
                    a.len()
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The array at `key`, which must have one item per token.
    fn array_per_token(&self, key: &str, n: usize, what: &str) -> Result<Option<&'a [Value]>> {
        let arr = self.array(key)?;
        match arr {
            Some(a) if a.len() != n => {
                Err(self.bad(key, format!("{} {what} for {n} tokens", a.len())))
            }
            _ => Ok(arr),
        }
    }

    fn strings(&self, key: &str) -> Result<Option<Vec<&'a str>>> {
        let Some(arr) = self.array(key)? else {
            return Ok(None);
        };
        arr.iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| self.wrong(key, "array of string", &self.md[key]))
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    fn numbers(&self, key: &str, arr: &[Value]) -> Result<Vec<f64>> {
        arr.iter()
            .map(|v| {
                let n = match *v {
                    Value::I8(x) => Some(x as f64),
                    Value::I16(x) => Some(x as f64),
                    Value::I32(x) => Some(x as f64),
                    Value::I64(x) => Some(x as f64),
                    _ => v.as_f64(),
                };
                n.ok_or_else(|| self.wrong(key, "array of numbers", &self.md[key]))
            })
            .collect()
    }

    fn bad(&self, key: &str, reason: String) -> Error {
        Error::BadValue {
            source_name: self.source.to_string(),
            key: key.to_string(),
            reason,
        }
    }
}

const KEY_MODEL: &str = "tokenizer.ggml.model";
const KEY_PRE: &str = "tokenizer.ggml.pre";
const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_SCORES: &str = "tokenizer.ggml.scores";
const KEY_TYPES: &str = "tokenizer.ggml.token_type";
const KEY_MERGES: &str = "tokenizer.ggml.merges";

/// Vocabularies larger than this are refused before anything is built from them: 4 times the
/// largest real one (Gemma 3's 262 144, whose tables here take 28 MB), so the tables stay near
/// 120 MB at most.
const MAX_TOKENS: usize = 1 << 20;
/// Merges beyond this are refused likewise: Llama 3 has 280 147, Qwen 2 151 387.
const MAX_MERGES: usize = 1 << 20;

/// Texts llama.cpp takes for the end-of-turn token when the file names none.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];
/// Texts llama.cpp treats as end of generation (and as control tokens).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// `tokenizer.ggml.model`: which algorithm.
fn read_kind(m: &Meta) -> Result<TokenizerKind> {
    let model = m.str(KEY_MODEL)?.ok_or_else(|| Error::MissingKey {
        source_name: m.source.to_string(),
        key: KEY_MODEL.to_string(),
    })?;
    match model {
        "gpt2" => Ok(TokenizerKind::Bpe),
        "llama" => Ok(TokenizerKind::Spm),
        other => Err(Error::UnsupportedTokenizer {
            source_name: m.source.to_string(),
            model: other.to_string(),
        }),
    }
}

/// The token texts (an empty one named `[EMPTY_i]`, as llama.cpp does) and the id of each.
fn read_tokens(m: &Meta) -> Result<(Vec<String>, HashMap<String, u32>)> {
    m.at_most(KEY_TOKENS, MAX_TOKENS, "tokens")?;
    let texts = m.strings(KEY_TOKENS)?.ok_or_else(|| Error::MissingKey {
        source_name: m.source.to_string(),
        key: KEY_TOKENS.to_string(),
    })?;
    let n = texts.len();
    if n == 0 {
        return Err(m.bad(KEY_TOKENS, "no tokens".to_string()));
    }
    let mut tokens = Vec::with_capacity(n);
    let mut to_id = HashMap::with_capacity(n);
    for (i, t) in texts.iter().enumerate() {
        let text = if t.is_empty() {
            format!("[EMPTY_{i}]")
        } else {
            t.to_string()
        };
        if let Some(prev) = to_id.insert(text.clone(), i as u32) {
            return Err(m.bad(
                KEY_TOKENS,
                format!("token {text:?} appears twice (ids {prev} and {i})"),
            ));
        }
        tokens.push(text);
    }
    Ok((tokens, to_id))
}

/// `tokenizer.ggml.scores`, 0 for every token when absent. Only their order matters (SPM
/// merges the pair of highest score), so any finite score is meaningful; NaN compares as
/// neither higher nor lower, and an infinity (or an f64 beyond f32) ties with its kind.
fn read_scores(m: &Meta, tokens: &[String]) -> Result<Vec<f32>> {
    let Some(arr) = m.array_per_token(KEY_SCORES, tokens.len(), "scores")? else {
        return Ok(vec![0.0; tokens.len()]);
    };
    let scores = m.numbers(KEY_SCORES, arr)?;
    match scores.iter().position(|&x| !(x as f32).is_finite()) {
        Some(i) => Err(m.bad(
            KEY_SCORES,
            format!(
                "token {i} ({:?}) has score {:?}; scores must be finite f32 numbers",
                tokens[i], scores[i]
            ),
        )),
        None => Ok(scores.iter().map(|&x| x as f32).collect()),
    }
}

/// Each token's attributes from `tokenizer.ggml.token_type` (GGUF's types 0–6), normal when
/// absent.
fn read_token_types(m: &Meta, tokens: &[String]) -> Result<Vec<TokenAttr>> {
    let Some(arr) = m.array_per_token(KEY_TYPES, tokens.len(), "token types")? else {
        return Ok(vec![TokenAttr::NORMAL; tokens.len()]);
    };
    let types = m.numbers(KEY_TYPES, arr)?;
    match types
        .iter()
        .position(|&t| t.fract() != 0.0 || !(0.0..=6.0).contains(&t))
    {
        Some(i) => Err(m.bad(
            KEY_TYPES,
            format!(
                "token {i} ({:?}) has type {}; types are 0 to 6 (undefined, normal, unknown, \
                 control, user-defined, unused, byte)",
                tokens[i], types[i]
            ),
        )),
        None => Ok(types
            .iter()
            .map(|&t| TokenAttr::from_token_type(t as i64))
            .collect()),
    }
}

/// The algorithm, and the defaults that come with it (for BPE, with its pre-tokenizer).
struct AlgorithmDefaults {
    algorithm: Algorithm,
    add_bos: bool,
    add_space_prefix: bool,
    clean_spaces: bool,
    no_bos: bool,
}

fn read_algorithm(
    m: &Meta,
    kind: TokenizerKind,
    pre: &str,
    to_id: &HashMap<String, u32>,
) -> Result<AlgorithmDefaults> {
    match kind {
        TokenizerKind::Bpe => {
            let spec = pre_spec(pre).ok_or_else(|| Error::UnsupportedPreTokenizer {
                source_name: m.source.to_string(),
                pre: pre.to_string(),
                supported: supported_pre_names().join(", "),
            })?;
            m.at_most(KEY_MERGES, MAX_MERGES, "merges")?;
            let merges = m.strings(KEY_MERGES)?.ok_or_else(|| Error::MissingKey {
                source_name: m.source.to_string(),
                key: KEY_MERGES.to_string(),
            })?;
            check_merges(m, &merges, to_id)?;
            let merges: Vec<String> = merges.iter().map(|s| s.to_string()).collect();
            let bpe = Bpe::new(
                PreTokenizer::compiled(spec.regexes)?,
                &merges,
                spec.ignore_merges,
            );
            Ok(AlgorithmDefaults {
                algorithm: Algorithm::Bpe(bpe),
                add_bos: spec.add_bos,
                add_space_prefix: false,
                clean_spaces: spec.clean_spaces,
                no_bos: spec.no_bos,
            })
        }
        TokenizerKind::Spm => Ok(AlgorithmDefaults {
            algorithm: Algorithm::Spm,
            add_bos: true,
            add_space_prefix: true,
            clean_spaces: false,
            no_bos: false,
        }),
    }
}

/// Every merge joins two tokens into a third, as Hugging Face's tokenizers require when they
/// load a BPE model; a merge naming other texts would make symbols that are no token, which
/// the tokenizer then drops. Split as llama.cpp splits them: at the first space from byte 1.
fn check_merges(m: &Meta, merges: &[&str], to_id: &HashMap<String, u32>) -> Result<()> {
    let mut joined = String::new();
    for (i, merge) in merges.iter().enumerate() {
        let Some(at) = merge.bytes().skip(1).position(|b| b == b' ').map(|p| p + 1) else {
            return Err(m.bad(
                KEY_MERGES,
                format!("merge {i} {merge:?} is not two tokens separated by a space"),
            ));
        };
        let (left, right) = (&merge[..at], &merge[at + 1..]);
        joined.clear();
        joined.push_str(left);
        joined.push_str(right);
        for (part, role) in [
            (left, "names"),
            (right, "names"),
            (joined.as_str(), "makes"),
        ] {
            if !to_id.contains_key(part) {
                return Err(m.bad(
                    KEY_MERGES,
                    format!("merge {i} {merge:?} {role} {part:?}, which is not a token"),
                ));
            }
        }
    }
    Ok(())
}

/// The token of each byte: `<0xXX>` (SPM, else the ASCII character itself) or GPT-2's byte
/// character (BPE).
fn byte_tokens(kind: TokenizerKind, to_id: &HashMap<String, u32>) -> [Option<u32>; 256] {
    let mut bytes = [None; 256];
    for (b, slot) in bytes.iter_mut().enumerate() {
        *slot = match kind {
            TokenizerKind::Spm => to_id
                .get(&format!("<0x{b:02X}>"))
                .or_else(|| {
                    (b < 0x80)
                        .then(|| to_id.get(&(b as u8 as char).to_string()))
                        .flatten()
                })
                .copied(),
            TokenizerKind::Bpe => to_id
                .get(&unicode::byte_to_char(b as u8).to_string())
                .copied(),
        };
    }
    bytes
}

/// The ids of special tokens.
struct SpecialIds {
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    eot: Option<u32>,
    eom: Option<u32>,
    /// FIM prefix, suffix, middle, pad, repo and separator.
    fim: [Option<u32>; 6],
}

/// The algorithm's defaults (where the vocabulary has them), then the file's ids. An id the
/// file gives beyond the vocabulary is an error: llama.cpp warns and keeps the default, but
/// gguf-py's converter never writes one, so the file was damaged or made by hand.
fn read_special_ids(m: &Meta, kind: TokenizerKind, n: usize, no_bos: bool) -> Result<SpecialIds> {
    let in_range = |id: Option<u64>| id.filter(|&i| (i as usize) < n).map(|i| i as u32);
    let (bos, eos, unk) = match kind {
        TokenizerKind::Spm => (in_range(Some(1)), in_range(Some(2)), in_range(Some(0))),
        TokenizerKind::Bpe => (in_range(Some(11)), in_range(Some(11)), None),
    };
    let mut ids = SpecialIds {
        bos: if no_bos { None } else { bos },
        eos,
        unk,
        pad: None,
        eot: None,
        eom: None,
        fim: [None; 6],
    };
    let read_id = |key: &str, slot: &mut Option<u32>| -> Result<()> {
        match m.id(key)? {
            Some(id) if id < n as u64 => *slot = Some(id as u32),
            Some(id) => {
                return Err(m.bad(
                    key,
                    format!("token id {id} is beyond the vocabulary ({n} tokens)"),
                ))
            }
            None => {}
        }
        Ok(())
    };
    read_id("tokenizer.ggml.bos_token_id", &mut ids.bos)?;
    read_id("tokenizer.ggml.eos_token_id", &mut ids.eos)?;
    read_id("tokenizer.ggml.unknown_token_id", &mut ids.unk)?;
    read_id("tokenizer.ggml.padding_token_id", &mut ids.pad)?;
    read_id("tokenizer.ggml.eot_token_id", &mut ids.eot)?;
    read_id("tokenizer.ggml.eom_token_id", &mut ids.eom)?;
    for (slot, key) in ids.fim.iter_mut().zip([
        "tokenizer.ggml.fim_pre_token_id",
        "tokenizer.ggml.fim_suf_token_id",
        "tokenizer.ggml.fim_mid_token_id",
        "tokenizer.ggml.fim_pad_token_id",
        "tokenizer.ggml.fim_rep_token_id",
        "tokenizer.ggml.fim_sep_token_id",
    ]) {
        read_id(key, slot)?;
    }
    for (slot, key) in ids.fim.iter_mut().take(3).zip([
        "tokenizer.ggml.prefix_token_id",
        "tokenizer.ggml.suffix_token_id",
        "tokenizer.ggml.middle_token_id",
    ]) {
        read_id(key, slot)?;
    }
    Ok(ids)
}

/// A kind the file does not name is found by text, and becomes a control token. llama.cpp
/// takes the first match in hash order, this the lowest id.
fn find_unnamed_specials(
    ids: &mut SpecialIds,
    attrs: &mut [TokenAttr],
    to_id: &HashMap<String, u32>,
) {
    let mut find = |slot: &mut Option<u32>, candidates: &[&str]| {
        if slot.is_none() {
            *slot = candidates
                .iter()
                .filter_map(|t| to_id.get(*t).copied())
                .min();
            if let Some(id) = *slot {
                attrs[id as usize] = attrs[id as usize] | TokenAttr::CONTROL;
            }
        }
    };
    find(&mut ids.eot, EOT_TEXTS);
    find(&mut ids.eom, EOM_TEXTS);
    for (slot, texts) in ids.fim.iter_mut().zip([
        FIM_PRE_TEXTS,
        FIM_SUF_TEXTS,
        FIM_MID_TEXTS,
        FIM_PAD_TEXTS,
        FIM_REP_TEXTS,
        FIM_SEP_TEXTS,
    ]) {
        find(slot, texts);
    }
}

/// Control tokens named `unused` are unused.
fn mark_unused(attrs: &mut [TokenAttr], tokens: &[String]) {
    for (a, t) in attrs.iter_mut().zip(tokens) {
        if a.has(TokenAttr::CONTROL) && t.contains("unused") {
            *a = *a | TokenAttr::UNUSED;
        }
    }
}

/// The tokens that end generation, as llama.cpp collects them (marking them control tokens),
/// with its exceptions for gpt-oss, solar-open and Gemma 4.
fn end_of_generation(
    ids: &SpecialIds,
    attrs: &mut [TokenAttr],
    to_id: &HashMap<String, u32>,
) -> BTreeSet<u32> {
    let mut eog: BTreeSet<u32> = ids.fim[3..].iter().flatten().copied().collect();
    for t in EOG_TEXTS {
        if let Some(&id) = to_id.get(*t) {
            eog.insert(id);
            attrs[id as usize] = attrs[id as usize] | TokenAttr::CONTROL;
        }
    }
    for t in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
        if let Some(&id) = to_id.get(t) {
            attrs[id as usize] = TokenAttr::USER_DEFINED;
        }
    }
    eog.extend([ids.eos, ids.eot, ids.eom].into_iter().flatten());
    let eog_has = |eog: &BTreeSet<u32>, t: &str| to_id.get(t).is_some_and(|id| eog.contains(id));
    // gpt-oss and solar-open: "<|end|>" ends a message, not the generation.
    if eog_has(&eog, "<|end|>")
        && ((eog_has(&eog, "<|return|>") && eog_has(&eog, "<|call|>"))
            || ((eog_has(&eog, "<|call|>") || eog_has(&eog, "<|calls|>"))
                && eog_has(&eog, "<|flush|>")))
    {
        let id = to_id["<|end|>"];
        eog.remove(&id);
        attrs[id as usize] = TokenAttr::USER_DEFINED;
    }
    // Gemma 4: "</s>" is text there.
    if eog_has(&eog, "<|tool_response>") && eog_has(&eog, "</s>") {
        let id = to_id["</s>"];
        eog.remove(&id);
        attrs[id as usize] = TokenAttr::NORMAL;
    }
    eog
}

/// Tokens split out of the text before tokenizing, longest first (ties by id).
fn special_tokens(attrs: &[TokenAttr], tokens: &[String]) -> Vec<u32> {
    let mut special: Vec<u32> = (0..tokens.len() as u32)
        .filter(|&id| {
            attrs[id as usize]
                .has(TokenAttr::CONTROL | TokenAttr::USER_DEFINED | TokenAttr::UNKNOWN)
        })
        .collect();
    special.sort_by(|&a, &b| {
        tokens[b as usize]
            .len()
            .cmp(&tokens[a as usize].len())
            .then(a.cmp(&b))
    });
    special
}

/// Per-model strip attributes (llama.cpp sets them by model, pre-tokenizer or architecture
/// name).
fn set_strip_attrs(
    m: &Meta,
    pre: &str,
    attrs: &mut [TokenAttr],
    to_id: &HashMap<String, u32>,
    special: &[u32],
) {
    let name = m
        .str("general.name")
        .ok()
        .flatten()
        .unwrap_or("")
        .to_lowercase();
    let arch = m.str("general.architecture").ok().flatten().unwrap_or("");
    fn set(
        attrs: &mut [TokenAttr],
        to_id: &HashMap<String, u32>,
        text: &str,
        attr: TokenAttr,
        on: bool,
    ) {
        if let Some(&id) = to_id.get(text) {
            let a = &mut attrs[id as usize];
            *a = if on {
                *a | attr
            } else {
                TokenAttr(a.0 & !attr.0)
            };
        }
    }
    if ["jina-v2-de", "jina-v2-es", "jina-v2-code"]
        .iter()
        .any(|p| pre.contains(p))
        || ["nomic-bert-moe", "jina-bert-v3"]
            .iter()
            .any(|a| arch.contains(a))
    {
        set(attrs, to_id, "<mask>", TokenAttr::LSTRIP, true);
    } else if name.contains("phi-3") || name.contains("phi3") {
        for &id in special {
            let a = &mut attrs[id as usize];
            *a = *a | TokenAttr::RSTRIP;
        }
        set(attrs, to_id, "</s>", TokenAttr::RSTRIP, true);
        for t in ["<unk>", "<s>", "<|endoftext|>"] {
            set(attrs, to_id, t, TokenAttr::RSTRIP, false);
        }
    } else if name.contains("modern-bert") {
        set(attrs, to_id, "[MASK]", TokenAttr::LSTRIP, true);
    }
}

impl Tokenizer {
    /// Builds the tokenizer of a model from its metadata.
    pub fn from_model(model: &GgufModel) -> Result<Self> {
        let source = model.parts.first().map(|p| p.0.as_str()).unwrap_or("model");
        Self::from_metadata(source, &model.metadata)
    }

    /// Builds a tokenizer from GGUF metadata; `source_name` names the file in errors.
    pub fn from_metadata(source_name: &str, metadata: &BTreeMap<String, Value>) -> Result<Self> {
        let m = Meta {
            source: source_name,
            md: metadata,
        };
        let kind = read_kind(&m)?;
        let pre = m.str(KEY_PRE)?.unwrap_or("").to_string();
        let (tokens, to_id) = read_tokens(&m)?;
        let scores = read_scores(&m, &tokens)?;
        let mut attrs = read_token_types(&m, &tokens)?;
        let defaults = read_algorithm(&m, kind, &pre, &to_id)?;
        let add_space_prefix = m
            .bool("tokenizer.ggml.add_space_prefix")?
            .unwrap_or(defaults.add_space_prefix);
        let bytes = byte_tokens(kind, &to_id);
        let mut ids = read_special_ids(&m, kind, tokens.len(), defaults.no_bos)?;
        let add_bos = m
            .bool("tokenizer.ggml.add_bos_token")?
            .unwrap_or(defaults.add_bos);
        let add_eos = m.bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false);

        find_unnamed_specials(&mut ids, &mut attrs, &to_id);
        mark_unused(&mut attrs, &tokens);
        let eog = end_of_generation(&ids, &mut attrs, &to_id);
        let special = special_tokens(&attrs, &tokens);
        set_strip_attrs(&m, &pre, &mut attrs, &to_id, &special);

        Ok(Self {
            vocab: Vocab {
                tokens,
                scores,
                to_id,
                bytes,
            },
            attrs,
            algorithm: defaults.algorithm,
            kind,
            pre,
            special,
            bos: ids.bos,
            eos: ids.eos,
            unk: ids.unk,
            pad: ids.pad,
            eog,
            add_bos,
            add_eos,
            add_space_prefix,
            clean_spaces: defaults.clean_spaces,
        })
    }

    // ---- the vocabulary ----

    pub fn kind(&self) -> TokenizerKind {
        self.kind
    }
    /// `tokenizer.ggml.pre` as given ("" when absent).
    pub fn pre(&self) -> &str {
        &self.pre
    }
    pub fn n_vocab(&self) -> usize {
        self.vocab.tokens.len()
    }
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }
    pub fn unk(&self) -> Option<u32> {
        self.unk
    }
    pub fn pad(&self) -> Option<u32> {
        self.pad
    }
    /// Whether `encode(…, add_special = true)` prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos && self.bos.is_some()
    }
    /// Whether `encode(…, add_special = true)` appends EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos && self.eos.is_some()
    }
    /// Whether generating `id` ends the turn (EOS, EOT, `<|im_end|>`, `<end_of_turn>` …).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }
    /// The end-of-generation tokens, in id order.
    pub fn eog_tokens(&self) -> impl Iterator<Item = u32> + '_ {
        self.eog.iter().copied()
    }
    /// The token's text as stored in the vocabulary (`▁`/`Ġ` and all).
    pub fn token_text(&self, id: u32) -> Result<&str> {
        self.check(id).map(|i| self.vocab.tokens[i].as_str())
    }
    pub fn token_attr(&self, id: u32) -> Result<TokenAttr> {
        self.check(id).map(|i| self.attrs[i])
    }
    /// Id of the token whose text is exactly `text`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.id(text)
    }

    fn check(&self, id: u32) -> Result<usize> {
        if (id as usize) < self.n_vocab() {
            Ok(id as usize)
        } else {
            Err(Error::TokenOutOfRange {
                id,
                n_vocab: self.n_vocab(),
            })
        }
    }

    // ---- encoding ----

    /// Token ids of `text`, as `llama_tokenize(text, add_special, parse_special)`.
    ///
    /// `add_special` adds BOS (and EOS) where the model asks for them; `parse_special` turns
    /// the texts of control tokens (`<|im_start|>`, `<start_of_turn>` …) into those tokens,
    /// otherwise they are tokenized as plain text. User-defined tokens are always recognized.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let fragments = self.partition(text, parse_special);
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        match &self.algorithm {
            Algorithm::Spm => {
                // A space is prefixed to the text at the start and after each special token.
                let mut prev_special = true;
                let mut buf = String::new();
                for f in fragments {
                    match f {
                        Fragment::Text(t) => {
                            buf.clear();
                            if self.add_space_prefix && prev_special {
                                buf.push('▁');
                            }
                            for c in t.chars() {
                                if c == ' ' {
                                    buf.push('▁');
                                } else {
                                    buf.push(c);
                                }
                            }
                            spm::tokenize(&buf, &self.vocab, &mut out);
                            prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                    }
                }
            }
            Algorithm::Bpe(bpe) => {
                for f in fragments {
                    match f {
                        Fragment::Text(t) => bpe.tokenize(t, &self.vocab, &mut out),
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        out
    }

    /// Splits special-token texts out of `text` (llama.cpp's `tokenizer_st_partition`).
    fn partition<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Fragment<'t>> {
        if text.is_empty() {
            return Vec::new();
        }
        // Fragments are substrings of `text`, so a token that does not occur in `text` needs no
        // pass over them; most of a large special vocabulary (Gemma: 6400) is ruled out by its
        // first two bytes alone.
        let bytes = text.as_bytes();
        let mut pairs = vec![0u64; 1024];
        for w in bytes.windows(2) {
            let p = (w[0] as usize) << 8 | w[1] as usize;
            pairs[p / 64] |= 1 << (p % 64);
        }
        let mut present = [false; 256];
        for &b in bytes {
            present[b as usize] = true;
        }
        let may_occur = |needle: &[u8]| match needle {
            [a, b, ..] => {
                let p = (*a as usize) << 8 | *b as usize;
                pairs[p / 64] & (1 << (p % 64)) != 0
            }
            [a] => present[*a as usize],
            [] => false,
        };
        let mut frags = vec![Fragment::Text(text)];
        for &id in &self.special {
            let attr = self.attrs[id as usize];
            if !parse_special && attr.has(TokenAttr::CONTROL | TokenAttr::UNKNOWN) {
                continue;
            }
            let needle = self.vocab.tokens[id as usize].as_str();
            if !may_occur(needle.as_bytes()) || !text.contains(needle) {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                let Fragment::Text(mut rest) = f else {
                    next.push(f);
                    continue;
                };
                while let Some(at) = rest.find(needle) {
                    let mut left = &rest[..at];
                    if attr.has(TokenAttr::LSTRIP) {
                        left = left.trim_end_matches(is_c_space);
                    }
                    if !left.is_empty() {
                        next.push(Fragment::Text(left));
                    }
                    next.push(Fragment::Token(id));
                    rest = &rest[at + needle.len()..];
                    if attr.has(TokenAttr::RSTRIP) {
                        rest = rest.trim_start_matches(is_c_space);
                    }
                }
                if !rest.is_empty() {
                    next.push(Fragment::Text(rest));
                }
            }
            frags = next;
        }
        frags
    }

    // ---- decoding ----

    /// The bytes token `id` stands for (`llama_token_to_piece`). With `special = false`,
    /// control and unknown tokens give nothing; with `true`, their text.
    pub fn token_piece(&self, id: u32, special: bool) -> Result<Vec<u8>> {
        let i = self.check(id)?;
        let attr = self.attrs[i];
        let text = &self.vocab.tokens[i];
        if attr.has(TokenAttr::UNKNOWN | TokenAttr::CONTROL) && !special {
            return Ok(Vec::new());
        }
        if attr.has(TokenAttr::UNKNOWN | TokenAttr::CONTROL | TokenAttr::USER_DEFINED) {
            return Ok(text.as_bytes().to_vec());
        }
        if attr.has(TokenAttr::NORMAL) {
            return Ok(match self.kind {
                TokenizerKind::Spm => text.replace('▁', " ").into_bytes(),
                TokenizerKind::Bpe => decode_byte_level(text),
            });
        }
        if attr.has(TokenAttr::BYTE) {
            // "<0xXX>"
            let byte = text
                .get(3..5)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .unwrap_or(0);
            return Ok(vec![byte]);
        }
        // Unused or undefined tokens stand for nothing.
        Ok(Vec::new())
    }

    /// Text of a token sequence, as `llama_detokenize(remove_special = false,
    /// unparse_special = special)`. Bytes that are not UTF-8 become U+FFFD.
    pub fn decode(&self, ids: &[u32], special: bool) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.decode_bytes(ids, special)?).into_owned())
    }

    /// [`Tokenizer::decode`] as raw bytes.
    pub fn decode_bytes(&self, ids: &[u32], special: bool) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let piece = self.token_piece(id, special)?;
            out.extend_from_slice(self.strip_first(&piece, i == 0));
        }
        if self.clean_spaces {
            out = clean_up_spaces(&out);
        }
        Ok(out)
    }

    /// llama.cpp drops one leading space of the first piece when the model adds a space prefix.
    fn strip_first<'p>(&self, piece: &'p [u8], first: bool) -> &'p [u8] {
        if first && self.add_space_prefix && piece.first() == Some(&b' ') {
            &piece[1..]
        } else {
            piece
        }
    }

    /// A decoder for generated tokens, one at a time.
    pub fn stream_decoder(&self, special: bool) -> StreamDecoder<'_> {
        StreamDecoder {
            tokenizer: self,
            special,
            pending: Vec::new(),
            first: true,
        }
    }
}

/// C's `isspace` in the "C" locale, which llama.cpp's strip attributes use.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\u{0B}' | '\u{0C}' | '\r')
}

/// A byte-level BPE token's bytes: each character is one byte in GPT-2's alphabet. A character
/// outside it (only in a malformed vocabulary) is written as llama.cpp does.
fn decode_byte_level(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match unicode::char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
    out
}

/// `clean_up_tokenization_spaces`, as llama.cpp's three passes over the decoded bytes:
/// no space before `?!.,`; `" ' "` becomes `"'"`; no space before `'s`, `'m`, `'re`, `'ve`.
fn clean_up_spaces(text: &[u8]) -> Vec<u8> {
    let pass1 = |t: &[u8]| {
        let mut out: Vec<u8> = Vec::with_capacity(t.len());
        for (i, &x) in t.iter().enumerate() {
            if i > 0 && t[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
                out.pop();
            }
            out.push(x);
        }
        out
    };
    let pass2 = |t: &[u8]| {
        // llama.cpp works in place and blanks the skipped space with a NUL, which the next
        // character then sees as its predecessor.
        let mut t = t.to_vec();
        let mut out: Vec<u8> = Vec::with_capacity(t.len());
        let mut i = 0;
        while i < t.len() {
            let x = t[i];
            if i > 0 && x == b'\'' && i + 1 < t.len() && t[i - 1] == b' ' && t[i + 1] == b' ' {
                out.pop();
                t[i + 1] = 0;
                i += 1;
            }
            out.push(x);
            i += 1;
        }
        out
    };
    let pass3 = |t: &[u8]| {
        let mut out: Vec<u8> = Vec::with_capacity(t.len());
        for (i, &x) in t.iter().enumerate() {
            if i > 0 && t[i - 1] == b' ' && x == b'\'' && i + 1 < t.len() {
                let x1 = t[i + 1];
                let remove = matches!(x1, b's' | b'm')
                    || (i + 2 < t.len() && matches!((x1, t[i + 2]), (b'r', b'e') | (b'v', b'e')));
                if remove {
                    out.pop();
                }
            }
            out.push(x);
        }
        out
    };
    pass3(&pass2(&pass1(text)))
}

/// Decodes generated tokens one by one into text: bytes of a UTF-8 character split across
/// tokens are held back until it is complete; invalid bytes become U+FFFD. The concatenation of
/// everything [`push`](StreamDecoder::push) and [`finish`](StreamDecoder::finish) return equals
/// [`Tokenizer::decode`] of all tokens for models without `clean_spaces` (llama.cpp cleans up
/// only whole texts too).
pub struct StreamDecoder<'t> {
    tokenizer: &'t Tokenizer,
    special: bool,
    pending: Vec<u8>,
    first: bool,
}

impl StreamDecoder<'_> {
    /// Adds one token; returns the text completed by it (possibly empty).
    pub fn push(&mut self, id: u32) -> Result<String> {
        let piece = self.tokenizer.token_piece(id, self.special)?;
        self.pending
            .extend_from_slice(self.tokenizer.strip_first(&piece, self.first));
        self.first = false;
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).expect("valid"));
                    match e.error_len() {
                        // An unfinished character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            break;
                        }
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Flushes bytes still held back (an unfinished character becomes U+FFFD).
    pub fn finish(self) -> String {
        String::from_utf8_lossy(&self.pending).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_up_matches_llama_cpp_passes() {
        let c = |s: &str| String::from_utf8(clean_up_spaces(s.as_bytes())).unwrap();
        assert_eq!(c("Hello , world !"), "Hello, world!");
        assert_eq!(c("it 's he 'll we 're I 'm"), "it's he 'll we're I'm");
        assert_eq!(c("a ' b"), "a'b");
        assert_eq!(c("x ' ' y"), "x'' y");
        assert_eq!(c(" ."), ".");
    }
}

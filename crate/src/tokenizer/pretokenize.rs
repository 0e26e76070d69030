//! Byte-level BPE pre-tokenization: splitting text into words before merges, exactly as
//! llama.cpp's `unicode_regex_split` does for each `tokenizer.ggml.pre`.
//!
//! llama.cpp applies a *list* of regexes in turn, each one splitting the pieces the previous one
//! produced; text between matches becomes a piece of its own. Unicode categories are handled by
//! "collapsing" the text: every non-ASCII code point is replaced by one stand-in character for
//! its class (letter, number, punctuation, mark, symbol, other; non-ASCII whitespace becomes
//! U+000B), and each `\p{…}` in the regex by a class of that stand-in plus the ASCII members of
//! the category. The regex then runs on ASCII plus stand-ins, so the category table that counts
//! is llama.cpp's (Unicode 15.1, see `unicode.rs`), not the regex engine's.
//!
//! For the GPT-2, Llama-3 and Qwen2 regexes llama.cpp uses hand-written matchers instead of
//! `std::regex`; they implement the same leftmost-first semantics, so running the regex itself
//! (with fancy-regex, which has the lookahead `\s+(?!\S)` needs) gives the same pieces. The
//! goldens in tests/golden/tokenizer-*.json check this against llama.cpp for every regex family
//! below.

use super::unicode::{class, is_whitespace, Class};
use crate::error::{Error, Result};
use fancy_regex::Regex;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

/// `'s|'t|… ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// Llama 3's regex with `(?i:'s|…)` spelled out case by case (as llama.cpp does).
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2: like Llama 3 but digits one by one.
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// GPT-4o / Llama 4: case-aware words, written with lookaheads as llama.cpp adapts them.
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GRANITE_EMB_MULTI: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}\p{M}])([^a-z]))*((?=[\p{L}\p{M}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}\p{M}])([^a-z]))+((?=[\p{L}\p{M}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const SEED_CODER: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+";
const BAILINGMOE: &str = r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";
const EXAONE_MOE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+";
const MINICPM5: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const JAIS2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s{512}(?!\S)|\s{256}(?!\S)|\s{128}(?!\S)|\s{64}(?!\S)|\s{32}(?!\S)|\s{16}(?!\S)|\s{8}(?!\S)|\s{4}(?!\S)|\s{1,2}(?!\S)|\s{1}";

/// How llama.cpp handles one family of `tokenizer.ggml.pre` values.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PreSpec {
    /// Applied in turn, each to the pieces of the previous one.
    pub regexes: &'static [&'static str],
    /// A whole word that is a token is emitted as such, without merges (llama.cpp's
    /// `ignore_merges`, from Hugging Face's `ignore_merges`).
    pub ignore_merges: bool,
    /// Decoding removes spaces before `?!.,` and in contractions (`clean_up_tokenization_spaces`).
    pub clean_spaces: bool,
    /// Default for `add_bos_token` when the file does not say.
    pub add_bos: bool,
    /// The family has no BOS token at all (ChatGLM 4), whatever the file says by default.
    pub no_bos: bool,
}

const fn spec(regexes: &'static [&'static str], clean_spaces: bool) -> PreSpec {
    PreSpec {
        regexes,
        ignore_merges: false,
        clean_spaces,
        add_bos: false,
        no_bos: false,
    }
}

/// Every supported `tokenizer.ggml.pre` value, grouped as llama.cpp's `llama_vocab::impl::load`
/// groups them, with that group's regexes and flags.
pub(crate) static PRE_TYPES: &[(&[&str], PreSpec)] = &[
    (
        &["default"],
        spec(
            &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"],
            true,
        ),
    ),
    (
        &[
            "llama3",
            "llama-v3",
            "llama-bpe",
            "falcon3",
            "falcon-h1",
            "pixtral",
            "midm-2.0",
            "lfm2",
            "jina-v5-nano",
        ],
        PreSpec {
            ignore_merges: true,
            add_bos: true,
            ..spec(&[LLAMA3], true)
        },
    ),
    (&["dbrx", "smaug-bpe"], spec(&[LLAMA3], true)),
    (
        &["glm4", "chatglm-bpe"],
        PreSpec {
            no_bos: true,
            ..spec(&[LLAMA3], true)
        },
    ),
    (
        &["falcon"],
        spec(&[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]"], true),
    ),
    (
        &[
            "gpt-2",
            "phi-2",
            "jina-es",
            "jina-de",
            "gigachat",
            "jina-v2-es",
            "jina-v2-de",
            "a.x-4.0",
            "mellum",
            "modern-bert",
            "jina-v1-en",
            "jina-v2-code",
            "roberta-bpe",
            "exaone4",
            "mpt",
            "olmo",
            "jais",
        ],
        spec(&[GPT2], true),
    ),
    (&["trillion", "granite-docling"], spec(&[GPT2], false)),
    (
        &[
            "starcoder",
            "refact",
            "codeshell",
            "exaone",
            "minerva-7b",
            "mellum2",
        ],
        spec(&[r"\p{N}", GPT2], true),
    ),
    (&["command-r", "smollm"], spec(&[r"\p{N}", GPT2], false)),
    (
        &[
            "qwen2",
            "deepseek-r1-qwen",
            "kormo",
            "f2llmv2",
            "grok-2",
            "hunyuan",
            "solar-open",
        ],
        spec(&[QWEN2], false),
    ),
    (&["megrez", "stablelm2"], spec(&[QWEN2], true)),
    (
        &["gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"],
        spec(&[GPT4O], false),
    ),
    (
        &["tekken"],
        PreSpec {
            ignore_merges: true,
            add_bos: true,
            ..spec(&[TEKKEN], false)
        },
    ),
    (
        &["granite-embed-multi-97m"],
        PreSpec {
            ignore_merges: true,
            ..spec(&[GRANITE_EMB_MULTI], false)
        },
    ),
    (&["seed-coder"], spec(&[SEED_CODER], false)),
    (
        &["bailingmoe", "bailingmoe2", "llada-moe"],
        spec(&[BAILINGMOE], false),
    ),
    (&["exaone-moe"], spec(&[EXAONE_MOE], true)),
    (
        &["minicpm5"],
        PreSpec {
            ignore_merges: true,
            ..spec(&[r"\p{N}{1,3}", MINICPM5], true)
        },
    ),
    (&["laguna"], spec(&["[^\\n]+|[\\n]+", QWEN2], false)),
    (&["jais-2"], spec(&[JAIS2], true)),
];

/// The spec for a `tokenizer.ggml.pre` value; a missing or empty value means "default", as in
/// llama.cpp (which warns that quality will suffer).
pub(crate) fn pre_spec(pre: &str) -> Option<PreSpec> {
    let pre = if pre.is_empty() { "default" } else { pre };
    PRE_TYPES
        .iter()
        .find(|(names, _)| names.contains(&pre))
        .map(|(_, s)| *s)
}

/// All supported names, for error messages.
pub(crate) fn supported_pre_names() -> Vec<&'static str> {
    PRE_TYPES
        .iter()
        .flat_map(|(n, _)| n.iter().copied())
        .collect()
}

/// Stand-in for a non-ASCII code point in the collapsed text (private-use characters: not
/// `\s`, `\d` or `\w` for the regex engine, like llama.cpp's bytes 0xD0–0xD5).
fn stand_in(c: Class) -> char {
    match c {
        Class::Number => '\u{E0D1}',
        Class::Letter => '\u{E0D2}',
        Class::Punctuation => '\u{E0D3}',
        Class::Mark => '\u{E0D4}',
        Class::Symbol => '\u{E0D5}',
        Class::Undefined | Class::Separator | Class::Control => '\u{E0D0}',
    }
}

fn collapse_char(c: char) -> char {
    if c.is_ascii() {
        c
    } else if is_whitespace(c) {
        '\u{0B}'
    } else {
        stand_in(class(c))
    }
}

/// The class a `\p{…}` name stands for, as llama.cpp maps them (`\p{Lu}` etc. are all letters).
fn category_class(name: &str) -> Option<Class> {
    Some(match name {
        "N" => Class::Number,
        "L" | "Lu" | "Ll" | "Lt" | "Lm" | "Lo" => Class::Letter,
        "P" => Class::Punctuation,
        "M" => Class::Mark,
        "S" => Class::Symbol,
        _ => return None,
    })
}

/// Members of a class in the collapsed alphabet: its stand-in and its ASCII members.
fn class_members(c: Class) -> String {
    let mut out = format!("\\x{{{:X}}}", stand_in(c) as u32);
    for b in 0u8..128 {
        if class(b as char) == c {
            out.push_str(&format!("\\x{{{b:X}}}"));
        }
    }
    out
}

/// Rewrites each `\p{…}` of a regex into a class over the collapsed alphabet.
pub(crate) fn collapse_regex(expr: &str) -> Result<String> {
    let bytes = expr.as_bytes();
    let mut out = String::with_capacity(expr.len() * 2);
    let mut inside = false;
    let mut i = 0;
    while i < expr.len() {
        let escaped = i > 0 && bytes[i - 1] == b'\\';
        match bytes[i] {
            b'[' if !escaped => inside = true,
            b']' if inside && !escaped => inside = false,
            b'\\' if bytes.get(i + 1) == Some(&b'p') && bytes.get(i + 2) == Some(&b'{') => {
                let close = expr[i..].find('}').map(|p| i + p);
                let Some(close) = close else {
                    return Err(Error::BadRegex {
                        regex: expr.to_string(),
                        reason: "unterminated \\p{".into(),
                    });
                };
                let name = &expr[i + 3..close];
                let Some(c) = category_class(name) else {
                    return Err(Error::BadRegex {
                        regex: expr.to_string(),
                        reason: format!("unsupported category \\p{{{name}}}"),
                    });
                };
                if !inside {
                    out.push('[');
                }
                out.push_str(&class_members(c));
                if !inside {
                    out.push(']');
                }
                i = close + 1;
                continue;
            }
            _ => {}
        }
        let ch = expr[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
    Ok(out)
}

/// A compiled pre-tokenizer: the regex list of one [`PreSpec`].
pub(crate) struct PreTokenizer {
    regexes: Vec<Regex>,
}

impl PreTokenizer {
    /// The pre-tokenizer of a spec's regexes, compiled once per process and then shared: they
    /// come from the fixed table above, and compiling them (fancy-regex over Unicode classes)
    /// costs more than the rest of a tokenizer, for each model loaded (`compare`, the fuzzer).
    pub(crate) fn compiled(regexes: &'static [&'static str]) -> Result<Arc<Self>> {
        type Compiled = HashMap<&'static [&'static str], Arc<PreTokenizer>>;
        static COMPILED: LazyLock<Mutex<Compiled>> = LazyLock::new(Default::default);
        let mut compiled = COMPILED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pre) = compiled.get(regexes) {
            return Ok(pre.clone());
        }
        let pre = Arc::new(Self::new(regexes)?);
        compiled.insert(regexes, pre.clone());
        Ok(pre)
    }

    pub(crate) fn new(exprs: &[&str]) -> Result<Self> {
        let regexes = exprs
            .iter()
            .map(|e| {
                let collapsed = collapse_regex(e)?;
                Regex::new(&collapsed).map_err(|err| Error::BadRegex {
                    regex: e.to_string(),
                    reason: err.to_string(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { regexes })
    }

    /// Splits `text` into words; their concatenation is `text`.
    pub(crate) fn split<'t>(&self, text: &'t str) -> Vec<&'t str> {
        if text.is_empty() {
            return Vec::new();
        }
        // Byte offset in `text` of each code point (and of the end).
        let mut text_at: Vec<usize> = text.char_indices().map(|(b, _)| b).collect();
        text_at.push(text.len());
        let collapsed: String = text.chars().map(collapse_char).collect();
        // Code point index of each byte offset of `collapsed` that starts a character.
        let mut cp_at = vec![usize::MAX; collapsed.len() + 1];
        let mut collapsed_at = Vec::with_capacity(text_at.len());
        for (i, (b, _)) in collapsed.char_indices().enumerate() {
            cp_at[b] = i;
            collapsed_at.push(b);
        }
        cp_at[collapsed.len()] = text_at.len() - 1;
        collapsed_at.push(collapsed.len());

        // Pieces as code point ranges.
        let mut pieces: Vec<(usize, usize)> = vec![(0, text_at.len() - 1)];
        for re in &self.regexes {
            let mut next = Vec::with_capacity(pieces.len() * 2);
            for &(start, end) in &pieces {
                let (b0, b1) = (collapsed_at[start], collapsed_at[end]);
                let hay = &collapsed[b0..b1];
                let mut last = start;
                for m in re.find_iter(hay) {
                    // A regex error here can only be the backtrack limit; llama.cpp's std::regex
                    // would throw as well. Leave the rest of the piece unsplit.
                    let Ok(m) = m else { break };
                    if m.start() == m.end() {
                        continue;
                    }
                    let (ms, me) = (cp_at[b0 + m.start()], cp_at[b0 + m.end()]);
                    if ms > last {
                        next.push((last, ms));
                    }
                    next.push((ms, me));
                    last = me;
                }
                if last < end {
                    next.push((last, end));
                }
            }
            pieces = next;
        }
        pieces
            .into_iter()
            .map(|(s, e)| &text[text_at[s]..text_at[e]])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(exprs: &[&str], text: &str) -> Vec<String> {
        PreTokenizer::new(exprs)
            .unwrap()
            .split(text)
            .into_iter()
            .map(String::from)
            .collect()
    }

    #[test]
    fn every_family_compiles() {
        for (names, spec) in PRE_TYPES {
            PreTokenizer::new(spec.regexes).unwrap_or_else(|e| panic!("{names:?}: {e}"));
        }
    }

    #[test]
    fn gpt2_words() {
        assert_eq!(
            split(&[GPT2], "Hello world's  12x\tok  "),
            ["Hello", " world", "'s", " ", " 12", "x", "\t", "ok", "  "]
        );
    }

    #[test]
    fn llama3_digits_in_threes_and_newlines() {
        assert_eq!(
            split(&[LLAMA3], "1234567 ab\n\n  cd"),
            ["123", "456", "7", " ab", "\n\n", " ", " cd"]
        );
    }

    #[test]
    fn smollm_splits_every_digit_first() {
        assert_eq!(
            split(&[r"\p{N}", GPT2], "x 2024!"),
            ["x", " ", "2", "0", "2", "4", "!"]
        );
    }

    #[test]
    fn non_ascii_categories_follow_llama_cpp_table() {
        // Letters and digits of other scripts; U+00A0 is whitespace; an emoji is a symbol.
        assert_eq!(
            split(&[GPT2], "héllo ١٢ 中文\u{A0}x 😀!"),
            ["héllo", " ١٢", " 中文", "\u{A0}", "x", " 😀!"]
        );
    }

    #[test]
    fn collapsed_regex_shape() {
        let c = collapse_regex(r"[^\s\p{L}]").unwrap();
        assert!(c.starts_with(r"[^\s\x{E0D2}\x{41}"));
        assert!(collapse_regex(r"\p{Zs}").is_err());
    }
}

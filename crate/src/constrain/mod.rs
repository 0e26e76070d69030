//! Constrained decoding: at each step the logits of every token that cannot continue the output
//! as a valid prefix are set to −∞ before sampling, so that the text always parses. The masks
//! come from llguidance, an Earley parser walked over a trie of the model's own token bytes;
//! JSON schemas compile to its grammars directly, GBNF grammars through [`gbnf::to_lark`].

pub mod gbnf;

use crate::error::{Error, Result};
use crate::tokenizer::{TokenAttr, Tokenizer};
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, TokEnv, TokRxInfo, TokTrie};
use llguidance::{Matcher, ParserFactory};
use serde_json::{json, Value};
use std::sync::Arc;

/// What the output must be.
#[derive(Clone, Debug, PartialEq)]
pub enum Constraint {
    /// Any JSON object: OpenAI's JSON mode.
    JsonObject,
    /// JSON that validates under this schema.
    JsonSchema(Value),
    /// Text in this GBNF grammar.
    Gbnf(String),
    /// Tool calls, in this Lark grammar (`chat::tools::ToolUse::grammar`).
    ToolCalls(String),
}

/// Where a request names its constraint: errors name this field.
fn param_of(c: &Constraint) -> &'static str {
    match c {
        Constraint::JsonObject => "response_format",
        Constraint::JsonSchema(_) => "response_format.json_schema.schema",
        Constraint::Gbnf(_) => "response_format.grammar",
        Constraint::ToolCalls(_) => "tools",
    }
}

fn bad(param: &str, reason: impl Into<String>) -> Error {
    Error::BadConstraint {
        param: param.into(),
        reason: reason.into(),
    }
}

impl Constraint {
    /// From OpenAI's `response_format` (`{type: 'text' | 'json_object' | 'json_schema'}`) or
    /// WebLLM's (`json_object` with `schema` as a JSON string, `{type: 'grammar', grammar}`).
    /// `None` for text.
    pub fn from_response_format(v: &Value) -> Result<Option<Constraint>> {
        let p = "response_format";
        let Some(obj) = v.as_object() else {
            return Err(bad(p, "must be an object with a \"type\""));
        };
        let only = |allowed: &[&str]| -> Result<()> {
            match (obj.iter()).find(|(k, v)| !v.is_null() && !allowed.contains(&k.as_str())) {
                Some((k, _)) => Err(bad(&format!("{p}.{k}"), "unknown field")),
                None => Ok(()),
            }
        };
        // An absent or null type is text, as WebLLM's optional `type` means.
        let ty = obj.get("type").filter(|t| !t.is_null());
        match ty.map(|t| t.as_str().unwrap_or("")) {
            None | Some("text") => {
                only(&["type"])?;
                Ok(None)
            }
            Some("json_object") => {
                only(&["type", "schema"])?;
                match obj.get("schema") {
                    None | Some(Value::Null) => Ok(Some(Constraint::JsonObject)),
                    Some(Value::String(s)) => serde_json::from_str(s)
                        .map(|schema| Some(Constraint::JsonSchema(schema)))
                        .map_err(|e| bad(&format!("{p}.schema"), format!("not JSON: {e}"))),
                    Some(_) => Err(bad(&format!("{p}.schema"), "must be a JSON string")),
                }
            }
            Some("json_schema") => {
                only(&["type", "json_schema"])?;
                let Some(js) = obj.get("json_schema").and_then(Value::as_object) else {
                    return Err(bad(&format!("{p}.json_schema"), "must be an object"));
                };
                // name, description and strict describe the schema to OpenAI's service; the
                // output is held to the schema whatever `strict` says.
                let known = ["name", "description", "schema", "strict"];
                if let Some(k) = js.keys().find(|k| !known.contains(&k.as_str())) {
                    return Err(bad(&format!("{p}.json_schema.{k}"), "unknown field"));
                }
                match js.get("schema") {
                    None | Some(Value::Null) => Ok(Some(Constraint::JsonObject)),
                    Some(s) => Ok(Some(Constraint::JsonSchema(s.clone()))),
                }
            }
            Some("grammar") => {
                only(&["type", "grammar"])?;
                match obj.get("grammar").and_then(Value::as_str) {
                    Some(g) => Ok(Some(Constraint::Gbnf(g.to_string()))),
                    None => Err(bad(
                        &format!("{p}.grammar"),
                        "must be a GBNF grammar string",
                    )),
                }
            }
            _ => Err(bad(
                &format!("{p}.type"),
                format!(
                    "{} is not one of \"text\", \"json_object\", \"json_schema\", \"grammar\"",
                    ty.map_or(String::new(), Value::to_string)
                ),
            )),
        }
    }

    fn grammar(&self) -> Result<TopLevelGrammar> {
        // Separators as JSON is usually written (and models were trained on), and no free
        // whitespace: a model cannot pad its answer with newlines until max_tokens.
        let layout = json!({
            "whitespace_flexible": false,
            "item_separator": ", ",
            "key_separator": ": ",
        });
        let schema = match self {
            Constraint::JsonObject => json!({"type": "object"}),
            Constraint::JsonSchema(s) => s.clone(),
            Constraint::Gbnf(text) => {
                let lark = gbnf::to_lark(text).map_err(|e| {
                    let at = e.line.map_or(String::new(), |l| format!("line {l}: "));
                    bad(param_of(self), format!("{at}{}", e.reason))
                })?;
                return Ok(TopLevelGrammar::from_lark(lark));
            }
            Constraint::ToolCalls(lark) => return Ok(TopLevelGrammar::from_lark(lark.clone())),
        };
        let schema = match schema {
            Value::Object(mut o) => {
                o.insert("x-guidance".into(), layout);
                Value::Object(o)
            }
            Value::Bool(true) => json!({"x-guidance": layout}),
            _ => return Err(bad(param_of(self), "a JSON schema is an object (or true)")),
        };
        Ok(TopLevelGrammar::from_json_schema(schema))
    }
}

/// A model's vocabulary as the masks see it: each token's bytes in a trie, with the work that
/// does not depend on the grammar done once.
pub struct Vocabulary {
    factory: ParserFactory,
    eos: u32,
    eog: Vec<u32>,
}

impl Vocabulary {
    pub fn new(tok: &Tokenizer) -> Result<Vocabulary> {
        let n = tok.n_vocab() as u32;
        let words = (0..n)
            .map(|id| {
                let attr = tok.token_attr(id)?;
                // Control and unused tokens are no text: llguidance's marker byte keeps every
                // grammar from matching them.
                if attr.has(TokenAttr::CONTROL | TokenAttr::UNKNOWN | TokenAttr::UNUSED)
                    || attr == TokenAttr::UNDEFINED
                {
                    let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    w.extend_from_slice(tok.token_text(id)?.as_bytes());
                    Ok(w)
                } else {
                    tok.token_piece(id, false)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let eog: Vec<u32> = tok.eog_tokens().collect();
        Vocabulary::from_words(&words, tok.eos(), eog)
    }

    /// From each token's bytes (a control token's starting with
    /// [`TokTrie::SPECIAL_TOKEN_MARKER`]) and the end-of-generation ids.
    pub fn from_words(words: &[Vec<u8>], eos: Option<u32>, eog: Vec<u32>) -> Result<Vocabulary> {
        let eos = eos.or(eog.first().copied()).unwrap_or(0);
        let info = TokRxInfo::new(words.len() as u32, eos);
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(TokTrie::from(&info, words)));
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| bad("response_format", format!("vocabulary: {e}")))?;
        factory.quiet();
        Ok(Vocabulary { factory, eos, eog })
    }
}

/// Digits in a row that a JSON number may have before the mask asks it to end, as llama.cpp's
/// json-schema-to-grammar bounds integral and decimal parts. A schema's own grammar has no such
/// bound, and a small model in a loop writes `0.333333…` until max_tokens, which then does
/// not parse.
pub const MAX_NUMBER_DIGITS: usize = 16;

/// Where JSON output stands, as far as number lengths need: inside a string or not, and how
/// many digits end it outside one.
#[derive(Clone, Copy, Default)]
struct JsonScan {
    in_string: bool,
    escaped: bool,
    digits: usize,
}

impl JsonScan {
    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.in_string {
                match b {
                    _ if self.escaped => self.escaped = false,
                    b'\\' => self.escaped = true,
                    b'"' => self.in_string = false,
                    _ => {}
                }
            } else if b.is_ascii_digit() {
                self.digits += 1;
                continue;
            } else if b == b'"' {
                self.in_string = true;
            }
            self.digits = 0;
        }
    }
}

/// One request's constraint: where the output is in its grammar.
pub struct Constrained<'v> {
    vocab: &'v Vocabulary,
    matcher: Matcher,
    param: &'static str,
    /// For JSON output: the scan that bounds number lengths.
    json: Option<JsonScan>,
    /// Time spent computing masks, in milliseconds.
    pub mask_ms: f64,
}

impl<'v> Constrained<'v> {
    pub fn new(vocab: &'v Vocabulary, c: &Constraint) -> Result<Constrained<'v>> {
        let param = param_of(c);
        let parser = vocab
            .factory
            .create_parser(c.grammar()?)
            .map_err(|e| compile_error(param, &e.to_string()))?;
        Ok(Constrained {
            vocab,
            matcher: Matcher::new(Ok(parser)),
            param,
            json: (!matches!(c, Constraint::Gbnf(_))).then(JsonScan::default),
            mask_ms: 0.0,
        })
    }

    /// Sets every token that cannot come next to −∞; the end-of-generation tokens are allowed
    /// once the output is complete.
    pub fn mask(&mut self, logits: &mut [f32]) -> Result<()> {
        let t0 = crate::generate::now_ms();
        let eog: Vec<(usize, f32)> = (self.vocab.eog.iter())
            .filter_map(|&t| Some((t as usize, *logits.get(t as usize)?)))
            .collect();
        let allowed = self
            .matcher
            .compute_mask_or_eos()
            .map_err(|e| bad(self.param, e.to_string()))?;
        let words = allowed.as_slice();
        for (chunk, &w) in logits.chunks_mut(32).zip(words) {
            if w == u32::MAX {
                continue;
            }
            for (bit, l) in chunk.iter_mut().enumerate() {
                if w >> bit & 1 == 0 {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
        if allowed.is_allowed(self.vocab.eos) {
            // The model ends its turn with its own end token, which may not be the EOS.
            for (t, l) in eog {
                logits[t] = l;
            }
        }
        if self
            .json
            .is_some_and(|j| !j.in_string && j.digits >= MAX_NUMBER_DIGITS)
        {
            self.end_number(logits);
        }
        self.mask_ms += crate::generate::now_ms() - t0;
        Ok(())
    }

    /// Refuses the allowed tokens that would lengthen the number, where the grammar allows
    /// anything else.
    fn end_number(&self, logits: &mut [f32]) {
        let trie = self.vocab.factory.tok_env().tok_trie();
        let digit = |t: usize| trie.token(t as u32).first().is_some_and(u8::is_ascii_digit);
        let open = |(t, l): (usize, &f32)| l.is_finite() && !digit(t);
        if logits.iter().enumerate().any(open) {
            for (t, l) in logits.iter_mut().enumerate() {
                if digit(t) {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
    }

    /// Moves past a sampled token (one the mask allowed).
    pub fn accept(&mut self, token: u32) -> Result<()> {
        if self.vocab.eog.contains(&token) {
            return Ok(());
        }
        if let Some(j) = &mut self.json {
            j.push(self.vocab.factory.tok_env().tok_trie().token(token));
        }
        self.matcher
            .consume_token(token)
            .map_err(|e| bad(self.param, e.to_string()))
    }
}

/// llguidance's refusal of a grammar or schema, with an unsupported JSON schema keyword named.
/// `oneOf` is one where its branches can overlap: held as `anyOf` (as llama.cpp does), an
/// output could match two of them and fail validation.
fn compile_error(param: &str, message: &str) -> Error {
    if message.contains("oneOf constraints are not supported") {
        return Error::UnsupportedSchema {
            param: param.into(),
            keywords: vec!["oneOf".into()],
        };
    }
    if let Some(rest) = message.split("Unimplemented keys: [").nth(1) {
        let keywords = rest
            .split(']')
            .next()
            .unwrap_or("")
            .split(',')
            .map(|k| k.trim().trim_matches('"').to_string())
            .filter(|k| !k.is_empty())
            .collect();
        return Error::UnsupportedSchema {
            param: param.into(),
            keywords,
        };
    }
    bad(param, message)
}

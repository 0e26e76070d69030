//! A loaded model ready for conversations: model, tokenizer and chat template, with KV prefix
//! reuse across calls, stop strings and early stop. The browser's `WasmEngine` is a thin shell
//! around it.

use crate::chat::tools::{tool_calls, ToolCall, ToolUse};
use crate::chat::{ChatMessage, ChatTemplate};
use crate::constrain::{Constrained, Constraint, Vocabulary};
use crate::error::{Error, Result};
use crate::generate::{generate, Timings, TokenLogprob};
use crate::gguf::GgufModel;
use crate::inspect::ModelInfo;
use crate::model::{Arch, Config, Model};
use crate::sample::{Sampler, SamplerConfig};
use crate::tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};

/// Options of one completion (JSON/JS keys in snake_case; unknown keys are an error).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompleteOptions {
    pub max_tokens: usize,
    /// 0 = greedy.
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
    pub min_p: f32,
    pub repeat_penalty: f32,
    pub seed: u64,
    /// Generation ends before the first occurrence of any of these; it is not part of the text.
    pub stop: Vec<String>,
    /// Report each generated token's log-probability ([`Completion::logprobs`]).
    pub logprobs: bool,
    /// With `logprobs`, the likeliest alternatives at each step, at most [`MAX_TOP_LOGPROBS`].
    pub top_logprobs: usize,
    /// What the output must be (JSON, a schema, a grammar); free text when `None`.
    #[serde(skip)]
    pub constraint: Option<Constraint>,
    /// Functions the model may call (chat only: the template shows them).
    #[serde(skip)]
    pub tools: Option<ToolUse>,
}

impl Default for CompleteOptions {
    fn default() -> Self {
        let s = SamplerConfig::default();
        CompleteOptions {
            max_tokens: 256,
            temperature: s.temperature,
            top_k: s.top_k,
            top_p: s.top_p,
            min_p: s.min_p,
            repeat_penalty: s.repeat_penalty,
            seed: s.seed,
            stop: vec![],
            logprobs: false,
            top_logprobs: 0,
            constraint: None,
            tools: None,
        }
    }
}

/// At most this many stop strings (OpenAI takes 4), each at most [`MAX_STOP_BYTES`]: every
/// token is checked against each of them, so both bound what a request can make a token cost.
pub const MAX_STOPS: usize = 16;
pub const MAX_STOP_BYTES: usize = 1024;

/// OpenAI's bound on `top_logprobs`.
pub const MAX_TOP_LOGPROBS: usize = 20;

/// The roles a request's messages may have (a "tool" turn only through a template that takes
/// tools). Others (a typo) are refused rather than left to each template to print or choke on.
pub const ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

/// A request's bad value, named by its field (shared with the tool checks of `chat::tools`).
pub(crate) fn invalid(param: impl Into<String>, value: impl Into<String>, reason: &str) -> Error {
    Error::InvalidRequest {
        param: param.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

/// A string as an error message shows it: quoted, and cut short when long (a refused 1 MB
/// stop string must not make a 1 MB message).
fn shown(s: &str) -> String {
    const KEEP: usize = 32;
    match s.char_indices().nth(KEEP) {
        Some((cut, _)) => format!("{:?}… ({} bytes)", &s[..cut], s.len()),
        None => format!("{s:?}"),
    }
}

impl CompleteOptions {
    /// Refuses what would make generation meaningless or unbounded, naming the option. A
    /// `max_tokens` beyond the context is not an error: generation stops at the context's end
    /// with finish reason "length" (see [`Engine::complete`]).
    pub fn check(&self) -> Result<()> {
        if self.max_tokens == 0 {
            return Err(invalid("max_tokens", "0", "must be at least 1"));
        }
        let float = |name: &str, v: f32, ok: bool, reason: &str| {
            if ok && !v.is_nan() {
                Ok(())
            } else {
                Err(invalid(name, v.to_string(), reason))
            }
        };
        float(
            "temperature",
            self.temperature,
            self.temperature.is_finite() && self.temperature >= 0.0,
            "must be a number ≥ 0 (0 is greedy)",
        )?;
        let probability = "must be a probability from 0 to 1";
        float(
            "top_p",
            self.top_p,
            (0.0..=1.0).contains(&self.top_p),
            probability,
        )?;
        float(
            "min_p",
            self.min_p,
            (0.0..=1.0).contains(&self.min_p),
            probability,
        )?;
        float(
            "repeat_penalty",
            self.repeat_penalty,
            self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0,
            "must be a number > 0 (1 is off)",
        )?;
        if self.top_logprobs > MAX_TOP_LOGPROBS {
            return Err(invalid(
                "top_logprobs",
                self.top_logprobs.to_string(),
                &format!("at most {MAX_TOP_LOGPROBS}"),
            ));
        }
        if self.top_logprobs > 0 && !self.logprobs {
            return Err(invalid(
                "top_logprobs",
                self.top_logprobs.to_string(),
                "needs logprobs: true",
            ));
        }
        if self.stop.len() > MAX_STOPS {
            return Err(invalid(
                "stop",
                format!("{} strings", self.stop.len()),
                &format!("at most {MAX_STOPS}"),
            ));
        }
        for (i, s) in self.stop.iter().enumerate() {
            if s.is_empty() {
                return Err(invalid(
                    format!("stop[{i}]"),
                    "\"\"",
                    "an empty stop string would match before any text",
                ));
            }
            if s.len() > MAX_STOP_BYTES {
                return Err(invalid(
                    format!("stop[{i}]"),
                    shown(s),
                    &format!("longer than {MAX_STOP_BYTES} bytes"),
                ));
            }
        }
        if self.constraint.is_some() && self.tools.is_some() {
            return Err(invalid(
                "response_format",
                "",
                "cannot be combined with tools in play (use tool_choice: \"none\")",
            ));
        }
        Ok(())
    }
}

/// [`CompleteOptions`] as JSON or JS sends them, every number a float: the whole-number options
/// are checked here, so that -1 or 2.5 is an [`Error::InvalidRequest`] naming its option like
/// any other bad value, not a deserialization failure.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RequestOptions {
    pub max_tokens: Option<f64>,
    pub temperature: Option<f64>,
    pub top_k: Option<f64>,
    pub top_p: Option<f64>,
    pub min_p: Option<f64>,
    pub repeat_penalty: Option<f64>,
    pub seed: Option<f64>,
    pub stop: Option<Vec<String>>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<f64>,
    /// OpenAI's or WebLLM's `response_format` ([`Constraint::from_response_format`]).
    pub response_format: Option<serde_json::Value>,
    /// OpenAI's tools ([`ToolUse::from_request`]).
    pub tools: Option<serde_json::Value>,
    pub tool_choice: Option<serde_json::Value>,
    pub parallel_tool_calls: Option<bool>,
}

impl RequestOptions {
    /// The checked options (absent ones at their defaults). Whole numbers past their type's
    /// range saturate: a `max_tokens` of 1e12 is clamped to the context anyway, a `top_k` above
    /// the vocabulary keeps every token.
    pub fn into_options(self) -> Result<CompleteOptions> {
        fn whole(name: &str, v: f64, min: f64) -> Result<f64> {
            if v.is_finite() && v.fract() == 0.0 && v >= min {
                Ok(v)
            } else {
                Err(invalid(
                    name,
                    v.to_string(),
                    &format!("must be a whole number ≥ {min}"),
                ))
            }
        }
        let d = CompleteOptions::default();
        let o = CompleteOptions {
            max_tokens: match self.max_tokens {
                Some(v) => whole("max_tokens", v, 1.0)? as usize,
                None => d.max_tokens,
            },
            top_k: match self.top_k {
                Some(v) => whole("top_k", v, 0.0)? as u32,
                None => d.top_k,
            },
            seed: match self.seed {
                Some(v) => whole("seed", v, 0.0)? as u64,
                None => d.seed,
            },
            // f64 → f32 keeps NaN and maps what f32 cannot hold to ±inf, which check() refuses.
            temperature: self.temperature.map_or(d.temperature, |v| v as f32),
            top_p: self.top_p.map_or(d.top_p, |v| v as f32),
            min_p: self.min_p.map_or(d.min_p, |v| v as f32),
            repeat_penalty: self.repeat_penalty.map_or(d.repeat_penalty, |v| v as f32),
            stop: self.stop.unwrap_or_default(),
            logprobs: self.logprobs.unwrap_or(d.logprobs),
            top_logprobs: match self.top_logprobs {
                Some(v) => whole("top_logprobs", v, 0.0)? as usize,
                None => d.top_logprobs,
            },
            constraint: match &self.response_format {
                Some(f) => Constraint::from_response_format(f)?,
                None => None,
            },
            tools: ToolUse::from_request(
                self.tools.as_ref(),
                self.tool_choice.as_ref(),
                self.parallel_tool_calls,
            )?,
        };
        o.check()?;
        Ok(o)
    }
}

/// Refuses a conversation the chat template should not see: no message at all, or a role
/// outside [`ROLES`].
pub fn check_messages(messages: &[ChatMessage]) -> Result<()> {
    if messages.is_empty() {
        return Err(invalid(
            "messages",
            "[]",
            "a conversation needs at least one message",
        ));
    }
    for (i, m) in messages.iter().enumerate() {
        if !ROLES.contains(&m.role.as_str()) {
            return Err(invalid(
                format!("messages[{i}].role"),
                shown(&m.role),
                "must be \"system\", \"user\", \"assistant\" or \"tool\"",
            ));
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The caller's token callback asked to stop.
    Abort,
    /// The answer is calls of the request's tools ([`Completion::tool_calls`]).
    #[serde(rename = "tool_calls")]
    ToolCalls,
}

#[derive(Clone, Debug, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Completion {
    /// The prompt's ids (BOS included when the model adds it).
    pub prompt_tokens: Vec<u32>,
    /// Generated ids, an end-of-generation token included.
    pub tokens: Vec<u32>,
    pub text: String,
    pub finish_reason: FinishReason,
    pub timings: Timings,
    pub usage: Usage,
    /// Prompt tokens whose KV entries were reused from the previous call.
    pub cached_tokens: usize,
    /// With `logprobs`: one entry per generated token but an end-of-generation one, in OpenAI's
    /// `ChatCompletionTokenLogprob` shape.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<LogprobEntry>>,
    /// The calls the answer made; `text` is then what came before them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
}

/// A token as OpenAI's `logprobs` show it: its text (lossy where the token is part of a UTF-8
/// sequence) and its bytes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TopLogprob {
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f64,
}

/// One generated token's log-probability and the likeliest alternatives at its step.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LogprobEntry {
    #[serde(flatten)]
    pub token: TopLogprob,
    pub top_logprobs: Vec<TopLogprob>,
}

impl LogprobEntry {
    fn new(tok: &Tokenizer, id: u32, lp: &TokenLogprob) -> Result<LogprobEntry> {
        let shown = |id: u32, logprob: f64| -> Result<TopLogprob> {
            let bytes = tok.token_piece(id, false)?;
            Ok(TopLogprob {
                token: String::from_utf8_lossy(&bytes).into_owned(),
                bytes,
                logprob,
            })
        };
        Ok(LogprobEntry {
            token: shown(id, lp.logprob)?,
            top_logprobs: lp
                .top
                .iter()
                .map(|&(id, logprob)| shown(id, logprob))
                .collect::<Result<_>>()?,
        })
    }
}

pub struct Engine {
    pub model: Model,
    pub tokenizer: Tokenizer,
    template: ChatTemplate,
    /// Where the template comes from: "model", or llama.cpp's built-in "gemma" / "chatml" that
    /// it falls back to for a model without one.
    pub template_source: &'static str,
    /// The ids whose K/V the cache holds, at positions 0.. (`model.pos` of them).
    history: Vec<u32>,
    /// Built at the first constrained request.
    vocabulary: Option<Vocabulary>,
}

/// Fails, with the error a load would give, on anything the header alone shows to be
/// unrunnable: an unsupported quant type, architecture, tokenizer or chat template. Reads no
/// weights, so the browser can call it before downloading a model.
pub fn check_runnable(gguf: &GgufModel) -> Result<ModelInfo> {
    // First, because another architecture's keys would otherwise be reported as missing.
    if let Some(arch) = gguf
        .metadata
        .get("general.architecture")
        .and_then(|v| v.as_str())
    {
        Arch::from_name(arch)?;
    }
    let info = ModelInfo::from_model(gguf)?;
    info.check_supported()?;
    let config = Config::from_info(&info)?;
    text_side(gguf, &config)?;
    Ok(info)
}

/// The tokenizer and chat template of a model, and where the template comes from. Without a
/// template in the file, llama.cpp's built-in one for the architecture (Gemma's, else ChatML).
fn text_side(gguf: &GgufModel, config: &Config) -> Result<(Tokenizer, ChatTemplate, &'static str)> {
    let tokenizer = Tokenizer::from_model(gguf)?;
    check_vocabulary(gguf, config, &tokenizer)?;
    let (template, source) = match ChatTemplate::from_model(gguf, &tokenizer) {
        Ok(t) => (t, "model"),
        Err(Error::NoChatTemplate { .. }) if config.arch == Arch::Gemma3 => {
            (ChatTemplate::gemma(&tokenizer)?, "gemma")
        }
        Err(Error::NoChatTemplate { .. }) => (ChatTemplate::chatml(&tokenizer)?, "chatml"),
        Err(e) => return Err(e),
    };
    Ok((tokenizer, template, source))
}

/// The tokenizer must fit the model: as many tokens as the model declares (`{arch}.vocab_size`,
/// which sizes the logits) and as the token embedding and the output have rows (llama.cpp
/// refuses other shapes). Otherwise a sampled id could have no token, or a token no row.
fn check_vocabulary(gguf: &GgufModel, config: &Config, tokenizer: &Tokenizer) -> Result<()> {
    let source_name = gguf.parts.first().map(|p| p.0.as_str()).unwrap_or("model");
    let n = tokenizer.n_vocab() as u64;
    if u64::from(config.n_vocab) != n {
        let arch = gguf
            .metadata
            .get("general.architecture")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        return Err(Error::BadValue {
            source_name: source_name.to_string(),
            key: format!("{arch}.vocab_size"),
            reason: format!(
                "{} tokens, but tokenizer.ggml.tokens has {n}",
                config.n_vocab
            ),
        });
    }
    for name in ["token_embd.weight", "output.weight"] {
        if let Some(t) = gguf.tensor(name) {
            if t.info.dims.get(1).copied().unwrap_or(1) != n {
                return Err(Error::BadShape {
                    source_name: source_name.to_string(),
                    tensor: name.to_string(),
                    dims: t.info.dims.clone(),
                    reason: format!("{n} rows expected, one for each of tokenizer.ggml.tokens"),
                });
            }
        }
    }
    Ok(())
}

impl Engine {
    /// Builds the tokenizer and the chat template around a loaded model.
    pub fn new(gguf: &GgufModel, model: Model) -> Result<Engine> {
        let (tokenizer, template, template_source) = text_side(gguf, &model.config)?;
        Ok(Engine {
            model,
            tokenizer,
            template,
            template_source,
            history: vec![],
            vocabulary: None,
        })
    }

    /// Prompt ids of `messages` through the chat template, ready for the assistant's turn, as
    /// llama.cpp makes them: special-token text parsed, and a BOS the template writes itself
    /// not doubled by the tokenizer's.
    /// `tools`: the request's, which the template shows the model.
    pub fn chat_tokens(
        &self,
        messages: &[ChatMessage],
        tools: Option<&ToolUse>,
    ) -> Result<Vec<u32>> {
        check_messages(messages)?;
        let uses_tools =
            (messages.iter()).position(|m| m.role == "tool" || !m.tool_calls.is_empty());
        if self.template.tool_format().is_none() {
            if let Some(i) = uses_tools {
                return Err(self.no_tool_support(format!("messages[{i}]")));
            }
            if tools.is_some() {
                return Err(self.no_tool_support("tools".into()));
            }
        }
        let specs = tools.map(ToolUse::specs);
        self.template
            .encode(&self.tokenizer, messages, specs.as_deref(), true)
    }

    fn no_tool_support(&self, param: String) -> Error {
        Error::NoToolSupport {
            param,
            reason: format!(
                "the chat template ({}) takes no tools: none of the tool-call formats of Hermes/Qwen, \
                 Llama 3 or Mistral is in it",
                self.template_source
            ),
        }
    }

    /// Replaces the chat template (as llama.cpp's `--chat-template-file`): for a model whose own
    /// template lacks something, e.g. tools. The KV cache is kept: a prompt that the new
    /// template renders differently only shares a shorter prefix with it.
    pub fn set_chat_template(&mut self, source: &str) -> Result<()> {
        self.template = ChatTemplate::with_tokenizer(source, &self.tokenizer)?;
        self.template_source = "custom";
        Ok(())
    }

    /// Token ids of a prompt as llama.cpp makes them: BOS first when the model adds one;
    /// special-token text parsed only with `parse_special` (rendered chat templates need it).
    pub fn prompt_tokens(&self, text: &str, parse_special: bool) -> Vec<u32> {
        self.tokenizer.encode(text, true, parse_special)
    }

    /// Forgets the conversation held in the KV cache.
    pub fn reset(&mut self) {
        self.history.clear();
        self.model.reset();
    }

    /// Generates after `prompt`. `on_token(piece, id, logprob)` gets each generated id with the
    /// text it completes (empty while UTF-8 bytes or a possible stop string are held back) and,
    /// with `opts.logprobs`, its log-probability entry; it returns false to stop. The part of
    /// `prompt` already in the KV cache is not evaluated again.
    pub async fn complete(
        &mut self,
        prompt: &[u32],
        opts: &CompleteOptions,
        mut on_token: impl FnMut(&str, u32, Option<&LogprobEntry>) -> bool,
    ) -> Result<Completion> {
        opts.check()?;
        if prompt.is_empty() {
            return Err(invalid("prompt", "[]", "a prompt needs at least one token"));
        }
        let needed = prompt.len() as u64 + opts.max_tokens as u64;
        if prompt.len() as u64 >= self.model.n_ctx as u64 {
            return Err(Error::ContextFull {
                n_ctx: self.model.n_ctx,
                needed,
            });
        }
        let tool_format = match &opts.tools {
            Some(_) => Some(
                (self.template.tool_format())
                    .ok_or_else(|| self.no_tool_support("tools".into()))?,
            ),
            None => None,
        };
        let tool_constraint = match (&opts.tools, tool_format) {
            (Some(t), Some(f)) if t.forced() => Some(Constraint::ToolCalls(
                t.grammar(f, self.tokenizer.token_id("[TOOL_CALLS]"))?,
            )),
            _ => None,
        };
        let constraint = opts.constraint.as_ref().or(tool_constraint.as_ref());
        if constraint.is_some() && self.vocabulary.is_none() {
            self.vocabulary = Some(Vocabulary::new(&self.tokenizer)?);
        }
        // Compiled before anything runs: a bad grammar or schema fails the request at once.
        let mut constrained = match (constraint, &self.vocabulary) {
            (Some(c), Some(v)) => Some(Constrained::new(v, c)?),
            _ => None,
        };
        let mut hold =
            tool_format.map(|f| f.hold(opts.tools.as_ref().is_some_and(ToolUse::forced)));
        let cached = Self::reuse_prefix(&mut self.history, &mut self.model, prompt);
        // Never run past the context: generation ends there with finish_reason "length".
        let room = self.model.n_ctx as usize - prompt.len();
        let max_tokens = opts.max_tokens.min(room);

        let mut sampler = Sampler::new(SamplerConfig {
            temperature: opts.temperature,
            top_k: opts.top_k,
            top_p: opts.top_p,
            min_p: opts.min_p,
            repeat_penalty: opts.repeat_penalty,
            seed: opts.seed,
            ..SamplerConfig::default()
        });
        // Tokens before the reused prefix still count for the repetition penalty.
        for &t in &prompt[..cached] {
            sampler.accept(t);
        }
        let tok = &self.tokenizer;
        let mut decoder = tok.stream_decoder(false);
        let mut stops = StopScan::new(&opts.stop);
        let mut finish = FinishReason::Length;
        let mut failed = None;
        let mut entries = opts.logprobs.then(Vec::new);
        let (tokens, timings) = generate(
            &mut self.model,
            &prompt[cached..],
            max_tokens,
            &mut sampler,
            opts.logprobs.then_some(opts.top_logprobs),
            constrained.as_mut(),
            |t| tok.is_eog(t),
            |t, lp| {
                if tok.is_eog(t) {
                    finish = FinishReason::Stop;
                    return on_token("", t, None);
                }
                let entry = match (lp.map(|lp| LogprobEntry::new(tok, t, &lp)), &mut entries) {
                    (Some(Ok(entry)), Some(all)) => {
                        all.push(entry);
                        all.last()
                    }
                    (Some(Err(e)), _) => {
                        failed = Some(e);
                        return false;
                    }
                    _ => None,
                };
                let piece = match decoder.push(t) {
                    Ok(p) => p,
                    Err(e) => {
                        failed = Some(e);
                        return false;
                    }
                };
                let (mut ready, hit) = stops.push(&piece);
                if let Some(h) = &mut hold {
                    ready = h.push(&ready);
                }
                if hit {
                    finish = FinishReason::Stop;
                    on_token(&ready, t, entry);
                    return false;
                }
                if !on_token(&ready, t, entry) {
                    finish = FinishReason::Abort;
                    return false;
                }
                true
            },
        )
        .await?;
        if let Some(e) = failed {
            return Err(e);
        }
        let mut text = stops.finish(if finish == FinishReason::Stop {
            None
        } else {
            Some(decoder.finish())
        });
        let mut calls = None;
        if let (Some(f), Some(t)) = (tool_format, &opts.tools) {
            if let Some((before, parsed)) = f.parse(&text, &t.tools) {
                let salt = crate::generate::now_ms().to_bits() ^ (prompt.len() as u64) << 32;
                calls = Some(tool_calls(parsed, salt));
                text = before;
                // "length" stays: a call may have been cut off.
                if finish == FinishReason::Stop {
                    finish = FinishReason::ToolCalls;
                }
            }
        }

        self.history.truncate(cached);
        self.history.extend_from_slice(&prompt[cached..]);
        self.history.extend_from_slice(&tokens);
        self.history.truncate(self.model.pos as usize);
        Ok(Completion {
            prompt_tokens: prompt.to_vec(),
            usage: Usage {
                prompt_tokens: prompt.len(),
                completion_tokens: tokens.len(),
                total_tokens: prompt.len() + tokens.len(),
            },
            tokens,
            text,
            finish_reason: finish,
            timings,
            cached_tokens: cached,
            logprobs: entries,
            tool_calls: calls,
        })
    }

    /// Rewinds the cache to the longest prefix `prompt` shares with what it holds (leaving at
    /// least one prompt token to evaluate: the next token's logits come from it) and returns its
    /// length. Takes the two fields it changes, so that a request's constraint can go on
    /// borrowing the vocabulary.
    fn reuse_prefix(history: &mut Vec<u32>, model: &mut Model, prompt: &[u32]) -> usize {
        let common = history
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len() - 1);
        if model.rewind(common as u32) {
            history.truncate(common);
            common
        } else {
            history.clear();
            model.reset();
            0
        }
    }
}

/// Finds stop strings in streamed text and holds back the tail that could still begin one.
struct StopScan<'a> {
    stops: &'a [String],
    text: String,
    /// Bytes of `text` already handed out.
    emitted: usize,
}

impl<'a> StopScan<'a> {
    fn new(stops: &'a [String]) -> Self {
        StopScan {
            stops,
            text: String::new(),
            emitted: 0,
        }
    }

    /// Adds `piece`; returns the text now safe to show and whether a stop string was found
    /// (then the text ends before it).
    fn push(&mut self, piece: &str) -> (String, bool) {
        self.text.push_str(piece);
        let found = self
            .stops
            .iter()
            .filter_map(|s| self.text.find(s.as_str()))
            .min();
        if let Some(at) = found {
            self.text.truncate(at);
            return (self.take(at), true);
        }
        // The longest suffix of the text that is a proper prefix of a stop string waits.
        let hold = self
            .stops
            .iter()
            .flat_map(|s| {
                (1..s.len())
                    .filter(|&n| s.is_char_boundary(n))
                    .map(move |n| &s[..n])
            })
            .filter(|p| self.text.ends_with(p))
            .map(|p| p.len())
            .max()
            .unwrap_or(0);
        let safe = self.text.len() - hold;
        (self.take(safe), false)
    }

    fn take(&mut self, upto: usize) -> String {
        let upto = upto.max(self.emitted);
        let s = self.text[self.emitted..upto].to_string();
        self.emitted = upto;
        s
    }

    /// The whole text; `rest`: bytes the decoder still held (an unfinished UTF-8 sequence).
    fn finish(mut self, rest: Option<String>) -> String {
        if let Some(r) = rest {
            self.text.push_str(&r);
        }
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool, String) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut scan = StopScan::new(&stops);
        let mut out = vec![];
        let mut hit = false;
        for p in pieces {
            let (ready, h) = scan.push(p);
            out.push(ready);
            if h {
                hit = true;
                break;
            }
        }
        (out, hit, scan.finish(None))
    }

    #[test]
    fn stop_strings_end_the_text_and_are_never_shown() {
        let (out, hit, text) = run(&["\nUser:"], &["Hello", "\n", "Us", "er:", " more"]);
        assert!(hit);
        assert_eq!(out, ["Hello", "", "", ""]);
        assert_eq!(text, "Hello");
    }

    #[test]
    fn held_back_text_is_released_when_it_stops_matching() {
        let (out, hit, text) = run(&["END"], &["a E", "N", "x", "y"]);
        assert!(!hit);
        assert_eq!(out, ["a ", "", "ENx", "y"]);
        assert_eq!(text, "a ENxy");
    }

    #[test]
    fn stop_inside_one_piece_and_multibyte() {
        let (out, hit, text) = run(&["é!"], &["café!", "x"]);
        assert!(hit);
        assert_eq!(out, ["caf"]);
        assert_eq!(text, "caf");
        let (out, _, _) = run(&[], &["a", "b"]);
        assert_eq!(out, ["a", "b"]);
    }

    #[test]
    fn options_reject_unknown_keys() {
        let ok: CompleteOptions =
            serde_json::from_str(r#"{"max_tokens": 3, "stop": ["x"]}"#).unwrap();
        assert_eq!((ok.max_tokens, ok.top_k), (3, 40));
        assert!(serde_json::from_str::<CompleteOptions>(r#"{"max_token": 3}"#).is_err());
    }

    /// Options as JSON, checked (JSON has no NaN: see the test of it below).
    fn request(json: &str) -> Result<CompleteOptions> {
        serde_json::from_str::<RequestOptions>(json)
            .unwrap()
            .into_options()
    }

    /// The `param` of the InvalidRequest error `r` must be, and its message.
    fn refused<T: std::fmt::Debug>(r: Result<T>, param: &str) -> String {
        match r {
            Err(e @ Error::InvalidRequest { .. }) => {
                let Error::InvalidRequest { param: p, .. } = &e else {
                    unreachable!()
                };
                assert_eq!(p, param, "{e}");
                e.to_string()
            }
            other => panic!("{param}: expected InvalidRequest, got {other:?}"),
        }
    }

    #[test]
    fn request_numbers_are_checked_with_the_option_named() {
        let ok = request(
            r#"{"max_tokens": 5, "temperature": 0.7, "top_k": 0, "top_p": 1, "min_p": 0,
                "repeat_penalty": 1.1, "seed": 42, "stop": ["\n"]}"#,
        )
        .unwrap();
        assert_eq!((ok.max_tokens, ok.top_k, ok.seed), (5, 0, 42));
        assert_eq!((ok.temperature, ok.top_p), (0.7, 1.0));
        let d = request("{}").unwrap();
        assert_eq!(d.max_tokens, CompleteOptions::default().max_tokens);
        assert_eq!((d.logprobs, d.top_logprobs), (false, 0));
        let lp = request(r#"{"logprobs": true, "top_logprobs": 20}"#).unwrap();
        assert_eq!((lp.logprobs, lp.top_logprobs), (true, 20));

        for (json, param) in [
            (r#"{"max_tokens": 0}"#, "max_tokens"),
            (r#"{"max_tokens": -1}"#, "max_tokens"),
            (r#"{"max_tokens": 2.5}"#, "max_tokens"),
            (r#"{"top_k": -3}"#, "top_k"),
            (r#"{"seed": -1}"#, "seed"),
            (r#"{"temperature": -0.5}"#, "temperature"),
            (r#"{"temperature": 1e300}"#, "temperature"),
            (r#"{"top_p": 1.5}"#, "top_p"),
            (r#"{"top_p": -0.1}"#, "top_p"),
            (r#"{"min_p": 2}"#, "min_p"),
            (r#"{"repeat_penalty": 0}"#, "repeat_penalty"),
            (r#"{"stop": ["a", ""]}"#, "stop[1]"),
            (r#"{"logprobs": true, "top_logprobs": 21}"#, "top_logprobs"),
            (r#"{"logprobs": true, "top_logprobs": 1.5}"#, "top_logprobs"),
            (r#"{"top_logprobs": 3}"#, "top_logprobs"),
        ] {
            refused(request(json), param);
        }
        let msg = refused(request(r#"{"max_tokens": -1}"#), "max_tokens");
        assert_eq!(
            msg,
            "invalid request: max_tokens = -1: must be a whole number ≥ 1"
        );
        let msg = refused(request(r#"{"top_p": 1.5}"#), "top_p");
        assert!(msg.contains("= 1.5"), "{msg}");
    }

    #[test]
    fn nan_is_refused_wherever_a_number_goes() {
        for param in [
            "max_tokens",
            "top_k",
            "seed",
            "temperature",
            "top_p",
            "min_p",
            "repeat_penalty",
        ] {
            let mut r = RequestOptions::default();
            let slot = match param {
                "max_tokens" => &mut r.max_tokens,
                "top_k" => &mut r.top_k,
                "seed" => &mut r.seed,
                "temperature" => &mut r.temperature,
                "top_p" => &mut r.top_p,
                "min_p" => &mut r.min_p,
                _ => &mut r.repeat_penalty,
            };
            *slot = Some(f64::NAN);
            let msg = refused(r.into_options(), param);
            assert!(msg.contains("NaN"), "{msg}");
        }
    }

    #[test]
    fn a_huge_max_tokens_is_accepted_and_left_to_the_context() {
        assert_eq!(
            request(r#"{"max_tokens": 1e9}"#).unwrap().max_tokens,
            1_000_000_000
        );
        // Saturates instead of wrapping: still "as many as the context holds".
        assert_eq!(
            request(r#"{"max_tokens": 1e30}"#).unwrap().max_tokens,
            usize::MAX
        );
    }

    #[test]
    fn stop_strings_are_bounded_in_count_and_length() {
        let ok = CompleteOptions {
            stop: vec!["x".repeat(MAX_STOP_BYTES); MAX_STOPS],
            ..CompleteOptions::default()
        };
        ok.check().unwrap();
        let long = CompleteOptions {
            stop: vec!["ok".into(), "é".repeat(500_000)],
            ..CompleteOptions::default()
        };
        let msg = refused(long.check(), "stop[1]");
        // The message shows the start of the string and its size, not a megabyte of it.
        assert!(msg.len() < 200, "{msg}");
        assert!(msg.contains("1000000 bytes"), "{msg}");
        let many = CompleteOptions {
            stop: vec!["x".into(); MAX_STOPS + 1],
            ..CompleteOptions::default()
        };
        refused(many.check(), "stop");
    }

    #[test]
    fn finish_reasons_are_openais_words() {
        let words: Vec<serde_json::Value> = [
            FinishReason::Stop,
            FinishReason::Length,
            FinishReason::Abort,
            FinishReason::ToolCalls,
        ]
        .iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect();
        assert_eq!(words, ["stop", "length", "abort", "tool_calls"]);
    }

    #[test]
    fn messages_need_one_at_least_and_known_roles() {
        let m = |role: &str| ChatMessage::new(role, "hi");
        check_messages(&[m("system"), m("user"), m("assistant"), m("tool")]).unwrap();
        refused(check_messages(&[]), "messages");
        let msg = refused(
            check_messages(&[m("user"), m("wizard")]),
            "messages[1].role",
        );
        assert!(msg.contains("\"wizard\""), "{msg}");
        refused(check_messages(&[m("User")]), "messages[0].role");
        refused(check_messages(&[m("function")]), "messages[0].role");
    }
}

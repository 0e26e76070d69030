//! Chat templates: the Jinja template a model ships in `tokenizer.chat_template` turns a
//! conversation into the prompt text it was trained on.
//!
//! Rendered with minijinja configured as Hugging Face's `apply_chat_template` configures Jinja2:
//! `trim_blocks` and `lstrip_blocks` on, loop controls, `raise_exception(message)` and
//! `strftime_now(format)` (local time, which Llama 3.x templates print as today's date),
//! and Python's string and dict methods (`.strip()`, `.startswith()`, `.items()` …) through
//! minijinja-contrib's `pycompat`. `tojson` writes JSON as Python's `json.dumps` does (`", "` and
//! `": "`, no HTML escapes, keys in the order given), which is what the models saw in training.
//! The variables are `messages` (a list of `{role, content}`, with `tool_calls`, `tool_call_id`
//! and `name` where a message has them), `add_generation_prompt`, `bos_token`, `eos_token`, and
//! `tools` when the request has tools in play (`tools.rs`).
//!
//! The rendered text contains special-token texts (`<|im_start|>`, `<start_of_turn>`, often
//! the BOS text): [`ChatTemplate::encode`] tokenizes it as llama.cpp's chat path does (a BOS
//! text the template wrote is dropped when the tokenizer adds BOS itself, then special tokens
//! are parsed), so BOS appears once.
//!
//! A model without a template is an error ([`Error::NoChatTemplate`]); there is no silent
//! fallback. A caller that wants one picks it explicitly: [`ChatTemplate::chatml`] or
//! [`ChatTemplate::gemma`].
//!
//! The template comes from the model file, so it is untrusted: `limits.rs` bounds what a render
//! may do. Undefined variables are lenient as in Jinja2 and llama.cpp's renderer: printed they
//! are empty, tested they are false, iterated they are empty, and only reading an attribute of
//! one is an error. `raise_exception(message)` is an error carrying the template's message.

mod limits;
pub mod tools;

use crate::error::{Error, Result};
use crate::gguf::GgufModel;
use crate::tokenizer::Tokenizer;
use limits::{CappedOutput, Limits};
use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, ErrorKind, State, UndefinedBehavior, Value};
use serde::{Deserialize, Serialize};
use tools::{ToolCall, ToolFormat};

/// One turn of a conversation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// "system", "user", "assistant" or "tool".
    pub role: String,
    #[serde(default)]
    pub content: String,
    /// An assistant's calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// A tool message: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            ..Self::default()
        }
    }

    /// Bytes of the text it brings to a render (the limits grow with it).
    fn text_bytes(&self) -> usize {
        let calls: usize = (self.tool_calls.iter())
            .map(|c| c.id.len() + c.function.name.len() + c.function.arguments.len())
            .sum();
        self.role.len()
            + self.content.len()
            + calls
            + self.tool_call_id.as_ref().map_or(0, String::len)
            + self.name.as_ref().map_or(0, String::len)
    }

    /// As templates read it: keys only for what the message has (Llama 3.1's template tests
    /// `'tool_calls' in message`), and call arguments as objects, as Hugging Face passes them
    /// (text that is not JSON stays text).
    fn to_value(&self) -> Value {
        let mut pairs = vec![
            ("role", Value::from(self.role.as_str())),
            ("content", Value::from(self.content.as_str())),
        ];
        if !self.tool_calls.is_empty() {
            let calls: Vec<Value> = (self.tool_calls.iter())
                .map(|c| {
                    let args = serde_json::from_str::<serde_json::Value>(&c.function.arguments)
                        .map_or_else(
                            |_| Value::from(c.function.arguments.as_str()),
                            |v| json_value(&v),
                        );
                    let function = Value::from_pairs([
                        ("name", Value::from(c.function.name.as_str())),
                        ("arguments", args),
                    ]);
                    Value::from_pairs([
                        ("id", Value::from(c.id.as_str())),
                        ("type", Value::from(c.kind.as_str())),
                        ("function", function),
                    ])
                })
                .collect();
            pairs.push(("tool_calls", Value::from(calls)));
        }
        if let Some(id) = &self.tool_call_id {
            pairs.push(("tool_call_id", Value::from(id.as_str())));
        }
        if let Some(n) = &self.name {
            pairs.push(("name", Value::from(n.as_str())));
        }
        Value::from_pairs(pairs)
    }
}

/// ChatML (`<|im_start|>role\n…<|im_end|>\n`), the format of Qwen, SmolLM and many others.
pub const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Gemma's turn format (`<start_of_turn>user\n…<end_of_turn>\n`, the assistant is "model", a
/// system message is prepended to the first user turn), as in Gemma 3's instruction-tuned
/// models.
pub const GEMMA: &str = r#"{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if message['role'] == 'assistant' -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {{- message['content'] | trim }}
    {{- '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<start_of_turn>model\n' }}
{%- endif -%}
"#;

/// A compiled chat template with the model's BOS and EOS texts.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
    tool_format: Option<ToolFormat>,
}

const NAME: &str = "chat_template";

impl ChatTemplate {
    /// The model's own template (`tokenizer.chat_template`), with BOS/EOS texts from its
    /// vocabulary.
    pub fn from_model(model: &GgufModel, tokenizer: &Tokenizer) -> Result<Self> {
        let source_name = model.parts.first().map(|p| p.0.as_str()).unwrap_or("model");
        match model.metadata.get("tokenizer.chat_template") {
            None => Err(Error::NoChatTemplate {
                source_name: source_name.to_string(),
            }),
            Some(v) => {
                let src = v.as_str().ok_or_else(|| Error::WrongValueType {
                    source_name: source_name.to_string(),
                    key: "tokenizer.chat_template".into(),
                    expected: "string",
                    found: v.describe(),
                })?;
                Self::with_tokenizer(src, tokenizer)
            }
        }
    }

    /// [`CHATML`] with BOS/EOS texts from `tokenizer`.
    pub fn chatml(tokenizer: &Tokenizer) -> Result<Self> {
        Self::with_tokenizer(CHATML, tokenizer)
    }

    /// [`GEMMA`] with BOS/EOS texts from `tokenizer`.
    pub fn gemma(tokenizer: &Tokenizer) -> Result<Self> {
        Self::with_tokenizer(GEMMA, tokenizer)
    }

    /// A template source with BOS/EOS texts from `tokenizer` (their pieces with special
    /// tokens rendered, as llama.cpp; "" for a missing token).
    pub fn with_tokenizer(source: &str, tokenizer: &Tokenizer) -> Result<Self> {
        let text = |id: Option<u32>| {
            id.and_then(|i| tokenizer.token_piece(i, true).ok())
                .map(|p| String::from_utf8_lossy(&p).into_owned())
                .unwrap_or_default()
        };
        Self::new(source, &text(tokenizer.bos()), &text(tokenizer.eos()))
    }

    /// Compiles a template source; syntax errors are reported here, not at render time.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(template_error)?;
        env.set_syntax(syntax);
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        limits::install(&mut env);
        env.add_function(
            "raise_exception",
            |state: &State, message: &Value| -> std::result::Result<String, minijinja::Error> {
                // As the `string` filter, so that a huge value is refused before it is text.
                let message = limits::string(state, message)?;
                Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    message.as_str().unwrap_or_default().to_string(),
                ))
            },
        );
        // Local time, as llama.cpp's and Hugging Face's renderers give it.
        env.add_function(
            "strftime_now",
            |format: &str| -> std::result::Result<String, minijinja::Error> {
                use std::fmt::Write;
                let mut out = String::new();
                write!(out, "{}", chrono::Local::now().format(format)).map_err(|_| {
                    minijinja::Error::new(
                        ErrorKind::InvalidOperation,
                        format!("strftime_now: bad format {format:?}"),
                    )
                })?;
                Ok(out)
            },
        );
        env.add_template_owned(NAME, source.to_string())
            .map_err(template_error)?;
        Ok(Self {
            env,
            source: source.to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
            tool_format: ToolFormat::detect(source),
        })
    }

    /// The prompt text for a conversation; with `add_generation_prompt` it ends with the
    /// opening of the assistant's turn. A template that exceeds a limit of `limits.rs` is
    /// [`Error::ChatTemplateLimit`]; the template stays usable for the next conversation.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.render_with_tools(messages, None, add_generation_prompt)
    }

    /// [`Self::render`] with `tools` (OpenAI's tool objects) for the template's `tools`.
    pub fn render_with_tools(
        &self,
        messages: &[ChatMessage],
        tools: Option<&[serde_json::Value]>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        let tools_bytes = tools.map_or(0, |t| serde_json::to_string(t).map_or(0, |s| s.len()));
        let limits =
            Limits::for_conversation(messages, tools_bytes, &self.bos_token, &self.eos_token);
        // Fuel is set on the environment, so each render sets it on a copy (the compiled
        // template is shared, not copied).
        let mut env = self.env.clone();
        env.set_fuel(Some(limits.fuel));
        let tmpl = env.get_template(NAME).map_err(template_error)?;
        let messages: Value = messages.iter().map(ChatMessage::to_value).collect();
        // Absent, not empty: templates test `tools is defined` and `tools is not none`.
        let tools = tools.map_or(Value::UNDEFINED, |t| t.iter().map(json_value).collect());
        let mut out = CappedOutput::new(limits.output);
        let rendered = tmpl.render_captured_to(
            minijinja::context! {
                messages => messages,
                tools => tools,
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            },
            &mut out,
        );
        match rendered {
            Ok(_) => String::from_utf8(out.bytes).map_err(|e| Error::ChatTemplate {
                message: e.to_string(),
            }),
            Err(e) => Err(limits.error(&e, &out).unwrap_or_else(|| template_error(e))),
        }
    }

    /// Token ids of the rendered conversation, as llama.cpp's chat path makes them: when the
    /// tokenizer adds BOS (EOS) itself, a BOS (EOS) text the template wrote at the start (end)
    /// is dropped; then the text is tokenized with `add_special` and `parse_special`.
    pub fn encode(
        &self,
        tokenizer: &Tokenizer,
        messages: &[ChatMessage],
        tools: Option<&[serde_json::Value]>,
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>> {
        let rendered = self.render_with_tools(messages, tools, add_generation_prompt)?;
        let mut text = rendered.as_str();
        if tokenizer.add_bos() && !self.bos_token.is_empty() {
            text = text.strip_prefix(self.bos_token.as_str()).unwrap_or(text);
        }
        if tokenizer.add_eos() && !self.eos_token.is_empty() {
            text = text.strip_suffix(self.eos_token.as_str()).unwrap_or(text);
        }
        Ok(tokenizer.encode(text, true, true))
    }

    /// The template's Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// How the template's model writes tool calls; `None` when it takes no tools.
    pub fn tool_format(&self) -> Option<ToolFormat> {
        self.tool_format
    }
}

/// A JSON value for a template, maps in their order.
fn json_value(v: &serde_json::Value) -> Value {
    Value::deserialize(v).unwrap_or_default()
}

fn template_error(e: minijinja::Error) -> Error {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    Error::ChatTemplate { message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv() -> Vec<ChatMessage> {
        vec![
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("user", "Hi!"),
            ChatMessage::new("assistant", "Hello. "),
            ChatMessage::new("user", "2+2?"),
        ]
    }

    #[test]
    fn chatml_format() {
        let t = ChatTemplate::new(CHATML, "", "").unwrap();
        assert_eq!(
            t.render(&conv(), true).unwrap(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n\
             <|im_start|>assistant\nHello. <|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n\
             <|im_start|>assistant\n"
        );
    }

    #[test]
    fn gemma_format() {
        let t = ChatTemplate::new(GEMMA, "<bos>", "<eos>").unwrap();
        assert_eq!(
            t.render(&conv(), true).unwrap(),
            "<bos><start_of_turn>user\nBe brief.\n\nHi!<end_of_turn>\n\
             <start_of_turn>model\nHello.<end_of_turn>\n\
             <start_of_turn>user\n2+2?<end_of_turn>\n<start_of_turn>model\n"
        );
        assert_eq!(
            t.render(&conv()[1..2], false).unwrap(),
            "<bos><start_of_turn>user\nHi!<end_of_turn>\n"
        );
    }

    #[test]
    fn raise_exception_is_an_error_with_its_message() {
        let t = ChatTemplate::new(GEMMA, "<bos>", "<eos>").unwrap();
        let msgs = [ChatMessage::new("assistant", "first")];
        let e = t.render(&msgs, false).unwrap_err().to_string();
        assert!(e.contains("Conversation roles must alternate"), "{e}");
    }

    /// Llama 3.x templates print today's date when `strftime_now` exists, else a fixed
    /// "26 Jul 2024"; llama.cpp and node-llama-cpp define it.
    #[test]
    fn strftime_now_gives_today_like_llama_cpp() {
        let src = r#"{%- if strftime_now is defined %}{{ strftime_now("%d %b %Y") }}{%- else %}26 Jul 2024{%- endif %}"#;
        let t = ChatTemplate::new(src, "", "").unwrap();
        let before = chrono::Local::now().format("%d %b %Y").to_string();
        let got = t.render(&[], false).unwrap();
        let after = chrono::Local::now().format("%d %b %Y").to_string();
        assert!(got == before || got == after, "{got}");
        let bad = ChatTemplate::new(r#"{{ strftime_now("%Q") }}"#, "", "").unwrap();
        let e = bad.render(&[], false).unwrap_err().to_string();
        assert!(e.contains("bad format"), "{e}");
    }

    #[test]
    fn python_methods_and_blocks_trimmed() {
        let src = "{% for m in messages %}\n  {{ m.content.strip().upper() }}{% if m.role.startswith('us') %}!{% endif %}\n{% endfor %}";
        let t = ChatTemplate::new(src, "", "").unwrap();
        let msgs = [
            ChatMessage::new("user", "  a "),
            ChatMessage::new("assistant", "b"),
        ];
        // trim_blocks eats the newline after each block tag; "  " before `{{` is no block.
        assert_eq!(t.render(&msgs, false).unwrap(), "  A!  B");
    }

    #[test]
    fn syntax_error_names_the_problem() {
        let e = ChatTemplate::new("{% for x in %}", "", "")
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("chat template: "), "{e}");
    }
}

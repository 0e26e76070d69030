//! Tool calling in OpenAI's shape, through the model's own chat template.
//!
//! The tools go to the template as its `tools` variable and earlier calls as each assistant
//! message's `tool_calls` (arguments as objects, as Hugging Face passes them); what the model
//! writes back is parsed in the format its template taught it. Three formats are known, told
//! apart by the template's source:
//! - **Hermes** (Qwen2.5, Qwen3, Hermes, Granite 4): `<tool_call>\n{"name": …, "arguments": …}\n</tool_call>`,
//!   one block per call, after any text;
//! - **Llama 3** (3.1, 3.2, 3.3): the whole answer is `{"name": …, "parameters": …}`, one call;
//! - **Mistral** (Nemo): `[TOOL_CALLS][{"name": …, "arguments": …, "id": …}, …]`.
//!
//! A template with none of them cannot take tools: [`Error::NoToolSupport`]. With `tool_choice`
//! "required" or a named function, the answer is constrained to the format's calls, with each
//! function's arguments held to its `parameters` schema ([`ToolUse::grammar`]).

use crate::engine::invalid;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// One call the model made (or made earlier, in a request's assistant message), in OpenAI's
/// `ChatCompletionMessageToolCall` shape: `arguments` is JSON text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    pub arguments: String,
}

fn function_type() -> String {
    "function".into()
}

/// How a template's model writes its calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolFormat {
    Hermes,
    Llama3,
    Mistral,
}

const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";
const MISTRAL_OPEN: &str = "[TOOL_CALLS]";
const LLAMA_PYTHON_TAG: &str = "<|python_tag|>";

impl ToolFormat {
    /// The format a template's source teaches, if any. Templates that wrap other formats in
    /// the same markers are not taken for these: `<tool_call>` around XML or `<arg_key>` tags
    /// (Qwen3-Coder, GLM 4.6) has no JSON `"arguments"`, and Mistral's newer
    /// `[TOOL_CALLS]name[ARGS]{…}` separates its parts with control tokens.
    pub fn detect(source: &str) -> Option<ToolFormat> {
        if !source.contains("tools") {
            None
        } else if source.contains(HERMES_OPEN) && source.contains("\"arguments") {
            Some(ToolFormat::Hermes)
        } else if source.contains(MISTRAL_OPEN) && !source.contains("[ARGS]") {
            Some(ToolFormat::Mistral)
        } else if source.contains("\"parameters\": ") && source.contains("ipython") {
            Some(ToolFormat::Llama3)
        } else {
            None
        }
    }

    /// The text before the calls and the calls, when `text` holds calls of known functions in
    /// this format; `None` when it is an answer (or calls that do not parse, which are then
    /// the answer's text, as llama.cpp leaves them).
    pub fn parse(self, text: &str, tools: &[Tool]) -> Option<(String, Vec<(String, Value)>)> {
        let known = |name: &str| tools.iter().any(|t| t.name == name);
        let call = |v: &Value, args_key: &str| -> Option<(String, Value)> {
            let o = v.as_object()?;
            let name = o.get("name")?.as_str()?;
            let args = o.get(args_key).cloned().unwrap_or_else(|| json!({}));
            (known(name) && args.is_object()).then(|| (name.to_string(), args))
        };
        match self {
            ToolFormat::Hermes => {
                let at = text.find(HERMES_OPEN)?;
                let mut calls = vec![];
                let mut rest = &text[at..];
                while let Some(body) = rest.trim_start().strip_prefix(HERMES_OPEN) {
                    // The last block may end at the end of the output: at EOS instead of the
                    // tag, or cut by max_tokens after complete calls (then it is dropped).
                    let (json, after, closed) = match body.split_once(HERMES_CLOSE) {
                        Some((j, a)) => (j, a, true),
                        None => (body, "", false),
                    };
                    match serde_json::from_str(json.trim()) {
                        Ok(v) => calls.push(call(&v, "arguments")?),
                        Err(_) if !closed && !calls.is_empty() => {}
                        Err(_) => return None,
                    }
                    rest = after;
                }
                rest.trim()
                    .is_empty()
                    .then(|| (text[..at].to_string(), calls))
            }
            ToolFormat::Llama3 => {
                let t = text.trim();
                let t = t.strip_prefix(LLAMA_PYTHON_TAG).unwrap_or(t).trim();
                let v: Value = serde_json::from_str(t).ok()?;
                let c = call(&v, "parameters").or_else(|| call(&v, "arguments"))?;
                Some((String::new(), vec![c]))
            }
            ToolFormat::Mistral => {
                let t = text.trim();
                let t = t.strip_prefix(MISTRAL_OPEN).unwrap_or(t).trim();
                let v: Value = serde_json::from_str(t).ok()?;
                let calls = (v.as_array()?.iter())
                    .map(|c| call(c, "arguments"))
                    .collect::<Option<Vec<_>>>()?;
                (!calls.is_empty()).then_some((String::new(), calls))
            }
        }
    }

    /// Where streamed text must wait because it may be (the start of) a call; `forced`: the
    /// answer is calls only, so all of it waits.
    pub fn hold(self, forced: bool) -> CallHold {
        CallHold {
            format: self,
            text: String::new(),
            emitted: 0,
            state: if forced {
                HoldState::Holding
            } else {
                HoldState::Open
            },
        }
    }
}

/// A function the model may call.
#[derive(Clone, Debug, PartialEq)]
pub struct Tool {
    pub name: String,
    /// JSON schema of the arguments (an object schema; `{"type": "object"}` when not given).
    pub parameters: Value,
    /// As the request gave it, for the template.
    pub spec: Value,
}

/// What a request's `tool_choice` asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model answers; the tools are not shown to it.
    None,
    /// The model decides; its calls are parsed from what it writes.
    Auto,
    /// At least one call, constrained to the format.
    Required,
    /// One call of this function, constrained to it.
    Function(String),
}

/// A request's tools and what it asks of them.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolUse {
    pub tools: Vec<Tool>,
    pub choice: ToolChoice,
    /// Whether one answer may hold several calls (OpenAI's `parallel_tool_calls`, default true).
    pub parallel: bool,
}

/// OpenAI's rule for function names, which keeps them plain in every template and grammar.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// At most this many tools: each adds its schema to the prompt and to the grammar.
pub const MAX_TOOLS: usize = 128;

impl ToolUse {
    /// From a request's `tools`, `tool_choice` and `parallel_tool_calls` (OpenAI's shapes).
    /// `None` when no tool is in play: no tools, or `tool_choice: "none"`.
    pub fn from_request(
        tools: Option<&Value>,
        choice: Option<&Value>,
        parallel: Option<bool>,
    ) -> Result<Option<ToolUse>> {
        let tools = match tools {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(list)) => {
                if list.len() > MAX_TOOLS {
                    return Err(invalid(
                        "tools",
                        format!("{} tools", list.len()),
                        &format!("at most {MAX_TOOLS}"),
                    ));
                }
                list.iter()
                    .enumerate()
                    .map(|(i, t)| Tool::from_spec(i, t))
                    .collect::<Result<Vec<_>>>()?
            }
            Some(v) => return Err(invalid("tools", v.to_string(), "must be a list of tools")),
        };
        for (i, t) in tools.iter().enumerate() {
            if tools[..i].iter().any(|u| u.name == t.name) {
                return Err(invalid(
                    format!("tools[{i}].function.name"),
                    format!("{:?}", t.name),
                    "two tools have this name",
                ));
            }
        }
        let choice = match choice {
            None | Some(Value::Null) => ToolChoice::Auto,
            Some(Value::String(s)) => match s.as_str() {
                "none" => ToolChoice::None,
                "auto" => ToolChoice::Auto,
                "required" => ToolChoice::Required,
                _ => {
                    return Err(invalid(
                        "tool_choice",
                        format!("{s:?}"),
                        "must be \"none\", \"auto\", \"required\" or {type: \"function\", function: {name}}",
                    ))
                }
            },
            Some(v) => {
                let name = v
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .filter(|_| v.get("type").and_then(Value::as_str) == Some("function"));
                match name {
                    Some(n) if tools.iter().any(|t| t.name == n) => ToolChoice::Function(n.into()),
                    Some(n) => {
                        return Err(invalid(
                            "tool_choice.function.name",
                            format!("{n:?}"),
                            "not the name of one of the tools",
                        ))
                    }
                    None => {
                        return Err(invalid(
                            "tool_choice",
                            v.to_string(),
                            "must be \"none\", \"auto\", \"required\" or {type: \"function\", function: {name}}",
                        ))
                    }
                }
            }
        };
        if tools.is_empty() {
            return match choice {
                ToolChoice::None | ToolChoice::Auto => Ok(None),
                _ => Err(invalid(
                    "tool_choice",
                    "required",
                    "needs tools to choose from",
                )),
            };
        }
        if choice == ToolChoice::None {
            return Ok(None);
        }
        Ok(Some(ToolUse {
            tools,
            choice,
            parallel: parallel.unwrap_or(true),
        }))
    }

    /// The tools as the template sees them.
    pub fn specs(&self) -> Vec<Value> {
        self.tools.iter().map(|t| t.spec.clone()).collect()
    }

    /// Whether the answer is constrained to calls.
    pub fn forced(&self) -> bool {
        matches!(self.choice, ToolChoice::Required | ToolChoice::Function(_))
    }

    /// A Lark grammar (llguidance's) for an answer of calls only, in `format`: the functions
    /// `tool_choice` allows, each call's arguments under its `parameters` schema.
    /// `mistral_open`: the id of Mistral's `[TOOL_CALLS]` token, which opens its answer.
    pub fn grammar(&self, format: ToolFormat, mistral_open: Option<u32>) -> Result<String> {
        let allowed: Vec<&Tool> = match &self.choice {
            ToolChoice::Function(n) => self.tools.iter().filter(|t| &t.name == n).collect(),
            _ => self.tools.iter().collect(),
        };
        let args_key = if format == ToolFormat::Llama3 {
            "parameters"
        } else {
            "arguments"
        };
        let one = |t: &Tool| {
            let mut props = serde_json::Map::new();
            props.insert("name".into(), json!({"const": t.name}));
            props.insert(args_key.into(), t.parameters.clone());
            let mut required = vec!["name", args_key];
            if format == ToolFormat::Mistral {
                props.insert(
                    "id".into(),
                    json!({"type": "string", "pattern": "^[a-zA-Z0-9]{9}$"}),
                );
                required.push("id");
            }
            json!({"type": "object", "properties": props, "required": required, "additionalProperties": false})
        };
        let mut schema = json!({"anyOf": allowed.iter().map(|t| one(t)).collect::<Vec<_>>()});
        schema["x-guidance"] = json!({
            "whitespace_flexible": false,
            "item_separator": ", ",
            "key_separator": ": ",
        });
        let call = format!("%json {schema}");
        let several = self.parallel && format != ToolFormat::Llama3;
        Ok(match format {
            ToolFormat::Hermes => {
                let block = format!("\"{HERMES_OPEN}\\n\" call \"\\n{HERMES_CLOSE}\"");
                let blocks = if several {
                    "block (\"\\n\" block)*"
                } else {
                    "block"
                };
                format!("start: {blocks}\nblock: {block}\ncall: {call}\n")
            }
            ToolFormat::Llama3 => format!("start: call\ncall: {call}\n"),
            ToolFormat::Mistral => {
                let open = mistral_open.ok_or_else(|| Error::NoToolSupport {
                    param: "tool_choice".into(),
                    reason: format!("the vocabulary has no {MISTRAL_OPEN} token"),
                })?;
                let calls = if several {
                    "call (\", \" call)*"
                } else {
                    "call"
                };
                format!("start: <[{open}]> \"[\" {calls} \"]\"\ncall: {call}\n")
            }
        })
    }
}

impl Tool {
    fn from_spec(i: usize, spec: &Value) -> Result<Tool> {
        let at = format!("tools[{i}]");
        let Some(o) = spec.as_object() else {
            return Err(invalid(
                &at,
                spec.to_string(),
                "must be {type: \"function\", function: {…}}",
            ));
        };
        if let Some(k) = o
            .keys()
            .find(|k| !["type", "function"].contains(&k.as_str()))
        {
            return Err(invalid(format!("{at}.{k}"), "", "not a field of a tool"));
        }
        if o.get("type").and_then(Value::as_str) != Some("function") {
            return Err(invalid(
                format!("{at}.type"),
                o.get("type").map_or("absent".into(), Value::to_string),
                "must be \"function\" (the only kind of tool)",
            ));
        }
        let Some(f) = o.get("function").and_then(Value::as_object) else {
            return Err(invalid(
                format!("{at}.function"),
                "",
                "must be {name, description?, parameters?}",
            ));
        };
        let known = ["name", "description", "parameters", "strict"];
        if let Some(k) = f.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(invalid(
                format!("{at}.function.{k}"),
                "",
                "not a field of a function",
            ));
        }
        let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
        if !valid_name(name) {
            return Err(invalid(
                format!("{at}.function.name"),
                format!("{name:?}"),
                "must be 1 to 64 letters, digits, _ or -",
            ));
        }
        if f.get("description")
            .is_some_and(|d| !d.is_string() && !d.is_null())
        {
            return Err(invalid(
                format!("{at}.function.description"),
                "",
                "must be a string",
            ));
        }
        let parameters = match f.get("parameters") {
            None | Some(Value::Null) => json!({"type": "object"}),
            Some(p @ Value::Object(_)) => p.clone(),
            Some(p) => {
                return Err(invalid(
                    format!("{at}.function.parameters"),
                    p.to_string(),
                    "must be a JSON schema object",
                ))
            }
        };
        Ok(Tool {
            name: name.to_string(),
            parameters,
            spec: spec.clone(),
        })
    }
}

/// OpenAI's tool calls from parsed ones: arguments as compact JSON text, and ids of 9 letters
/// and digits, which is what Mistral's template demands of the ids it is given back (and any
/// other accepts). `salt` makes them differ between answers.
pub fn tool_calls(calls: Vec<(String, Value)>, salt: u64) -> Vec<ToolCall> {
    const DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    calls
        .into_iter()
        .enumerate()
        .map(|(i, (name, args))| {
            // splitmix64 of the salt and the index: ids that differ, without a random source.
            let mut x = salt.wrapping_add((i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^= x >> 31;
            let id = (0..9)
                .map(|k| DIGITS[((x >> (k * 6)) % DIGITS.len() as u64) as usize] as char)
                .collect();
            ToolCall {
                id,
                kind: function_type(),
                function: FunctionCall {
                    name,
                    arguments: args.to_string(),
                },
            }
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HoldState {
    /// Nothing seen yet that decides.
    Open,
    /// Text: nothing more is held (formats whose calls open the answer).
    Released,
    /// A call may have begun: everything from `emitted` on waits for the end.
    Holding,
}

/// Streamed text as it may be shown while the model could be writing a call: text that is or
/// may become a call waits, so a stream never shows a call as content.
pub struct CallHold {
    format: ToolFormat,
    text: String,
    emitted: usize,
    state: HoldState,
}

impl CallHold {
    /// Adds `piece`; returns the text now safe to show.
    pub fn push(&mut self, piece: &str) -> String {
        self.text.push_str(piece);
        match self.state {
            HoldState::Holding => return String::new(),
            HoldState::Released => return self.take(self.text.len()),
            HoldState::Open => {}
        }
        match self.format {
            ToolFormat::Hermes => {
                if let Some(at) = self.text.find(HERMES_OPEN) {
                    self.state = HoldState::Holding;
                    return self.take(at);
                }
                let hold = (1..HERMES_OPEN.len())
                    .filter(|&n| self.text.ends_with(&HERMES_OPEN[..n]))
                    .max()
                    .unwrap_or(0);
                self.take(self.text.len() - hold)
            }
            ToolFormat::Llama3 | ToolFormat::Mistral => {
                let t = self.text.trim_start();
                if t.is_empty() {
                    return String::new();
                }
                let opens: &[&str] = if self.format == ToolFormat::Llama3 {
                    &["{", LLAMA_PYTHON_TAG]
                } else {
                    &["[", MISTRAL_OPEN]
                };
                if opens.iter().any(|o| t.starts_with(o)) {
                    self.state = HoldState::Holding;
                    String::new()
                } else if opens.iter().any(|o| o.starts_with(t)) {
                    String::new()
                } else {
                    self.state = HoldState::Released;
                    self.take(self.text.len())
                }
            }
        }
    }

    fn take(&mut self, upto: usize) -> String {
        let s = self.text[self.emitted..upto].to_string();
        self.emitted = upto;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> ToolUse {
        let tools = json!([{"type": "function", "function": {"name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                "required": ["city"]}}},
            {"type": "function", "function": {"name": "now"}}]);
        ToolUse::from_request(Some(&tools), None, None)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn formats_are_told_by_the_template() {
        assert_eq!(
            ToolFormat::detect(
                r#"{% if tools %}<tool_call>{"name": x, "arguments": y}{% endif %}"#
            ),
            Some(ToolFormat::Hermes)
        );
        assert_eq!(
            ToolFormat::detect("{% if tools %}<tool_call>\n<function={{ name }}>{% endif %}"),
            None
        );
        assert_eq!(
            ToolFormat::detect("{% if tools %}[TOOL_CALLS]{{ name }}[ARGS]{% endif %}"),
            None
        );
        assert_eq!(
            ToolFormat::detect("{% if tools %}[TOOL_CALLS]{% endif %}"),
            Some(ToolFormat::Mistral)
        );
        assert_eq!(
            ToolFormat::detect(r#"{{ tools }} ipython {"name": x, "parameters": y}"#),
            Some(ToolFormat::Llama3)
        );
        assert_eq!(ToolFormat::detect(crate::chat::CHATML), None);
        // A template that never reads `tools` has no use for a call format it mentions.
        assert_eq!(ToolFormat::detect("<tool_call>"), None);
    }

    #[test]
    fn hermes_calls_are_parsed_after_any_text() {
        let t = weather().tools;
        let out = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>";
        let (text, calls) = ToolFormat::Hermes.parse(out, &t).unwrap();
        assert_eq!(text, "Let me check.\n");
        assert_eq!(calls[0], ("get_weather".into(), json!({"city": "Oslo"})));
        assert_eq!(calls[1], ("now".into(), json!({})));
        // Ended by EOS before the closing tag.
        let open = "<tool_call>\n{\"name\": \"now\", \"arguments\": {}}";
        assert_eq!(ToolFormat::Hermes.parse(open, &t).unwrap().1.len(), 1);
        // Cut by max_tokens after a complete call.
        let cut = "<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n{\"name\": \"no";
        assert_eq!(ToolFormat::Hermes.parse(cut, &t).unwrap().1.len(), 1);
        // An unknown function, broken JSON or text after the calls leave an answer.
        for bad in [
            "<tool_call>\n{\"name\": \"rm\", \"arguments\": {}}\n</tool_call>",
            "<tool_call>\n{\"name\": \"now\", \"arguments\": {\n</tool_call>",
            "<tool_call>\n{\"name\": \"now\"}\n</tool_call> and more",
            "no call here",
        ] {
            assert_eq!(ToolFormat::Hermes.parse(bad, &t), None, "{bad}");
        }
    }

    #[test]
    fn llama3_and_mistral_calls_are_the_whole_answer() {
        let t = weather().tools;
        let (text, calls) = ToolFormat::Llama3
            .parse(
                " {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Rome\"}}",
                &t,
            )
            .unwrap();
        assert_eq!(
            (text.as_str(), calls[0].1.clone()),
            ("", json!({"city": "Rome"}))
        );
        assert!(ToolFormat::Llama3
            .parse("<|python_tag|>{\"name\": \"now\", \"parameters\": {}}", &t)
            .is_some());
        assert_eq!(ToolFormat::Llama3.parse("The weather is {fine}.", &t), None);
        let m = "[TOOL_CALLS][{\"name\": \"now\", \"arguments\": {}, \"id\": \"a1b2c3d4e\"}, {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}, \"id\": \"x\"}]";
        assert_eq!(ToolFormat::Mistral.parse(m, &t).unwrap().1.len(), 2);
        assert_eq!(ToolFormat::Mistral.parse("[1, 2]", &t), None);
    }

    #[test]
    fn requests_are_checked_with_the_field_named() {
        let param = |tools: Value, choice: Value| match ToolUse::from_request(
            Some(&tools),
            Some(&choice),
            None,
        ) {
            Err(Error::InvalidRequest { param, .. }) => param,
            other => panic!("{other:?}"),
        };
        let f = |name: &str| json!([{"type": "function", "function": {"name": name}}]);
        assert_eq!(param(f("a b"), json!("auto")), "tools[0].function.name");
        assert_eq!(
            param(json!([{"type": "web_search"}]), json!("auto")),
            "tools[0].type"
        );
        assert_eq!(
            param(
                json!([{"type": "function", "function": {"name": "a", "parameters": 3}}]),
                json!("auto")
            ),
            "tools[0].function.parameters"
        );
        assert_eq!(
            param(
                json!([{"type": "function", "function": {"name": "a", "colour": 3}}]),
                json!("auto")
            ),
            "tools[0].function.colour"
        );
        assert_eq!(
            param(
                json!([{"type": "function", "function": {"name": "a"}}, {"type": "function", "function": {"name": "a"}}]),
                json!("auto")
            ),
            "tools[1].function.name"
        );
        assert_eq!(param(f("a"), json!("sometimes")), "tool_choice");
        assert_eq!(
            param(
                f("a"),
                json!({"type": "function", "function": {"name": "b"}})
            ),
            "tool_choice.function.name"
        );
        assert_eq!(param(json!([]), json!("required")), "tool_choice");
        // No tools, or "none": no tool in play.
        assert_eq!(ToolUse::from_request(None, None, None).unwrap(), None);
        assert_eq!(
            ToolUse::from_request(Some(&f("a")), Some(&json!("none")), None).unwrap(),
            None
        );
        let named = ToolUse::from_request(
            Some(&f("a")),
            Some(&json!({"type": "function", "function": {"name": "a"}})),
            Some(false),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (named.choice, named.parallel),
            (ToolChoice::Function("a".into()), false)
        );
    }

    #[test]
    fn ids_are_nine_letters_or_digits_and_differ() {
        let calls = tool_calls(
            vec![
                ("now".into(), json!({})),
                ("now".into(), json!({"a": [1, "x"]})),
            ],
            7,
        );
        assert!(calls
            .iter()
            .all(|c| c.id.len() == 9 && c.id.bytes().all(|b| b.is_ascii_alphanumeric())));
        assert_ne!(calls[0].id, calls[1].id);
        assert_ne!(
            calls[0].id,
            tool_calls(vec![("now".into(), json!({}))], 8)[0].id
        );
        assert_eq!(calls[1].function.arguments, r#"{"a":[1,"x"]}"#);
    }

    #[test]
    fn streams_hold_back_what_may_be_a_call() {
        let run = |f: ToolFormat, pieces: &[&str]| -> Vec<String> {
            let mut h = f.hold(false);
            pieces.iter().map(|p| h.push(p)).collect()
        };
        assert_eq!(
            run(ToolFormat::Hermes, &["Sure", " <tool", "_call>\n{", "}"]),
            ["Sure", " ", "", ""]
        );
        assert_eq!(run(ToolFormat::Hermes, &["a <to", "y"]), ["a ", "<toy"]);
        assert_eq!(run(ToolFormat::Llama3, &[" ", "{\"", "name"]), ["", "", ""]);
        assert_eq!(
            run(ToolFormat::Llama3, &["\n", "It", " is"]),
            ["", "\nIt", " is"]
        );
        assert_eq!(run(ToolFormat::Mistral, &["[TOOL", "_CALLS]["]), ["", ""]);
        assert_eq!(run(ToolFormat::Mistral, &["No", "pe"]), ["No", "pe"]);
        let mut forced = ToolFormat::Hermes.hold(true);
        assert_eq!(forced.push("Sure"), "");
    }
}

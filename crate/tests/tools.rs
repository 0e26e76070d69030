//! Tool calling through real chat templates with tool support (llama.cpp's copies of the
//! Qwen2.5, Llama 3.1 and Mistral Nemo templates, fetched by `cargo xtask fetch-models --all`):
//! the tools and a call's round trip render as the template writes them, a forced call on a real
//! model comes back parsed, with arguments valid under the function's schema, and the call and
//! its result go back through the template for the answer.

mod common;

use quantweb::chat::tools::{ToolCall, ToolUse};
use quantweb::chat::{ChatMessage, ChatTemplate};
use quantweb::cpu::Cpu;
use quantweb::engine::{CompleteOptions, Engine, FinishReason, RequestOptions};
use quantweb::error::Error;
use quantweb::gguf::GgufModel;
use quantweb::model::Model;
use quantweb::source::open_args;
use serde_json::{json, Value};

const QWEN: &str = "Qwen-Qwen2.5-7B-Instruct.jinja";
const LLAMA: &str = "meta-llama-Llama-3.1-8B-Instruct.jinja";
const MISTRAL: &str = "mistralai-Mistral-Nemo-Instruct-2407.jinja";

fn template(name: &str) -> Option<String> {
    let path = common::models_dir().join("templates").join(name);
    common::model_paths(&[&format!("templates/{name}")])?;
    Some(std::fs::read_to_string(path).unwrap())
}

fn tools() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather",
        "description": "The weather in a city now",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "minLength": 1},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"], "additionalProperties": false}}}])
}

fn tool_use(choice: Value) -> ToolUse {
    ToolUse::from_request(Some(&tools()), Some(&choice), Some(false))
        .unwrap()
        .unwrap()
}

fn call(id: &str) -> ToolCall {
    serde_json::from_value(json!({"id": id, "type": "function", "function": {
        "name": "get_weather", "arguments": "{\"city\": \"Paris\", \"unit\": \"celsius\"}"}}))
    .unwrap()
}

/// A question, the assistant's call, and the tool's result.
fn round_trip(id: &str) -> Vec<ChatMessage> {
    vec![
        ChatMessage::new("user", "What is the weather in Paris?"),
        ChatMessage {
            tool_calls: vec![call(id)],
            ..ChatMessage::new("assistant", "")
        },
        ChatMessage {
            tool_call_id: Some(id.into()),
            ..ChatMessage::new("tool", "{\"temperature\": 21}")
        },
    ]
}

fn render(name: &str, messages: &[ChatMessage], tools: Option<&ToolUse>) -> Option<String> {
    let t = ChatTemplate::new(&template(name)?, "<s>", "</s>").unwrap();
    let specs = tools.map(ToolUse::specs);
    Some(
        t.render_with_tools(messages, specs.as_deref(), true)
            .unwrap(),
    )
}

#[test]
fn qwen25_renders_tools_calls_and_results() {
    let Some(text) = render(
        QWEN,
        &round_trip("a1b2c3d4e"),
        Some(&tool_use(json!("auto"))),
    ) else {
        return;
    };
    let want = concat!(
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n",
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n",
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n",
        // As Python's json.dumps writes it, keys in the request's order.
        r#"{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city now", "parameters": {"type": "object", "properties": {"city": {"type": "string", "minLength": 1}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city", "unit"], "additionalProperties": false}}}"#,
        "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n",
        "<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n",
        "<|im_start|>user\nWhat is the weather in Paris?<|im_end|>\n",
        "<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}\n</tool_call><|im_end|>\n",
        "<|im_start|>user\n<tool_response>\n{\"temperature\": 21}\n</tool_response><|im_end|>\n",
        "<|im_start|>assistant\n",
    );
    assert_eq!(text, want);
}

#[test]
fn llama31_renders_tools_in_the_first_user_message_and_results_as_ipython() {
    let Some(text) = render(
        LLAMA,
        &round_trip("a1b2c3d4e"),
        Some(&tool_use(json!("auto"))),
    ) else {
        return;
    };
    assert!(
        text.starts_with("<s><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\n"),
        "{text}"
    );
    // The tools, indented as json.dumps(indent=4) does, before the first user message.
    let tool =
        "{\n    \"type\": \"function\",\n    \"function\": {\n        \"name\": \"get_weather\",";
    let user = text
        .find("<|start_header_id|>user<|end_header_id|>\n\nGiven the following functions")
        .unwrap();
    assert!(text[user..].contains(tool), "{text}");
    assert!(text.contains("What is the weather in Paris?<|eot_id|>"));
    assert!(text.contains("<|start_header_id|>assistant<|end_header_id|>\n\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}<|eot_id|>"), "{text}");
    // A string result is iterable to Jinja, so the template writes it as JSON text.
    assert!(text.contains("<|start_header_id|>ipython<|end_header_id|>\n\n\"{\\\"temperature\\\": 21}\"<|eot_id|>"), "{text}");
    assert!(text.ends_with("<|start_header_id|>assistant<|end_header_id|>\n\n"));
}

#[test]
fn mistral_nemo_renders_calls_with_their_ids() {
    let Some(text) = render(
        MISTRAL,
        &round_trip("a1b2c3d4e"),
        Some(&tool_use(json!("auto"))),
    ) else {
        return;
    };
    assert!(text.contains("[AVAILABLE_TOOLS][{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"The weather in a city now\", \"parameters\": {"), "{text}");
    assert!(text.contains("[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}, \"id\": \"a1b2c3d4e\"}]</s>"), "{text}");
    assert!(text.contains("[TOOL_RESULTS]{\"content\": {\"temperature\": 21}, \"call_id\": \"a1b2c3d4e\"}[/TOOL_RESULTS]"), "{text}");
    // The template's own rule on ids is its named error.
    let t = ChatTemplate::new(&template(MISTRAL).unwrap(), "<s>", "</s>").unwrap();
    match t.render(&round_trip("call_1"), true) {
        Err(Error::ChatTemplate { message }) => assert!(message.contains("length 9"), "{message}"),
        other => panic!("{other:?}"),
    }
}

fn engine(template_name: &str) -> Option<Engine> {
    let source = template(template_name)?;
    let paths = common::model_paths(&[common::SMOLLM2])?;
    let gguf = pollster::block_on(GgufModel::open(open_args(&paths).unwrap())).unwrap();
    let model = pollster::block_on(Model::load(Cpu::new(0).unwrap(), &gguf, 1024)).unwrap();
    let mut e = Engine::new(&gguf, model).unwrap();
    e.set_chat_template(&source).unwrap();
    Some(e)
}

fn options(choice: Value) -> CompleteOptions {
    RequestOptions {
        max_tokens: Some(120.0),
        tools: Some(tools()),
        tool_choice: Some(choice),
        parallel_tool_calls: Some(false),
        ..RequestOptions::default()
    }
    .into_options()
    .unwrap()
}

/// A forced call on SmolLM2 through `template_name`: one parsed call whose arguments follow
/// the schema, nothing streamed as text; then the round trip's answer is text.
fn forced_call_and_answer(template_name: &str) {
    let Some(mut e) = engine(template_name) else {
        return;
    };
    let question = [ChatMessage::new("user", "What is the weather in Paris?")];
    for choice in [
        json!("required"),
        json!({"type": "function", "function": {"name": "get_weather"}}),
    ] {
        let opts = options(choice.clone());
        let prompt = e.chat_tokens(&question, opts.tools.as_ref()).unwrap();
        let mut shown = String::new();
        let done = pollster::block_on(e.complete(&prompt, &opts, |piece, _, _| {
            shown.push_str(piece);
            true
        }))
        .unwrap();
        assert_eq!(
            done.finish_reason,
            FinishReason::ToolCalls,
            "{template_name} {choice}: {done:?}"
        );
        assert_eq!((done.text.as_str(), shown.as_str()), ("", ""));
        let calls = done.tool_calls.unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].function.name, "get_weather");
        let args: Value = serde_json::from_str(&calls[0].function.arguments).unwrap();
        let obj = args.as_object().unwrap();
        assert_eq!(obj.len(), 2, "{args}");
        assert!(!obj["city"].as_str().unwrap().is_empty());
        assert!(["celsius", "fahrenheit"].contains(&obj["unit"].as_str().unwrap()));
        eprintln!("{template_name} {choice}: {}", calls[0].function.arguments);

        // The call and its result go back; the answer is text (tool_choice "none").
        let mut history = question.to_vec();
        history.push(ChatMessage {
            tool_calls: calls,
            ..ChatMessage::new("assistant", "")
        });
        history.push(ChatMessage {
            tool_call_id: Some(history[1].tool_calls[0].id.clone()),
            ..ChatMessage::new("tool", "{\"temperature\": 21, \"sky\": \"sunny\"}")
        });
        let opts = options(json!("none"));
        assert!(opts.tools.is_none());
        let prompt = e.chat_tokens(&history, None).unwrap();
        let answer = pollster::block_on(e.complete(&prompt, &opts, |_, _, _| true)).unwrap();
        assert!(answer.tool_calls.is_none());
        assert!(matches!(
            answer.finish_reason,
            FinishReason::Stop | FinishReason::Length
        ));
        assert!(
            !answer.text.trim().is_empty(),
            "{template_name}: empty answer"
        );
    }
}

#[test]
fn qwen25_forced_calls_round_trip_on_smollm2() {
    forced_call_and_answer(QWEN);
}

#[test]
fn llama31_forced_calls_round_trip_on_smollm2() {
    forced_call_and_answer(LLAMA);
}

#[test]
fn tools_need_a_template_that_takes_them() {
    let Some(paths) = common::model_paths(&[common::SMOLLM2]) else {
        return;
    };
    let gguf = pollster::block_on(GgufModel::open(open_args(&paths).unwrap())).unwrap();
    let model = pollster::block_on(Model::load(Cpu::new(0).unwrap(), &gguf, 256)).unwrap();
    // SmolLM2's own template is plain ChatML.
    let mut e = Engine::new(&gguf, model).unwrap();
    let opts = options(json!("auto"));
    let param = |r: quantweb::error::Result<Vec<u32>>| match r {
        Err(Error::NoToolSupport { param, .. }) => param,
        other => panic!("{other:?}"),
    };
    let hi = [ChatMessage::new("user", "hi")];
    assert_eq!(param(e.chat_tokens(&hi, opts.tools.as_ref())), "tools");
    assert_eq!(
        param(e.chat_tokens(&round_trip("a1b2c3d4e"), None)),
        "messages[1]"
    );
    let prompt = e.chat_tokens(&hi, None).unwrap();
    assert!(matches!(
        pollster::block_on(e.complete(&prompt, &opts, |_, _, _| true)),
        Err(Error::NoToolSupport { .. })
    ));
    // tool_choice "none" needs no tool support.
    let none = options(json!("none"));
    pollster::block_on(e.complete(&prompt, &none, |_, _, _| true)).unwrap();
    // Tools and a response_format together are refused by name.
    let both = RequestOptions {
        tools: Some(tools()),
        response_format: Some(json!({"type": "json_object"})),
        ..RequestOptions::default()
    };
    assert!(
        matches!(both.into_options(), Err(Error::InvalidRequest { param, .. }) if param == "response_format")
    );
    // A broken template is refused when set, and the engine keeps its own.
    assert!(matches!(
        e.set_chat_template("{% if %}"),
        Err(Error::ChatTemplate { .. })
    ));
    e.chat_tokens(&hi, None).unwrap();
}

#[test]
fn cli_generate_with_tools_prints_the_calls() {
    let (Some(_), Some(paths)) = (template(QWEN), common::model_paths(&[common::SMOLLM2])) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("quantweb-tools-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tools_file = dir.join("tools.json");
    let messages_file = dir.join("messages.json");
    std::fs::write(&tools_file, tools().to_string()).unwrap();
    std::fs::write(
        &messages_file,
        serde_json::to_string(&round_trip("a1b2c3d4e")[..1]).unwrap(),
    )
    .unwrap();
    let qwen = common::models_dir().join("templates").join(QWEN);
    let run = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            &paths[0],
            "--backend",
            "cpu",
            "--threads",
            "2",
            "--json",
            "--max-tokens",
            "80",
        ];
        args.extend_from_slice(extra);
        std::process::Command::new(env!("CARGO_BIN_EXE_quantweb"))
            .args(&args)
            .output()
            .unwrap()
    };
    let (t, m, q) = (
        tools_file.to_str().unwrap(),
        messages_file.to_str().unwrap(),
        qwen.to_str().unwrap(),
    );
    let out = run(&[
        "--messages",
        m,
        "--tools",
        t,
        "--tool-choice",
        "get_weather",
        "--chat-template",
        q,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["finish_reason"], "tool_calls", "{v}");
    assert_eq!(v["tool_calls"][0]["function"]["name"], "get_weather", "{v}");
    // Without a conversation there is no template to show the tools; without the Qwen template,
    // SmolLM2's own takes none. Both are named before the model runs.
    let out = run(&["--prompt", "hi", "--tools", t]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tools"));
    let out = run(&["--messages", m, "--tools", t]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("takes no tools"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

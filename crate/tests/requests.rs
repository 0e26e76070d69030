//! Untrusted requests through the CLI's `generate`: each bad value is a named error (the same
//! `InvalidRequest` as the JS API's `InvalidRequestError`, from the same checks) or a documented
//! clamp. Option errors come before the model is opened, so those cases need no model.

mod common;

use common::{model_paths, SMOLLM2};
use std::process::{Command, Output};

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quantweb"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `generate` on `model` with a short prompt and `extra` arguments.
fn generate(model: &str, extra: &[&str]) -> Output {
    let mut args = vec!["generate", model, "--backend", "cpu"];
    args.extend_from_slice(extra);
    cli(&args)
}

fn temp_file(name: &str, bytes: &[u8]) -> String {
    let path =
        std::env::temp_dir().join(format!("quantweb-requests-{}-{name}", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

#[test]
fn bad_options_and_messages_are_named_before_the_model_is_read() {
    // No such file: an error about the request proves it was checked first.
    let model = "/nonexistent/model.gguf";
    let huge_stop = "x".repeat(2000);
    let no_messages = temp_file("empty.json", b"[]");
    let wizard = temp_file("wizard.json", br#"[{"role": "wizard", "content": "hi"}]"#);
    let not_json = temp_file("notjson.json", b"{role: user}");
    let cases: [(&[&str], &str); 10] = [
        (&["--prompt", "hi", "--max-tokens", "0"], "max_tokens = 0"),
        (
            &["--prompt", "hi", "--temperature", "NaN"],
            "temperature = NaN",
        ),
        (&["--prompt", "hi", "--temperature=-1"], "temperature = -1"),
        (&["--prompt", "hi", "--top-p", "1.5"], "top_p = 1.5"),
        (&["--prompt", "hi", "--min-p", "NaN"], "min_p = NaN"),
        (
            &["--prompt", "hi", "--stop", "a", "--stop", ""],
            "stop[1] = \"\"",
        ),
        (
            &["--prompt", "hi", "--stop", &huge_stop],
            "stop[0] = \"xxxx",
        ),
        (&["--messages", &no_messages], "messages = []"),
        (&["--messages", &wizard], "messages[0].role = \"wizard\""),
        (&["--messages", &not_json], "messages = "),
    ];
    for (args, want) in cases {
        let out = generate(model, args);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            err.contains(&format!("invalid request: {want}")),
            "{args:?}: {err}"
        );
        assert!(
            err.len() < 400,
            "{args:?}: a long value is cut short: {err}"
        );
    }
    // Negative counts are not even numbers of their type: clap's usage error (exit code 2).
    let out = generate(model, &["--prompt", "hi", "--max-tokens=-1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--max-tokens"), "{}", stderr(&out));
}

#[test]
fn a_1_mb_prompt_is_context_full_and_a_non_utf8_one_an_error() {
    let Some(paths) = model_paths(&[SMOLLM2]) else {
        return;
    };
    let model = &paths[0];
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(1 << 20 >> 5);
    assert!(text.len() >= 1 << 20);
    let raw = temp_file("big.txt", text.as_bytes());
    let chat = temp_file(
        "big.json",
        serde_json::json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}])
            .to_string()
            .as_bytes(),
    );
    for args in [["--prompt-file", &raw], ["--messages", &chat]] {
        let t = std::time::Instant::now();
        let out = generate(model, &[args[0], args[1], "--ctx", "256"]);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            err.contains("context full:") && err.contains("the context holds 256"),
            "{args:?}: {err}"
        );
        eprintln!("{}: {:.1} s", args[0], t.elapsed().as_secs_f64());
    }
    // A lone UTF-16 surrogate in WTF-8, as a file would carry it: not UTF-8, refused by name.
    let bad = temp_file("surrogate.txt", b"a \xed\xa0\x80 b");
    let out = generate(model, &["--prompt-file", &bad]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("valid UTF-8"), "{}", stderr(&out));
}

#[test]
fn max_tokens_beyond_the_context_stops_at_its_end_and_stop_strings_cut_the_text() {
    let Some(paths) = model_paths(&[SMOLLM2]) else {
        return;
    };
    let model = &paths[0];
    let run = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["--prompt", "The capital of France is", "--ctx", "32"];
        args.extend_from_slice(&["--max-tokens", "1000000000", "--json"]);
        args.extend_from_slice(extra);
        let out = generate(model, &args);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let full = run(&[]);
    let used =
        full["prompt_tokens"].as_array().unwrap().len() + full["tokens"].as_array().unwrap().len();
    assert_eq!(full["finish_reason"], "length", "{full}");
    assert_eq!(used, 32, "generation fills the context, no further");

    let text = full["text"].as_str().unwrap();
    let word = text.split_whitespace().nth(3).expect("a few words");
    let cut = run(&["--stop", word]);
    assert_eq!(cut["finish_reason"], "stop", "{cut}");
    assert_eq!(
        cut["text"].as_str().unwrap(),
        &text[..text.find(word).unwrap()]
    );
}

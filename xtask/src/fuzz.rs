//! `cargo xtask fuzz [TARGET] [--seconds N]`: runs the libFuzzer targets of fuzz/ (all of them
//! in turn, or one) under cargo-fuzz on the pinned nightly, with the limits of docs/fuzzing.md.
//!
//! Only this command installs cargo-fuzz (pinned, `--locked`): `setup` and `test` stay fast, and
//! CI runs the committed corpora as plain `cargo test` cases instead (crate/tests/fuzz_corpus.rs).
//! New inputs go to fuzz/target/corpus/TARGET; the committed fuzz/corpus/TARGET is only read, so
//! that it stays the small seed set. Findings land in fuzz/artifacts/TARGET.

use std::process::Command;

use crate::setup::{ensure_threads_toolchain, THREADS_TOOLCHAIN};
use crate::util::{capture, repo_root, run_cmd, step, Result};

const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// The targets, as fuzz/Cargo.toml names them, with their libFuzzer dictionary in fuzz/.
const TARGETS: &[(&str, Option<&str>)] = &[
    ("gguf_header", Some("gguf.dict")),
    ("gguf_model", Some("gguf.dict")),
    ("tokenizer", None),
    ("chat_template", Some("chat_template.dict")),
    ("convert_plan", Some("gguf.dict")),
    ("byte_ranges", Some("gguf.dict")),
];

/// libFuzzer's limits: a run over 1 s is a hang, 512 MiB of memory (resident or in one
/// allocation) is an out-of-memory finding.
const LIMITS: &[&str] = &["-timeout=1", "-rss_limit_mb=512", "-malloc_limit_mb=512"];
/// AddressSanitizer keeps freed memory in a quarantine of 256 MiB by default, which counts in
/// the resident size: replaying a corpus of a few thousand inputs filled it and stopped the
/// `tokenizer` target at 519 MiB, though no input used more than 61 MiB alone. 64 MiB keeps
/// the 512 MiB limit about the target's own memory. An `ASAN_OPTIONS` already set wins.
const ASAN_OPTIONS: &str = "quarantine_size_mb=64";

pub fn fuzz(target: Option<&str>, seconds: u64) -> Result<()> {
    let targets: Vec<(&str, Option<&str>)> = match target {
        None => TARGETS.to_vec(),
        Some(t) => match TARGETS.iter().find(|(name, _)| *name == t) {
            Some(&found) => vec![found],
            None => {
                let names: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
                return Err(
                    format!("unknown fuzz target `{t}`; targets: {}", names.join(", ")).into(),
                );
            }
        },
    };
    ensure_threads_toolchain()?;
    ensure_cargo_fuzz()?;
    let fuzz_dir = repo_root().join("fuzz");
    for (t, dict) in targets {
        step(&format!("fuzz {t} for {seconds} s"));
        let scratch = fuzz_dir.join("target").join("corpus").join(t);
        std::fs::create_dir_all(&scratch)?;
        let mut cmd = Command::new("cargo");
        cmd.args([&format!("+{THREADS_TOOLCHAIN}"), "fuzz", "run", t])
            .arg(&scratch)
            .arg(fuzz_dir.join("corpus").join(t))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .args(LIMITS)
            .current_dir(&fuzz_dir);
        if std::env::var_os("ASAN_OPTIONS").is_none() {
            cmd.env("ASAN_OPTIONS", ASAN_OPTIONS);
        }
        if let Some(dict) = dict {
            cmd.arg(format!("-dict={}", fuzz_dir.join(dict).display()));
        }
        run_cmd(
            &mut cmd,
            &format!(
                "the fuzzer found a crash, hang or out-of-memory input: it is in fuzz/artifacts/{t}; \
                 see docs/fuzzing.md for what to do with it"
            ),
        )?;
    }
    Ok(())
}

fn ensure_cargo_fuzz() -> Result<()> {
    let toolchain = format!("+{THREADS_TOOLCHAIN}");
    let version = capture("cargo", &[&toolchain, "fuzz", "--version"]);
    if version
        .as_deref()
        .is_some_and(|v| v.ends_with(CARGO_FUZZ_VERSION))
    {
        println!("cargo-fuzz {CARGO_FUZZ_VERSION}: installed");
        return Ok(());
    }
    run_cmd(
        Command::new("cargo").args([
            "install",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
            "--locked",
        ]),
        "check your network connection, or install cargo-fuzz yourself",
    )
}

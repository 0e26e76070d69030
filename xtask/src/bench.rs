//! `cargo xtask bench`: quantweb against its peers on one model, one prompt, one token count.
//!
//! - browser (one headless Chromium run, `tests/bench/bench.mjs`): quantweb's `WasmEngine` on
//!   WebGPU and on its CPU engine (wasm relaxed SIMD, one thread), its `Engine` (in its worker) on
//!   the threaded CPU engine build (2 threads: the worker and one helper; relaxed SIMD, as
//!   Chromium's worker picks it), wllama 3.8.1 CPU wasm
//!   (`n_gpu_layers` 0, 2 threads) and wllama WebGPU (`n_gpu_layers` 99), all served by our own
//!   server (`serve::start` on port 0; wllama's ES module and wasm are copied under target/bench/
//!   and served at `/fixtures/`, with COOP/COEP so wllama may use threads);
//! - native: `quantweb bench --json` (release build) on wgpu and on the CPU engine (2 threads),
//!   and llama.cpp (2 threads) through node-llama-cpp 3.21.1 (`tests/bench/native_llamacpp.mjs`,
//!   from tests/oracle/node_modules; `npm ci` there when missing).
//!
//! The prompt is `PROMPT_TEXT` repeated and cut to `-p` tokens by llama.cpp's tokenizer (the
//! browser engines get those ids, or their text, which tokenizes back to them); `-n` tokens are
//! generated greedily. The table (load s, prefill and decode tok/s, peak memory, ratios) is
//! printed and written to `target/bench/<model>.md`; the browser half's raw results go to
//! `target/bench/<model>.browser.json`.

use serde_json::{json, Value};
use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::models::{self, GEMMA3, SMOLLM2};
use crate::util::{cargo, repo_root, run_cmd, step, target_dir, Result};
use crate::{serve, setup, wasm};

/// An ordinary English paragraph; repeated (joined by a blank line) until it gives `-p` tokens.
const PROMPT_TEXT: &str =
    "The history of the printing press begins in the fifteenth century, when \
Johannes Gutenberg combined movable metal type, oil-based inks and a wooden screw press into a \
system that could produce books quickly and cheaply. Within a few decades printing shops had \
spread across Europe, and the number of books in circulation grew from thousands to millions. \
Scholars, merchants and religious reformers all used the new technology to spread their ideas, \
and the consequences for science, politics and education were profound. In this essay we look at \
how the press changed the way people read, wrote and thought, and why its effects are still felt \
today, more than five hundred years after the first printed Bible appeared in the German city of \
Mainz.";

/// llama.cpp and wllama threads: the CI machines have 2 cores.
const THREADS: u32 = 2;
/// Per browser engine, load + warm-up + run (`QUANTWEB_BENCH_TIMEOUT_S` overrides it).
const BROWSER_TIMEOUT_S: u32 = 1200;

fn browser_timeout_s() -> u32 {
    std::env::var("QUANTWEB_BENCH_TIMEOUT_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(BROWSER_TIMEOUT_S)
}

pub struct Options {
    pub model: String,
    pub prompt_tokens: u32,
    pub gen_tokens: u32,
    pub skip_browser: bool,
    pub skip_native: bool,
}

/// `cargo xtask bench --gpu`: the benchmark for a machine with a GPU.
pub struct GpuOptions {
    /// smollm2 and gemma3 unless one model is named.
    pub models: Vec<String>,
    pub prompt_tokens: u32,
    pub gen_tokens: u32,
    /// "gpu" (a hardware adapter, else the row says why not) or "cpu" (llvmpipe, SwiftShader:
    /// how the script is tested on a machine without a GPU).
    pub adapter: String,
}

/// Chromium flags that give WebGPU a Vulkan hardware adapter on Linux where there is one.
const CHROMIUM_GPU_FLAGS: [&str; 3] = [
    "--enable-features=Vulkan",
    "--use-angle=vulkan",
    "--use-vulkan=native",
];

/// The model as each engine needs it.
struct BenchModel {
    /// Short name for the output files (`smollm2`, `gemma3`, or the file stem).
    key: String,
    /// What quantweb reads: one file, or the byte chunks of one file in order.
    parts: Vec<PathBuf>,
    /// One GGUF file (wllama and llama.cpp cannot read raw chunks).
    single: PathBuf,
    /// URL paths on our server for `parts` and `single`.
    parts_urls: Vec<String>,
    single_url: String,
}

/// One table row.
#[derive(Default)]
struct Row {
    engine: String,
    /// "browser" or "native": ratios compare within a side.
    side: &'static str,
    is_quantweb: bool,
    load_s: Option<f64>,
    prefill_tok_s: Option<f64>,
    decode_tok_s: Option<f64>,
    peak_mb: Option<f64>,
    prompt_tokens: Option<f64>,
    gen_tokens: Option<f64>,
    note: String,
    error: Option<String>,
}

pub fn bench(opts: &Options) -> Result<()> {
    let t0 = Instant::now();
    if opts.prompt_tokens < 8 || opts.gen_tokens < 2 {
        return Err("bench: -p must be at least 8 and -n at least 2".into());
    }
    let root = repo_root();
    let dir = target_dir().join("bench");
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if !opts.skip_browser {
        setup::setup()?; // wasm target, wasm-bindgen, npm packages (playwright-core, wllama)
    }
    let model = resolve_model(&opts.model, &dir)?;
    let (p, n) = (opts.prompt_tokens, opts.gen_tokens);
    let prompt_file = dir.join("prompt.txt");
    fs::write(&prompt_file, PROMPT_TEXT)?;

    let have_oracle = if opts.skip_native {
        oracle_installed()
    } else {
        ensure_oracle().map_err(|e| eprintln!("bench: {e}")).is_ok()
    };
    let prompt = llamacpp_prompt(&model, &prompt_file, p, n, have_oracle);

    let mut rows = Vec::new();
    if !opts.skip_browser {
        let engines = [
            "quantweb",
            "quantweb-cpu",
            "quantweb-cpu-threads",
            "wllama-cpu",
            "wllama-webgpu",
        ];
        rows.extend(browser_rows(
            &model,
            &dir,
            p,
            n,
            prompt.as_ref(),
            &engines,
            &[],
        )?);
    }
    if !opts.skip_native {
        rows.push(quantweb_native_row(&model, p, n, None));
        rows.push(quantweb_native_row(&model, p, n, Some("cpu-engine")));
        rows.push(llamacpp_native_row(&model, &prompt_file, p, n, None));
    }

    let table = render(p, n, &model, &rows);
    println!("\n{table}");
    let md = dir.join(format!("{}.md", model.key));
    fs::write(&md, &table)?;
    println!(
        "bench: wrote {} ({:.0} s in all)",
        md.strip_prefix(&root).unwrap_or(&md).display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The prompt ids (and their text) from llama.cpp's tokenizer, when node-llama-cpp is there.
fn llamacpp_prompt(
    model: &BenchModel,
    prompt_file: &Path,
    p: u32,
    n: u32,
    have_oracle: bool,
) -> Option<(Value, String)> {
    step("bench: the prompt, tokenized by llama.cpp (node-llama-cpp, vocab only)");
    let mut prompt = None;
    if have_oracle {
        match native_llamacpp(model, prompt_file, p, n, true, None) {
            Ok(j) => {
                let ids = j.get("prompt_ids").cloned().unwrap_or(Value::Null);
                let text = j.get("prompt_text").and_then(Value::as_str).unwrap_or("");
                println!(
                    "prompt: {} ids, {} characters",
                    ids.as_array().map_or(0, |a| a.len()),
                    text.len()
                );
                prompt = Some((ids, text.to_string()));
            }
            Err(e) => eprintln!("bench: tokenizing with llama.cpp failed: {e}"),
        }
    }
    if prompt.is_none() {
        eprintln!(
            "bench: no llama.cpp tokenizer (tests/oracle/node_modules): the browser engines get the \
             text, each tokenizes it itself; the token counts in the table say what they got"
        );
    }
    prompt
}

/// `cargo xtask bench --gpu`: for each model, quantweb native on the chosen wgpu adapter,
/// llama.cpp's Vulkan and CUDA backends (node-llama-cpp's prebuilt binaries; a row says why when
/// one does not load), and quantweb and wllama on WebGPU in Chromium started with Vulkan flags
/// (a row says so when Chromium gets no hardware adapter). One table per model, all in
/// target/bench/gpu.md.
pub fn gpu_bench(opts: &GpuOptions) -> Result<()> {
    let t0 = Instant::now();
    let (p, n) = (opts.prompt_tokens, opts.gen_tokens);
    if p < 8 || n < 2 {
        return Err("bench: -p must be at least 8 and -n at least 2".into());
    }
    let dir = target_dir().join("bench");
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    setup::setup()?;
    ensure_oracle()?;
    let prompt_file = dir.join("prompt.txt");
    fs::write(&prompt_file, PROMPT_TEXT)?;
    let hardware = opts.adapter == "gpu";
    let mut out = format!(
        "# quantweb GPU bench, {} adapter\n\n{}\n\n",
        opts.adapter,
        gpu_line()
    );
    for key in &opts.models {
        let model = resolve_model(key, &dir)?;
        let prompt = llamacpp_prompt(&model, &prompt_file, p, n, true);
        let mut rows = vec![quantweb_native_row(&model, p, n, Some(&opts.adapter))];
        for backend in ["vulkan", "cuda"] {
            rows.push(llamacpp_native_row(
                &model,
                &prompt_file,
                p,
                n,
                Some(backend),
            ));
        }
        let flags: &[&str] = if hardware { &CHROMIUM_GPU_FLAGS } else { &[] };
        let engines = ["quantweb", "wllama-webgpu"];
        match browser_rows(&model, &dir, p, n, prompt.as_ref(), &engines, flags) {
            Ok(browser) => {
                for mut r in browser {
                    let software = r.note.contains("swiftshader") || r.note.contains("SwiftShader");
                    if hardware && software && r.error.is_none() {
                        r.error = Some("Chromium found no hardware adapter (SwiftShader)".into());
                    }
                    rows.push(r);
                }
            }
            Err(e) => rows.push(Row {
                engine: "browser (headless Chromium)".into(),
                side: "browser",
                error: Some(e.to_string()),
                ..Row::default()
            }),
        }
        out.push_str(&render(p, n, &model, &rows));
        out.push('\n');
    }
    println!("\n{out}");
    let md = dir.join("gpu.md");
    fs::write(&md, &out)?;
    println!(
        "bench: wrote {} ({:.0} s in all)",
        md.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The GPUs `nvidia-smi` lists, with the driver, and the date: the heading of a GPU table.
fn gpu_line() -> String {
    let smi = Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,driver_version,memory.total",
            "--format=csv,noheader",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .replace('\n', "; ")
        });
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!(
        "{date}. GPU: {}. {}",
        smi.unwrap_or_else(|| "none found by nvidia-smi".into()),
        machine_line()
    )
}

// ---------------------------------------------------------------------------------------------
// The model

fn resolve_model(arg: &str, dir: &Path) -> Result<BenchModel> {
    let mdir = models::models_dir();
    match arg {
        "smollm2" => {
            models::fetch_model(&SMOLLM2)?;
            let f = SMOLLM2.files[0];
            Ok(BenchModel {
                key: "smollm2".into(),
                parts: vec![mdir.join(f)],
                single: mdir.join(f),
                parts_urls: vec![format!("/models/{f}")],
                single_url: format!("/models/{f}"),
            })
        }
        "gemma3" => {
            models::fetch_model(&GEMMA3)?;
            let parts: Vec<PathBuf> = GEMMA3.files.iter().map(|f| mdir.join(f)).collect();
            let name = GEMMA3.files[0].trim_end_matches(".part00");
            let single = dir.join(name);
            join_parts(&parts, &single, GEMMA3.size)?;
            Ok(BenchModel {
                key: "gemma3".into(),
                parts_urls: GEMMA3
                    .files
                    .iter()
                    .map(|f| format!("/models/{f}"))
                    .collect(),
                parts,
                single,
                single_url: format!("/fixtures/{name}"),
            })
        }
        path => {
            let file = repo_root().join(path);
            if !file.is_file() {
                return Err(format!(
                    "--model: {path} is neither smollm2, gemma3 nor a GGUF file \
                     (one file; for byte chunks or shards, join them first)"
                )
                .into());
            }
            let name = file
                .file_name()
                .and_then(|s| s.to_str())
                .ok_or("--model: the file name is not UTF-8")?
                .to_string();
            let key = name.trim_end_matches(".gguf").to_string();
            // Served from target/bench/ (at /fixtures/) through a link, unless it is in models/.
            let url = if file.parent() == Some(mdir.as_path()) {
                format!("/models/{name}")
            } else {
                let link = dir.join(&name);
                let _ = fs::remove_file(&link);
                let abs = fs::canonicalize(&file)?;
                #[cfg(unix)]
                std::os::unix::fs::symlink(&abs, &link)?;
                #[cfg(not(unix))]
                fs::copy(&abs, &link)?;
                format!("/fixtures/{name}")
            };
            Ok(BenchModel {
                key,
                parts: vec![file.clone()],
                single: file,
                parts_urls: vec![url.clone()],
                single_url: url,
            })
        }
    }
}

/// Concatenates byte chunks into one file, once (kept while its size is right and it is newer
/// than the chunks; fetch-models has verified the chunks' sha256).
fn join_parts(parts: &[PathBuf], out: &Path, size: u64) -> Result<()> {
    let newest = parts
        .iter()
        .filter_map(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
        .max();
    if let Ok(m) = fs::metadata(out) {
        if m.len() == size && m.modified().ok() >= newest {
            return Ok(());
        }
    }
    step(&format!(
        "bench: joining {} chunks into {}",
        parts.len(),
        out.display()
    ));
    let tmp = out.with_extension("gguf.tmp");
    let mut w = fs::File::create(&tmp)?;
    for p in parts {
        std::io::copy(&mut fs::File::open(p)?, &mut w)?;
    }
    drop(w);
    fs::rename(&tmp, out)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Native

fn oracle_dir() -> PathBuf {
    repo_root().join("tests").join("oracle")
}

fn oracle_installed() -> bool {
    oracle_dir()
        .join("node_modules/node-llama-cpp/package.json")
        .is_file()
}

/// node-llama-cpp in tests/oracle/node_modules (`npm ci` there when it is missing: ~730 MB).
fn ensure_oracle() -> Result<()> {
    if oracle_installed() {
        return Ok(());
    }
    step("bench: npm ci in tests/oracle (node-llama-cpp 3.21.1, prebuilt CPU binaries)");
    run_cmd(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            // Its postinstall would try to download or build llama.cpp if the prebuilt binary
            // did not load; the bench uses build: "never" instead.
            .env("NODE_LLAMA_CPP_SKIP_DOWNLOAD", "true")
            .current_dir(oracle_dir()),
        "npm ci in tests/oracle failed (network access to the npm registry is needed)",
    )
}

/// Runs tests/bench/native_llamacpp.mjs and parses the JSON on its last stdout line.
fn native_llamacpp(
    model: &BenchModel,
    prompt_file: &Path,
    p: u32,
    n: u32,
    tokenize_only: bool,
    gpu: Option<&str>,
) -> Result<Value> {
    let mut cmd = Command::new("node");
    cmd.arg(repo_root().join("tests/bench/native_llamacpp.mjs"))
        .arg("--model")
        .arg(&model.single)
        .arg("--prompt-file")
        .arg(prompt_file)
        .args(["-p", &p.to_string(), "-n", &n.to_string()])
        .args(["--threads", &THREADS.to_string()])
        .current_dir(repo_root())
        .stderr(Stdio::inherit());
    if tokenize_only {
        cmd.arg("--tokenize-only");
    }
    if let Some(backend) = gpu {
        cmd.args(["--gpu", backend]);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot start node: {e}"))?;
    if !out.status.success() {
        return Err(format!("native_llamacpp.mjs failed ({})", out.status).into());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    serde_json::from_str(last).map_err(|e| format!("native_llamacpp.mjs: bad JSON ({e})").into())
}

/// llama.cpp native on the CPU (2 threads), or with `gpu` ("vulkan", "cuda") every layer there.
fn llamacpp_native_row(
    model: &BenchModel,
    prompt_file: &Path,
    p: u32,
    n: u32,
    gpu: Option<&str>,
) -> Row {
    let on = gpu.map_or("CPU, 2 threads".to_string(), |g| g.to_uppercase());
    step(&format!("bench: llama.cpp native (node-llama-cpp, {on})"));
    let mut row = Row {
        engine: format!(
            "llama.cpp native {} (node-llama-cpp 3.21.1)",
            gpu.map_or("CPU".to_string(), |g| g.to_uppercase())
        ),
        side: "native",
        note: "RSS peak minus node's RSS before loading".into(),
        ..Row::default()
    };
    let res = ensure_oracle().and_then(|()| native_llamacpp(model, prompt_file, p, n, false, gpu));
    match res {
        Ok(j) => {
            row.load_s = num(&j, "load_s");
            row.prefill_tok_s = num(&j, "prefill_tok_s");
            row.decode_tok_s = num(&j, "decode_tok_s");
            row.peak_mb = num(&j, "peak_mem_mb");
            row.prompt_tokens = num(&j, "prompt_tokens");
            row.gen_tokens = num(&j, "gen_tokens");
            if let Some(d) = j
                .get("devices")
                .and_then(Value::as_array)
                .filter(|_| gpu.is_some())
            {
                let names: Vec<&str> = d.iter().filter_map(Value::as_str).collect();
                if names.is_empty() {
                    // The backend loaded but found no device: llama.cpp ran on the CPU.
                    row.engine.push_str(" → no GPU device, ran on the CPU");
                } else {
                    row.note = format!("{}; on {}", row.note, names.join(", "));
                }
            }
            println!(
                "llama.cpp native: load {:.2} s, prefill {:.1} tok/s, decode {:.1} tok/s",
                row.load_s.unwrap_or(f64::NAN),
                row.prefill_tok_s.unwrap_or(f64::NAN),
                row.decode_tok_s.unwrap_or(f64::NAN)
            );
        }
        Err(e) => {
            row.error = Some(match gpu {
                Some(g) => {
                    format!("the {g} backend did not load or run ({e}; its message is above)")
                }
                None => e.to_string(),
            })
        }
    }
    row
}

/// `quantweb bench`, on `adapter` ("gpu", "cpu": wgpu adapters, wgpu's choice when `None`), or
/// on its CPU engine with as many threads as llama.cpp ("cpu-engine").
fn quantweb_native_row(model: &BenchModel, p: u32, n: u32, adapter: Option<&str>) -> Row {
    let engine = match adapter {
        Some("cpu-engine") => format!("quantweb native CPU engine ({THREADS} threads)"),
        _ => "quantweb native (wgpu)".to_string(),
    };
    step(&format!("bench: {engine} (release CLI)"));
    let mut row = Row {
        engine,
        side: "native",
        is_quantweb: true,
        note: "load = process wall - prefill - decode (GPU init + load); whole-process RSS peak"
            .into(),
        ..Row::default()
    };
    match quantweb_native(model, p, n, adapter) {
        Ok((j, wall_s, peak)) => {
            if let Some(a) = j.get("adapter").and_then(Value::as_str) {
                row.note = format!("{}; adapter {a}", row.note);
            }
            let t = j.get("timings").cloned().unwrap_or(Value::Null);
            let ms = num(&t, "prefill_ms").unwrap_or(0.0) + num(&t, "decode_ms").unwrap_or(0.0);
            row.load_s = Some((wall_s - ms / 1000.0).max(0.0));
            row.prefill_tok_s = num(&t, "prefill_tok_s");
            row.decode_tok_s = num(&t, "decode_tok_s");
            row.peak_mb = peak;
            row.prompt_tokens = num(&j, "prompt_tokens");
            row.gen_tokens = num(&j, "generated_tokens");
        }
        Err(e) => row.error = Some(e.to_string()),
    }
    row
}

/// `quantweb bench PARTS -p P -n N --json`: (its JSON, process wall seconds, peak RSS in MB).
fn quantweb_native(
    model: &BenchModel,
    p: u32,
    n: u32,
    adapter: Option<&str>,
) -> Result<(Value, f64, Option<f64>)> {
    let root = repo_root();
    run_cmd(
        Command::new(cargo())
            .args(["build", "--release", "-p", "quantweb", "--bin", "quantweb"])
            .current_dir(&root),
        "the release build of the quantweb CLI failed: see the output above",
    )?;
    let exe = target_dir().join("release").join("quantweb");
    let start = Instant::now();
    let mut child = Command::new(&exe)
        .arg("bench")
        .args(&model.parts)
        .args(["-p", &p.to_string(), "-n", &n.to_string(), "--json"])
        .args(match adapter {
            Some("cpu-engine") => vec!["--backend=cpu".to_string(), format!("--threads={THREADS}")],
            Some(a) => vec![format!("--adapter={a}")],
            None => vec![],
        })
        .current_dir(&root)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    // VmHWM (peak RSS) only grows: the last value read before the process exits is its peak,
    // give or take the last 20 ms.
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_kb: Option<u64> = None;
    let status = loop {
        if let Some(kb) = fs::read_to_string(&status_path).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        }) {
            peak_kb = Some(kb);
        }
        if let Some(st) = child.try_wait()? {
            break st;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let wall = start.elapsed().as_secs_f64();
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(format!("`quantweb bench` failed ({status})").into());
    }
    let json: Value =
        serde_json::from_str(out.trim()).map_err(|e| format!("quantweb bench --json: {e}"))?;
    Ok((json, wall, peak_kb.map(|kb| kb as f64 / 1024.0)))
}

// ---------------------------------------------------------------------------------------------
// Browser

fn browser_rows(
    model: &BenchModel,
    dir: &Path,
    p: u32,
    n: u32,
    prompt: Option<&(Value, String)>,
    engines: &[&str],
    chromium_args: &[&str],
) -> Result<Vec<Row>> {
    let root = repo_root();
    let mut engines = engines.to_vec();
    let mut rows = Vec::new();
    if let Err(e) = wasm::build_wasm() {
        eprintln!("bench: build-wasm failed, no quantweb browser row: {e}");
        engines.retain(|e| !e.starts_with("quantweb"));
        rows.push(Row {
            engine: "quantweb (browser)".into(),
            side: "browser",
            is_quantweb: true,
            error: Some(format!("build-wasm failed: {e}")),
            ..Row::default()
        });
    }

    step(&format!(
        "bench: browser (headless Chromium): {}",
        engines.join(", ")
    ));
    // wllama's single-file ES module and its wasm, next to a blank page, served at /fixtures/.
    let wllama = root.join("node_modules/@wllama/wllama/esm");
    let wdir = dir.join("wllama");
    fs::create_dir_all(&wdir)?;
    for (from, to) in [
        ("index.js", "index.js"),
        ("wasm/wllama.wasm", "wllama.wasm"),
    ] {
        fs::copy(wllama.join(from), wdir.join(to)).map_err(|e| {
            format!(
                "{}: {e} (run `cargo xtask setup`: npm installs @wllama/wllama)",
                wllama.join(from).display()
            )
        })?;
    }
    fs::write(
        dir.join("bench.html"),
        "<!doctype html><meta charset=\"utf-8\"><title>quantweb bench</title>\n",
    )?;

    let config = serve::Config {
        fixtures: dir.to_path_buf(),
        ..serve::Config::repo(false)
    };
    let addr = serve::start("127.0.0.1", 0, config)?;
    let base = format!("http://127.0.0.1:{}", addr.port());
    let (ids, text) = match prompt {
        Some((ids, text)) => (ids.clone(), text.clone()),
        None => (Value::Null, PROMPT_TEXT.to_string()),
    };
    let quantweb_model = match model.parts_urls.as_slice() {
        [one] => json!(one),
        parts => json!(parts),
    };
    let cfg = json!({
        "base_url": base,
        "page": format!("{base}/fixtures/bench.html"),
        "wllama_js": "/fixtures/wllama/index.js",
        "wllama_wasm": "/fixtures/wllama/wllama.wasm",
        "quantweb_js": "/pkg/quantweb.js",
        // The CPU engine's build that Chromium's worker picks: relaxed SIMD.
        "quantweb_cpu_js": "/pkg-relaxed/quantweb.js",
        "quantweb_engine_js": "/quantweb.js",
        "model_url": model.single_url,
        "quantweb_model": quantweb_model,
        "prompt_text": text,
        "prompt_ids": ids,
        "p": p,
        "n": n,
        "threads": THREADS,
        "ctx": (p + n + 16).max(512),
        "engines": engines,
        "timeout_s": browser_timeout_s(),
        "chromium_args": chromium_args,
    })
    .to_string();
    let cfg_path = dir.join(format!("{}.browser-config.json", model.key));
    let out_path = dir.join(format!("{}.browser.json", model.key));
    fs::write(&cfg_path, cfg)?;
    let _ = fs::remove_file(&out_path);
    let chromium = std::env::var("CHROMIUM")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/usr/bin/chromium".into());
    run_cmd(
        Command::new("node")
            .arg(root.join("tests/bench/bench.mjs"))
            .arg(&cfg_path)
            .arg(&out_path)
            .env("CHROMIUM", &chromium)
            .current_dir(&root),
        "the browser bench failed: see the output above",
    )?;
    let out: Value = serde_json::from_str(&fs::read_to_string(&out_path)?)
        .map_err(|e| format!("{}: {e}", out_path.display()))?;
    let chromium_version = out.get("chromium").and_then(Value::as_str).unwrap_or("?");
    for r in out
        .get("results")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
    {
        let key = r.get("key").and_then(Value::as_str).unwrap_or("");
        let mut row = Row {
            engine: r
                .get("engine")
                .and_then(Value::as_str)
                .unwrap_or(key)
                .to_string(),
            side: "browser",
            is_quantweb: key.starts_with("quantweb"),
            load_s: num(r, "load_s"),
            prefill_tok_s: num(r, "prefill_tok_s"),
            decode_tok_s: num(r, "decode_tok_s"),
            peak_mb: num(r, "peak_mem_mb"),
            prompt_tokens: num(r, "prompt_tokens"),
            gen_tokens: num(r, "gen_tokens"),
            note: format!("Chromium {chromium_version}; RSS peak of all its processes"),
            ..Row::default()
        };
        if r.get("ok") != Some(&Value::Bool(true)) {
            row.error = Some(
                r.get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("failed")
                    .to_string(),
            );
        }
        if let Some(on) = r.get("weights_on").and_then(Value::as_str) {
            let threads = num(r, "threads").unwrap_or(0.0);
            let _ = write!(row.note, "; weights on {on}, {threads} thread(s)");
            // llama.cpp falls back to the CPU silently when ggml-webgpu finds no usable adapter.
            if key == "wllama-webgpu" && on == "CPU" {
                row.engine.push_str(" → fell back to CPU");
            }
        }
        if let Some(a) = r.get("adapter").and_then(Value::as_str) {
            let _ = write!(row.note, "; adapter {a}");
        }
        if r.get("finish_reason").and_then(Value::as_str) == Some("stop") {
            let _ = write!(row.note, "; stopped at an end-of-generation token");
        }
        if let (Some(w), Some(k)) = (num(r, "weight_mb"), num(r, "kv_mb")) {
            let _ = write!(row.note, "; weights {w:.0} MB + KV {k:.0} MB on the GPU");
        }
        rows.push(row);
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------------------------
// The table

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        _ => "—".into(),
    }
}

/// quantweb's rate divided by this row's, on the same side (browser or native).
fn ratio(q: Option<f64>, this: Option<f64>) -> String {
    match (q, this) {
        (Some(q), Some(t)) if q.is_finite() && t.is_finite() && t > 0.0 => format!("{:.2}", q / t),
        _ => "—".into(),
    }
}

fn render(p: u32, n: u32, model: &BenchModel, rows: &[Row]) -> String {
    let mut s = String::new();
    let machine = machine_line();
    let _ = writeln!(
        s,
        "## quantweb bench: {} (`{}`), prompt {} tokens, {} generated, greedy\n",
        model.key,
        model
            .single
            .strip_prefix(repo_root())
            .unwrap_or(&model.single)
            .display(),
        p,
        n
    );
    let _ = writeln!(s, "{machine}\n");
    let _ = writeln!(
        s,
        "| engine | load s | prefill tok/s | decode tok/s | peak mem MB | tokens p/n | prefill × | decode × |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        // The faster quantweb engine of the side: the one `backend: 'auto'` should pick here.
        let q = rows
            .iter()
            .filter(|x| x.is_quantweb && x.side == r.side && x.error.is_none())
            .max_by(|a, b| {
                a.decode_tok_s
                    .unwrap_or(0.0)
                    .total_cmp(&b.decode_tok_s.unwrap_or(0.0))
            });
        let (qp, qd) = (
            q.and_then(|q| q.prefill_tok_s),
            q.and_then(|q| q.decode_tok_s),
        );
        if let Some(e) = &r.error {
            let e: String = e.chars().take(160).collect();
            let _ = writeln!(
                s,
                "| {} | failed: {} | | | | | | |",
                r.engine,
                e.replace('|', "/")
            );
            continue;
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {}/{} | {} | {} |",
            r.engine,
            fmt_opt(r.load_s, 2),
            fmt_opt(r.prefill_tok_s, 1),
            fmt_opt(r.decode_tok_s, 1),
            fmt_opt(r.peak_mb, 0),
            fmt_opt(r.prompt_tokens, 0),
            fmt_opt(r.gen_tokens, 0),
            ratio(qp, r.prefill_tok_s),
            ratio(qd, r.decode_tok_s),
        );
    }
    s.push_str(
        "\n×: quantweb's tok/s divided by this row's, on the same side (browser rows against \
         quantweb in the browser, native rows against quantweb native; of quantweb's two engines, \
         the one that decodes faster here); above 1 means quantweb is faster.\n\n",
    );
    s.push_str(
        "- load s: browser: the engine's load call (fetch from the local server, parse, upload, \
         context); llama.cpp native: getLlama + loadModel + createContext; quantweb native: the \
         process's wall time minus prefill and decode (GPU init + load).\n\
         - prefill tok/s: prompt tokens / time to process them (wllama: llama.cpp's \
         prompt_per_second; llama.cpp native: prompt / time to the first sampled token).\n\
         - decode tok/s: one token per step (wllama: predicted_per_second; llama.cpp native: \
         (n-1) / time from the first to the last token).\n\
         - peak mem MB: browser: peak of the summed RSS of all Chromium processes (renderer, \
         GPU process holding SwiftShader's buffers, …) minus that on the blank page before the \
         load; llama.cpp native: the node process's peak RSS minus its RSS before loading; \
         quantweb native: the process's peak RSS (VmHWM), everything included.\n\
         - Each browser engine and llama.cpp native: one warm-up (short prompt, 2 tokens), then \
         one timed run; quantweb native: one run (`quantweb bench`). wllama and llama.cpp \
         ignore end-of-generation tokens; the tokens column shows what each engine really ran.\n",
    );
    for r in rows
        .iter()
        .filter(|r| !r.note.is_empty() && r.error.is_none())
    {
        let _ = writeln!(s, "- {}: {}", r.engine, r.note);
    }
    s
}

/// "2 CPUs (AMD EPYC …), load average 3.1 2.4 2.2 at the end".
fn machine_line() -> String {
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "?".into());
    let load = fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into());
    format!("Machine: {cpus} CPUs ({cpu}), load average {load} at the end of the run.")
}

/// The number at `key` of a JSON object.
fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key)?.as_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios() {
        assert_eq!(ratio(Some(20.0), Some(10.0)), "2.00");
        assert_eq!(ratio(Some(20.0), None), "—");
        assert_eq!(ratio(Some(20.0), Some(0.0)), "—");
        assert_eq!(fmt_opt(Some(1.234), 1), "1.2");
        assert_eq!(fmt_opt(None, 1), "—");
    }
}

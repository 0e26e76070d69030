//! `cargo xtask build-wasm`: the crate for wasm32 in release mode, bound with wasm-bindgen
//! (`--target web`), four times: single-threaded on the stable toolchain (www/pkg) and with
//! wasm threads (atomics on shared memory) on the pinned nightly (www/pkg-threads), each also
//! with relaxed SIMD (`-relaxed`). The page's worker picks the threaded build only on a
//! cross-origin isolated page that asks for more than one CPU thread, and the relaxed one
//! where the browser validates relaxed SIMD (ARCHITECTURE.md, "The CPU engine").

use std::path::Path;
use std::process::Command;

use crate::setup::{
    installed_wasm_bindgen_version, wasm_bindgen_bin, wasm_bindgen_version, THREADS_TOOLCHAIN,
    WASM_TARGET,
};
use crate::util::{cargo, repo_root, run_cmd, step, target_dir, Result};

/// The threaded build's flags. `atomics` makes std's locks wait on `memory.atomic.wait32`
/// (hence std rebuilt with it, `-Z build-std`); `bulk-memory` and `mutable-globals` are what
/// wasm-ld needs for shared memory and per-thread stacks. rustc no longer asks wasm-ld for a
/// shared, imported memory by itself, so the link arguments do, with the TLS exports that
/// wasm-bindgen's thread support uses; the maximum is wasm32's 4 GiB (a shared memory must
/// declare one). RUSTFLAGS replaces .cargo/config.toml's flags, so simd128 is repeated here.
const THREADS_RUSTFLAGS: &str =
    "-C target-feature=+atomics,+bulk-memory,+mutable-globals,+simd128 \
     -C link-arg=--shared-memory -C link-arg=--import-memory \
     -C link-arg=--max-memory=4294967296 \
     -C link-arg=--export=__wasm_init_tls -C link-arg=--export=__tls_size \
     -C link-arg=--export=__tls_align -C link-arg=--export=__tls_base";

/// .cargo/config.toml's flags for wasm32, and what the relaxed builds add: the CPU engine's
/// integer dot products and multiply-adds in one instruction each (cpu/simd128.rs).
const SINGLE_RUSTFLAGS: &str = "-C target-feature=+simd128";
const RELAXED_FEATURE: &str = " -C target-feature=+relaxed-simd";

pub fn build_wasm() -> Result<()> {
    step("build-wasm: cargo build (wasm32, release) + wasm-bindgen: single-threaded and threaded, each plain and with relaxed SIMD");
    let root = repo_root();
    let want = wasm_bindgen_version()?;
    match installed_wasm_bindgen_version() {
        Some(v) if v == want => {}
        got => {
            return Err(format!(
                "wasm-bindgen-cli {want} is needed (found {}); run `cargo xtask setup` first",
                got.unwrap_or_else(|| "none".into())
            )
            .into())
        }
    }
    let args = [
        "build",
        "-p",
        "quantweb",
        "--lib",
        "--release",
        "--target",
        WASM_TARGET,
    ];
    for relaxed in [false, true] {
        let suffix = if relaxed { "-relaxed" } else { "" };
        let extra = if relaxed { RELAXED_FEATURE } else { "" };
        // Each build its own target directory: other flags and another compiler would otherwise
        // make the builds rebuild each other's dependencies every time.
        let single_target = match relaxed {
            false => target_dir(),
            true => target_dir().join("wasm-relaxed"),
        };
        run_cmd(
            Command::new(cargo())
                .args(args)
                .env("RUSTFLAGS", format!("{SINGLE_RUSTFLAGS}{extra}"))
                .env("CARGO_TARGET_DIR", &single_target)
                .current_dir(&root),
            "the crate does not build for wasm32: fix the compile errors above \
             (or run `cargo xtask setup` if the wasm32 target is missing)",
        )?;
        bind(
            &single_target,
            &root.join("www").join(format!("pkg{suffix}")),
        )?;

        let threads_target = target_dir().join(format!("wasm-threads{suffix}"));
        run_cmd(
            Command::new("rustup")
                .args(["run", THREADS_TOOLCHAIN, "cargo"])
                .args(args)
                .args(["-Z", "build-std=panic_abort,std"])
                .env("RUSTFLAGS", format!("{THREADS_RUSTFLAGS}{extra}"))
                .env("CARGO_TARGET_DIR", &threads_target)
                // `cargo run` set these for the stable toolchain that runs us.
                .env_remove("CARGO")
                .env_remove("RUSTC")
                .env_remove("RUSTDOC")
                .current_dir(&root),
            &format!(
                "the threaded wasm build failed: run `cargo xtask setup` if toolchain \
                 {THREADS_TOOLCHAIN} (with rust-src and the wasm32 target) is missing"
            ),
        )?;
        bind(
            &threads_target,
            &root.join("www").join(format!("pkg-threads{suffix}")),
        )?;
    }
    Ok(())
}

/// wasm-bindgen `--target web` of `<target>/wasm32-unknown-unknown/release/quantweb.wasm` into
/// `out_dir` as quantweb.js + quantweb_bg.wasm.
fn bind(target: &Path, out_dir: &Path) -> Result<()> {
    let root = repo_root();
    let wasm = target
        .join(WASM_TARGET)
        .join("release")
        .join("quantweb.wasm");
    if !wasm.is_file() {
        return Err(format!("cargo succeeded but {} is missing", wasm.display()).into());
    }
    run_cmd(
        Command::new(wasm_bindgen_bin())
            .args(["--target", "web", "--out-dir"])
            .arg(out_dir)
            .args(["--out-name", "quantweb"])
            .arg(&wasm)
            .current_dir(&root),
        "wasm-bindgen failed: check that wasm-bindgen-cli matches the crate's wasm-bindgen version \
         (`cargo xtask setup`)",
    )?;
    let js = out_dir.join("quantweb.js");
    let bg = out_dir.join("quantweb_bg.wasm");
    let size = std::fs::metadata(&bg).map(|m| m.len()).unwrap_or(0);
    println!(
        "build-wasm: wrote {} and {} ({} KiB)",
        js.display(),
        bg.display(),
        size / 1024
    );
    Ok(())
}

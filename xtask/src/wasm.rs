//! `cargo xtask build-wasm`: the crate for wasm32 in release mode, bound with wasm-bindgen
//! (`--target web`) into www/pkg/quantweb.js + quantweb_bg.wasm.

use std::process::Command;

use crate::setup::{
    installed_wasm_bindgen_version, wasm_bindgen_bin, wasm_bindgen_version, WASM_TARGET,
};
use crate::util::{cargo, repo_root, run_cmd, step, target_dir, Result};

pub fn build_wasm() -> Result<()> {
    step("build-wasm: cargo build (wasm32, release) + wasm-bindgen");
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
    run_cmd(
        Command::new(cargo())
            .args([
                "build",
                "-p",
                "quantweb",
                "--lib",
                "--release",
                "--target",
                WASM_TARGET,
            ])
            .current_dir(&root),
        "the crate does not build for wasm32: fix the compile errors above \
         (or run `cargo xtask setup` if the wasm32 target is missing)",
    )?;
    let wasm = target_dir()
        .join(WASM_TARGET)
        .join("release")
        .join("quantweb.wasm");
    if !wasm.is_file() {
        return Err(format!("cargo succeeded but {} is missing", wasm.display()).into());
    }
    let out_dir = root.join("www").join("pkg");
    run_cmd(
        Command::new(wasm_bindgen_bin())
            .args(["--target", "web", "--out-dir"])
            .arg(&out_dir)
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

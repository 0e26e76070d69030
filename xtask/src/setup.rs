//! `cargo xtask setup`: idempotent installs of the wasm target, the pinned nightly for the
//! threaded wasm build (and `cargo xtask fuzz`), wasm-bindgen-cli and npm packages.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::util::{capture, cargo, repo_root, run_cmd, step, Result};

pub const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// The toolchain of the threaded wasm build (www/pkg-threads) and of `cargo xtask fuzz`: wasm
/// atomics need `-Z build-std` (std rebuilt with `+atomics`), libFuzzer's instrumentation
/// `-Z sanitizer`, which only a nightly takes. Pinned so
/// that a nightly regression cannot break the build; move it forward deliberately.
pub const THREADS_TOOLCHAIN: &str = "nightly-2026-05-20";

pub fn setup() -> Result<()> {
    step("setup: wasm target, pinned nightly (threaded wasm), wasm-bindgen-cli, npm packages");
    ensure_wasm_target()?;
    ensure_threads_toolchain()?;
    ensure_wasm_bindgen()?;
    ensure_npm_packages()?;
    println!("setup: everything is in place");
    Ok(())
}

fn ensure_wasm_target() -> Result<()> {
    let installed = capture("rustup", &["target", "list", "--installed"]).ok_or(
        "`rustup` was not found or failed; quantweb needs a rustup-managed toolchain \
         (https://rustup.rs) to add the wasm32-unknown-unknown target",
    )?;
    if installed.lines().any(|l| l.trim() == WASM_TARGET) {
        println!("rust target {WASM_TARGET}: installed");
        return Ok(());
    }
    run_cmd(
        Command::new("rustup").args(["target", "add", WASM_TARGET]),
        "check your network connection, or run `rustup target add wasm32-unknown-unknown` yourself",
    )
}

/// The pinned nightly with rust-src (for `-Z build-std`) and the wasm32 target; a minimal
/// profile, so no docs or clippy (about 80 MB).
pub fn ensure_threads_toolchain() -> Result<()> {
    let t = THREADS_TOOLCHAIN;
    let installed = |what: &str, want: &str| {
        capture("rustup", &[what, "list", "--installed", "--toolchain", t])
            .is_some_and(|out| out.lines().any(|l| l.trim().starts_with(want)))
    };
    if installed("target", WASM_TARGET) && installed("component", "rust-src") {
        println!("rust toolchain {t} (threaded wasm build): installed");
        return Ok(());
    }
    run_cmd(
        Command::new("rustup").args([
            "toolchain",
            "install",
            t,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
            "--target",
            WASM_TARGET,
        ]),
        &format!(
            "check your network connection, or run `rustup toolchain install {t} --profile minimal \
             --component rust-src --target {WASM_TARGET}` yourself"
        ),
    )
}

/// The `wasm-bindgen` version the crate is built with: the resolved version in Cargo.lock if
/// there is exactly one, else the `=x.y.z` pin in crate/Cargo.toml.
pub fn wasm_bindgen_version() -> Result<String> {
    let root = repo_root();
    if let Ok(lock) = fs::read_to_string(root.join("Cargo.lock")) {
        let versions = lock_versions(&lock, "wasm-bindgen");
        if versions.len() == 1 {
            return Ok(versions[0].clone());
        }
    }
    let manifest_path = root.join("crate/Cargo.toml");
    let manifest = fs::read_to_string(&manifest_path)
        .map_err(|e| format!("cannot read {}: {e}", manifest_path.display()))?;
    manifest_pin(&manifest, "wasm-bindgen").ok_or_else(|| {
        format!(
            "no exact `wasm-bindgen = \"=x.y.z\"` pin found in {}; wasm-bindgen-cli must match \
             the crate version exactly, so pin it there",
            manifest_path.display()
        )
        .into()
    })
}

/// Versions of package `name` in a Cargo.lock.
pub fn lock_versions(lock: &str, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = lock.lines();
    let want = format!("name = \"{name}\"");
    while let Some(l) = lines.next() {
        if l.trim() == want {
            if let Some(v) = lines
                .next()
                .and_then(|v| v.trim().strip_prefix("version = "))
            {
                out.push(v.trim_matches('"').to_string());
            }
        }
    }
    out
}

/// The exact version of dependency `name` in a Cargo.toml (`name = "=1.2.3"` or
/// `name = { version = "=1.2.3", ... }`); only `=` pins (or bare x.y.z) are accepted.
fn manifest_pin(manifest: &str, name: &str) -> Option<String> {
    for line in manifest.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let Some(rest) = rest.trim_start().strip_prefix('=') else {
            continue;
        };
        let rest = rest.trim_start();
        let spec = if rest.starts_with('{') {
            let i = rest.find("version")?;
            let after = rest[i + "version".len()..]
                .trim_start()
                .strip_prefix('=')?
                .trim_start();
            after.strip_prefix('"')?.split('"').next()?
        } else {
            rest.strip_prefix('"')?.split('"').next()?
        };
        let v = spec.trim().trim_start_matches('=').trim();
        if !v.is_empty()
            && v.split('.').count() == 3
            && v.chars().all(|c| c.is_ascii_digit() || c == '.')
        {
            return Some(v.to_string());
        }
    }
    None
}

/// The wasm-bindgen binary to use: cargo-install's copy in `$CARGO_HOME/bin` when present (that
/// is where `setup` puts it), else whatever `wasm-bindgen` is on PATH.
pub fn wasm_bindgen_bin() -> PathBuf {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(home) = cargo_home {
        let p = home.join("bin").join("wasm-bindgen");
        if p.is_file() {
            return p;
        }
    }
    PathBuf::from("wasm-bindgen")
}

/// `wasm-bindgen --version` → "0.2.130".
pub fn installed_wasm_bindgen_version() -> Option<String> {
    let out = capture(wasm_bindgen_bin(), &["--version"])?;
    out.split_whitespace().nth(1).map(str::to_string)
}

fn ensure_wasm_bindgen() -> Result<()> {
    let want = wasm_bindgen_version()?;
    match installed_wasm_bindgen_version() {
        Some(v) if v == want => {
            println!(
                "wasm-bindgen-cli {want}: installed ({})",
                wasm_bindgen_bin().display()
            );
            return Ok(());
        }
        Some(v) => {
            println!("wasm-bindgen-cli {v} is installed but the crate uses {want}: reinstalling")
        }
        None => println!("wasm-bindgen-cli not found: installing {want} (takes a few minutes)"),
    }
    // Not --locked: the CLI's own lock file pins crates the registry no longer serves.
    run_cmd(
        Command::new(cargo()).args(["install", "wasm-bindgen-cli", "--version", &want, "--force"]),
        &format!("run `cargo install wasm-bindgen-cli --version {want} --force` yourself and check its output"),
    )?;
    match installed_wasm_bindgen_version() {
        Some(v) if v == want => Ok(()),
        got => Err(format!(
            "after installing, `{} --version` reports {:?}, not {want}; make sure ~/.cargo/bin \
             comes first on PATH or remove the other wasm-bindgen",
            wasm_bindgen_bin().display(),
            got
        )
        .into()),
    }
}

/// Runs `npm ci` (or `npm install` without a lock file) unless node_modules already matches
/// package.json + package-lock.json (a stamp of their sha256 kept in node_modules/).
fn ensure_npm_packages() -> Result<()> {
    let root = repo_root();
    let pkg = root.join("package.json");
    if !pkg.is_file() {
        println!("npm: no package.json, nothing to install");
        return Ok(());
    }
    let lock = root.join("package-lock.json");
    let mut h = Sha256::new();
    h.update(fs::read(&pkg)?);
    if let Ok(l) = fs::read(&lock) {
        h.update(b"\0lock\0");
        h.update(l);
    }
    let want = format!("{:x}", h.finalize());
    let stamp = root.join("node_modules/.quantweb-npm-stamp");
    if fs::read_to_string(&stamp)
        .map(|s| s.trim() == want)
        .unwrap_or(false)
    {
        println!("npm packages: up to date");
        return Ok(());
    }
    if capture("npm", &["--version"]).is_none() {
        return Err(
            "`npm` was not found: install Node.js 20 or newer (with npm), then rerun".into(),
        );
    }
    let args: &[&str] = if lock.is_file() {
        &["ci", "--no-audit", "--no-fund"]
    } else {
        &["install", "--no-audit", "--no-fund"]
    };
    run_cmd(
        Command::new("npm").args(args).current_dir(&root),
        "check the npm output above (network access to the npm registry is needed)",
    )?;
    fs::create_dir_all(root.join("node_modules"))?;
    fs::write(&stamp, want)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins() {
        assert_eq!(
            manifest_pin("wasm-bindgen = \"=0.2.130\"\n", "wasm-bindgen").as_deref(),
            Some("0.2.130")
        );
        assert_eq!(
            manifest_pin("wasm-bindgen-futures = \"0.4\"\nwasm-bindgen = { version = \"=0.2.99\", default-features = false }", "wasm-bindgen")
                .as_deref(),
            Some("0.2.99")
        );
        assert_eq!(manifest_pin("wasm-bindgen = \"0.2\"", "wasm-bindgen"), None);
        let lock = "[[package]]\nname = \"wasm-bindgen\"\nversion = \"0.2.130\"\n\n[[package]]\nname = \"wasm-bindgen-futures\"\nversion = \"0.4.1\"\n";
        assert_eq!(
            lock_versions(lock, "wasm-bindgen"),
            vec!["0.2.130".to_string()]
        );
    }

    #[test]
    fn repo_pin_is_readable() {
        let v = wasm_bindgen_version().unwrap();
        assert_eq!(v.split('.').count(), 3, "{v}");
    }
}

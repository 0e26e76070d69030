//! `cargo xtask dist [--out DIR] [--index FILE] [--no-build]`: the page, the JS API, the worker,
//! the wasm builds and the `<quantweb-chat>` element as one static bundle that any static host
//! serves as it is: relative URLs only (so it works under a sub-path), no COOP/COEP needed (the
//! worker uses threads only when the page happens to be cross-origin isolated), and a strict
//! Content-Security-Policy (`script-src 'self' 'wasm-unsafe-eval'`) holds.
//!
//! Layout, so that almost everything can be cached forever:
//! ```text
//! q-<hash>/          www/'s scripts, styles, element and wasm builds; <hash>: the first 12 hex
//!                    digits of a SHA-256 over their relative paths and bytes. They refer to
//!                    each other relatively, so none is rewritten, and a changed byte anywhere
//!                    means a new directory.
//! quantweb-chat.js   the loader (www/widget/loader.js, its BASE pointed into q-<hash>/)
//! index.html         the page, its src/href pointed into q-<hash>/
//! manifest.json      version, directory, every file's size, gzip size and SHA-256
//! README.txt         what to upload and what to cache how
//! <index file>       with --index: the chat's retrieval index, kept at a stable name so that a
//!                    site's `data-index` attribute stays valid when the docs change
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::setup::lock_versions;
use crate::util::{repo_root, step, target_dir, www_dir, Result};
use crate::wasm;

/// The loader's name in the bundle, where a site's script tag points.
const LOADER: &str = "quantweb-chat.js";
/// The loader's source, relative to www/.
const LOADER_SRC: &str = "widget/loader.js";
/// The element module the loader imports, relative to www/.
const ELEMENT: &str = "widget/quantweb-chat.js";
/// The loader's line that dist points into the hashed directory; in www/ the loader sits next to
/// the element module.
const BASE_LINE: &str = "const BASE = './';";
/// What wasm-bindgen `--target web` writes that a browser loads (its `snippets/` too, when the
/// crate has inline JS); `quantweb_bg.wasm.d.ts` only types the raw exports for bundlers.
const PKG_FILES: [&str; 3] = ["quantweb.js", "quantweb_bg.wasm", "quantweb.d.ts"];
const PKG_DIRS: [&str; 4] = ["pkg", "pkg-relaxed", "pkg-threads", "pkg-threads-relaxed"];
/// Top-level names besides q-<hash>/ (and the --index file).
const TOP_LEVEL: [&str; 4] = [LOADER, "index.html", "manifest.json", "README.txt"];
/// What a strict CSP without 'unsafe-eval' refuses at run time.
const EVAL_CALLS: [&str; 2] = ["eval(", "new Function("];

pub struct Options {
    pub out: Option<PathBuf>,
    pub index: Option<PathBuf>,
    pub no_build: bool,
}

pub fn dist(opts: &Options) -> Result<()> {
    if !opts.no_build {
        wasm::build_wasm()?;
    }
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| target_dir().join("dist").join("quantweb"));
    step(&format!(
        "dist: bundling {} into {}",
        www_dir().display(),
        out.display()
    ));
    let manifest = bundle(&www_dir(), &out, opts.index.as_deref(), &crate_version()?)?;
    print_sizes(&manifest);
    println!(
        "\ndist: wrote {} (upload it as it is; {}/ can be cached forever, see README.txt)",
        out.display(),
        manifest.dir
    );
    Ok(())
}

/// The quantweb crate's version, from Cargo.lock.
fn crate_version() -> Result<String> {
    let path = repo_root().join("Cargo.lock");
    let lock =
        fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    match lock_versions(&lock, "quantweb").as_slice() {
        [v] => Ok(v.clone()),
        other => Err(format!(
            "{}: expected one quantweb package, found {other:?}",
            path.display()
        )
        .into()),
    }
}

#[derive(Debug)]
pub struct Manifest {
    pub version: String,
    /// `q-<hash>`
    pub dir: String,
    /// Everything in the bundle except manifest.json, by path relative to the bundle's root.
    pub files: Vec<FileEntry>,
}

#[derive(Debug)]
pub struct FileEntry {
    pub path: String,
    pub bytes: u64,
    pub gzip_bytes: u64,
    pub sha256: String,
}

impl Manifest {
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }

    pub fn total_gzip_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.gzip_bytes).sum()
    }

    fn to_json(&self) -> serde_json::Value {
        let files: Vec<_> = self
            .files
            .iter()
            .map(|f| {
                json!({"path": f.path, "bytes": f.bytes, "gzipBytes": f.gzip_bytes, "sha256": f.sha256})
            })
            .collect();
        json!({
            "version": self.version,
            "dir": self.dir,
            "files": files,
            "totalBytes": self.total_bytes(),
            "totalGzipBytes": self.total_gzip_bytes(),
        })
    }
}

/// Bundles the page source `www` into `out` (created, or replaced when it holds an earlier
/// bundle), with `index` (the chat's retrieval index) copied to the top level.
pub fn bundle(www: &Path, out: &Path, index: Option<&Path>, version: &str) -> Result<Manifest> {
    let files = collect(www)?;
    let page = read(&www.join("index.html"))?;
    let loader = read(&www.join(LOADER_SRC))?;
    check_csp("index.html", &page)?;
    check_csp(LOADER_SRC, &loader)?;
    for (path, bytes) in &files {
        check_csp(path, bytes)?;
    }
    let dir = format!("q-{}", &content_hash(&files)[..12]);

    let mut top: Vec<(String, Vec<u8>)> = vec![
        (LOADER.into(), point_loader(&loader, &dir)?.into_bytes()),
        (
            "index.html".into(),
            point_page(&page, &files, &dir)?.into_bytes(),
        ),
    ];
    if let Some(index) = index {
        let name = index
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("--index {}: not a file name", index.display()))?;
        if TOP_LEVEL.contains(&name) || name.starts_with("q-") {
            return Err(format!(
                "--index {}: its name clashes with the bundle's own files",
                index.display()
            )
            .into());
        }
        top.push((name.into(), read(index)?));
    }
    top.push((
        "README.txt".into(),
        readme(&dir, index.is_some()).into_bytes(),
    ));

    clear_out(out)?;
    let mut entries = Vec::new();
    for (path, bytes) in files
        .iter()
        .map(|(p, b)| (format!("{dir}/{p}"), b))
        .chain(top.iter().map(|(p, b)| (p.clone(), b)))
    {
        let dest = out.join(&path);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        fs::write(&dest, bytes).map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
        entries.push(FileEntry {
            path,
            bytes: bytes.len() as u64,
            gzip_bytes: gzip_len(bytes)?,
            sha256: format!("{:x}", Sha256::digest(bytes)),
        });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let manifest = Manifest {
        version: version.into(),
        dir,
        files: entries,
    };
    let json = serde_json::to_string_pretty(&manifest.to_json())? + "\n";
    fs::write(out.join("manifest.json"), json)?;
    Ok(manifest)
}

/// The files of www/ that go under q-<hash>/, by '/'-separated relative path: the JS API, the
/// page's scripts and styles, the element, and the two wasm builds. The page and the loader
/// are not among them: they go to the top level, pointed into q-<hash>/.
fn collect(www: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    for entry in read_dir(www)? {
        let name = entry.file_name().to_string_lossy().into_owned();
        let wanted = name.ends_with(".js") || name.ends_with(".css") || name == "quantweb.d.ts";
        if wanted && entry.path().is_file() {
            files.insert(name, read(&entry.path())?);
        }
    }
    for path in [LOADER_SRC, ELEMENT] {
        if !www.join(path).is_file() {
            return Err(format!(
                "{} is missing: the bundle needs the <quantweb-chat> element and its loader",
                www.join(path).display()
            )
            .into());
        }
    }
    add_tree(www, "widget", &mut files)?;
    files.remove(LOADER_SRC);
    for pkg in PKG_DIRS {
        for name in PKG_FILES {
            let path = www.join(pkg).join(name);
            if !path.is_file() {
                return Err(format!(
                    "{} is missing: run `cargo xtask build-wasm`",
                    path.display()
                )
                .into());
            }
            files.insert(format!("{pkg}/{name}"), read(&path)?);
        }
        if www.join(pkg).join("snippets").is_dir() {
            add_tree(www, &format!("{pkg}/snippets"), &mut files)?;
        }
    }
    Ok(files)
}

/// Every file under `www/rel`, recursively.
fn add_tree(www: &Path, rel: &str, files: &mut BTreeMap<String, Vec<u8>>) -> Result<()> {
    for entry in read_dir(&www.join(rel))? {
        let path = format!("{rel}/{}", entry.file_name().to_string_lossy());
        if entry.path().is_dir() {
            add_tree(www, &path, files)?;
        } else {
            files.insert(path, read(&entry.path())?);
        }
    }
    Ok(())
}

/// SHA-256 over each file's path, a NUL, its length and its bytes, in path order: the lengths
/// keep one file's tail from passing for the next file's name.
fn content_hash(files: &BTreeMap<String, Vec<u8>>) -> String {
    let mut h = Sha256::new();
    for (path, bytes) in files {
        h.update(path.as_bytes());
        h.update([0]);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    format!("{:x}", h.finalize())
}

/// Refuses what `script-src 'self' 'wasm-unsafe-eval'` would block at run time: eval and the
/// Function constructor in scripts, inline scripts in pages. A grep, so a method merely named
/// like `retrieval(` passes but a comment quoting `eval(` does not.
fn check_csp(path: &str, bytes: &[u8]) -> Result<()> {
    let text = String::from_utf8_lossy(bytes);
    if path.ends_with(".js") {
        for call in EVAL_CALLS {
            let called = text.match_indices(call).any(|(i, _)| {
                !text[..i]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$')
            });
            if called {
                return Err(format!(
                    "{path} contains `{call}`: a Content-Security-Policy of \
                     script-src 'self' 'wasm-unsafe-eval' refuses it"
                )
                .into());
            }
        }
    }
    if path.ends_with(".html") {
        let lower = text.to_ascii_lowercase();
        for (i, _) in lower.match_indices("<script") {
            let tag = &lower[i..lower[i..].find('>').map_or(lower.len(), |e| i + e)];
            if !tag.split_ascii_whitespace().any(|a| a.starts_with("src=")) {
                return Err(format!(
                    "{path} has an inline <script> (no src): a Content-Security-Policy of \
                     script-src 'self' refuses it; move it into a .js file"
                )
                .into());
            }
        }
    }
    Ok(())
}

/// The loader with BASE pointed at `dir`'s copy of the element module.
fn point_loader(loader: &[u8], dir: &str) -> Result<String> {
    let text = String::from_utf8_lossy(loader);
    match text.matches(BASE_LINE).count() {
        1 => Ok(text.replace(BASE_LINE, &format!("const BASE = './{dir}/widget/';"))),
        n => Err(format!(
            "{LOADER_SRC}: expected the line `{BASE_LINE}` once, found it {n} times; \
             dist points it into the bundle's hashed directory"
        )
        .into()),
    }
}

/// The page with every relative src/href pointed into `dir`. Each one must name a bundled
/// file, and all must be double-quoted, so that a reference this rewrite does not understand
/// fails here instead of breaking the page on the host.
fn point_page(page: &[u8], files: &BTreeMap<String, Vec<u8>>, dir: &str) -> Result<String> {
    let html = String::from_utf8_lossy(page).into_owned();
    let lower = html.to_ascii_lowercase();
    let mut out = String::with_capacity(html.len() + 256);
    let mut copied = 0;
    let mut pointed = 0;
    let mut at = 0;
    while let Some(attr) = next_url_attr(&lower, at) {
        let start = attr + lower[attr..].find('=').map_or(0, |e| e + 1);
        if !html[start..].starts_with('"') {
            return Err(format!(
                "index.html: only double-quoted src/href values are understood, at `{}`",
                &html[attr..(attr + 40).min(html.len())]
            )
            .into());
        }
        let value_start = start + 1;
        let value_end = value_start
            + html[value_start..]
                .find('"')
                .ok_or("index.html: an unterminated src/href value")?;
        let value = &html[value_start..value_end];
        at = value_end;
        let scheme = value.split('/').next().unwrap_or("").contains(':');
        if value.is_empty() || scheme || value.starts_with(['/', '#', '?']) {
            continue;
        }
        let file = value.strip_prefix("./").unwrap_or(value);
        if !files.contains_key(file) {
            return Err(format!(
                "index.html refers to `{value}`, which the bundle does not contain"
            )
            .into());
        }
        out.push_str(&html[copied..value_start]);
        out.push_str(&format!("{dir}/{file}"));
        copied = value_end;
        pointed += 1;
    }
    if pointed == 0 {
        return Err(
            "index.html: found no src/href to point into the bundle; has the page changed?".into(),
        );
    }
    out.push_str(&html[copied..]);
    Ok(out)
}

/// Where the next ` src=` or ` href=` attribute begins (after the whitespace), from `from` on.
fn next_url_attr(lower: &str, from: usize) -> Option<usize> {
    ["src=", "href="]
        .iter()
        .filter_map(|name| {
            lower[from..]
                .match_indices(name)
                .map(|(i, _)| from + i)
                .find(|&i| {
                    lower[..i]
                        .chars()
                        .next_back()
                        .is_some_and(|c| c.is_ascii_whitespace())
                })
        })
        .min()
}

fn readme(dir: &str, index: bool) -> String {
    let index = if index { ", the index file" } else { "" };
    format!(
        "Upload this whole directory as it is to any static host; no special headers are needed.\n\
         Cache {dir}/ forever (Cache-Control: public, max-age=31536000, immutable): its name is a hash of its content.\n\
         Cache quantweb-chat.js, index.html, manifest.json{index} and README.txt briefly (no-cache): they point into {dir}/.\n\
         A chat on any page: <script src=\"PATH/quantweb-chat.js\" data-model=\"URL of a .gguf\"></script>. index.html is the full quantweb page.\n"
    )
}

/// Empties `out` for a new bundle, refusing a directory that holds anything but an earlier one.
fn clear_out(out: &Path) -> Result<()> {
    if out.exists() {
        let empty = fs::read_dir(out)?.next().is_none();
        if !empty && !out.join("manifest.json").is_file() {
            return Err(format!(
                "{} is not empty and holds no earlier bundle (no manifest.json): not replacing it",
                out.display()
            )
            .into());
        }
        fs::remove_dir_all(out).map_err(|e| format!("cannot remove {}: {e}", out.display()))?;
    }
    fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()).into())
}

fn gzip_len(bytes: &[u8]) -> Result<u64> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    gz.write_all(bytes)?;
    Ok(gz.finish()?.len() as u64)
}

/// The biggest files and the totals, in KiB.
fn print_sizes(m: &Manifest) {
    let kib = |b: u64| format!("{:.1}", b as f64 / 1024.0);
    let mut biggest: Vec<&FileEntry> = m.files.iter().collect();
    biggest.sort_by_key(|f| std::cmp::Reverse(f.bytes));
    println!("\n{:>10} {:>10}  file (KiB)", "bytes", "gzip");
    for f in biggest.iter().take(10) {
        println!("{:>10} {:>10}  {}", kib(f.bytes), kib(f.gzip_bytes), f.path);
    }
    println!(
        "{:>10} {:>10}  total, {} files (quantweb {})",
        kib(m.total_bytes()),
        kib(m.total_gzip_bytes()),
        m.files.len(),
        m.version
    );
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()).into())
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    let entries = fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    Ok(entries.collect::<std::io::Result<Vec<_>>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r##"<!doctype html>
<html><head>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="style.css">
<script type="module" src="app.js"></script>
</head><body><a href="#top">top</a> <a href="https://example.com/">out</a></body></html>
"##;

    /// A www/ tree shaped like the real one, with the real loader, plus files dist must leave out.
    fn www() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let files: &[(&str, &[u8])] = &[
            ("index.html", PAGE.as_bytes()),
            ("app.js", b"import { inspect } from './quantweb.js';\n"),
            (
                "quantweb.js",
                b"import init from './pkg/quantweb.js'; // retrieval(x)\n",
            ),
            (
                "quantweb.d.ts",
                b"export declare function inspect(): void;\n",
            ),
            ("worker.js", b"self.onmessage = () => {};\n"),
            ("style.css", b"body { margin: 0 }\n"),
            (LOADER_SRC, include_bytes!("../../www/widget/loader.js")),
            (
                ELEMENT,
                b"customElements.define('quantweb-chat', class extends HTMLElement {});\n",
            ),
            ("widget/chat.css", b":host { display: block }\n"),
            ("notes.txt", b"not for the host\n"),
            ("pkg/quantweb.js", b"export default function init() {}\n"),
            ("pkg/quantweb_bg.wasm", b"\0asm\x01\0\0\0"),
            (
                "pkg/quantweb.d.ts",
                b"export default function init(): void;\n",
            ),
            (
                "pkg/quantweb_bg.wasm.d.ts",
                b"export const memory: WebAssembly.Memory;\n",
            ),
            ("pkg/package.json", b"{}\n"),
            (
                "pkg-threads/quantweb.js",
                b"export default function init() {}\n",
            ),
            ("pkg-threads/quantweb_bg.wasm", b"\0asm\x01\0\0\0threads"),
            (
                "pkg-threads/quantweb.d.ts",
                b"export default function init(): void;\n",
            ),
            (
                "pkg-relaxed/quantweb.js",
                b"export default function init() {}\n",
            ),
            ("pkg-relaxed/quantweb_bg.wasm", b"\0asm\x01\0\0\0relaxed"),
            (
                "pkg-relaxed/quantweb.d.ts",
                b"export default function init(): void;\n",
            ),
            (
                "pkg-threads-relaxed/quantweb.js",
                b"export default function init() {}\n",
            ),
            (
                "pkg-threads-relaxed/quantweb_bg.wasm",
                b"\0asm\x01\0\0\0threads relaxed",
            ),
            (
                "pkg-threads-relaxed/quantweb.d.ts",
                b"export default function init(): void;\n",
            ),
        ];
        for (path, bytes) in files {
            let p = dir.path().join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, bytes).unwrap();
        }
        dir
    }

    fn out() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn err(r: Result<Manifest>) -> String {
        r.expect_err("dist should have refused this tree")
            .to_string()
    }

    fn text(dir: &Path, path: &str) -> String {
        fs::read_to_string(dir.join(path)).unwrap()
    }

    #[test]
    fn bundle_holds_exactly_the_hosted_files_and_the_manifest_adds_them_up() {
        let (www, out) = (www(), out());
        let m = bundle(www.path(), out.path(), None, "1.2.3").unwrap();
        assert!(m.dir.starts_with("q-") && m.dir.len() == 14, "{}", m.dir);
        let hashed = [
            "app.js",
            "pkg-relaxed/quantweb.d.ts",
            "pkg-relaxed/quantweb.js",
            "pkg-relaxed/quantweb_bg.wasm",
            "pkg-threads-relaxed/quantweb.d.ts",
            "pkg-threads-relaxed/quantweb.js",
            "pkg-threads-relaxed/quantweb_bg.wasm",
            "pkg-threads/quantweb.d.ts",
            "pkg-threads/quantweb.js",
            "pkg-threads/quantweb_bg.wasm",
            "pkg/quantweb.d.ts",
            "pkg/quantweb.js",
            "pkg/quantweb_bg.wasm",
            "quantweb.d.ts",
            "quantweb.js",
            "style.css",
            "widget/chat.css",
            "widget/quantweb-chat.js",
            "worker.js",
        ];
        let mut want: Vec<String> = hashed.iter().map(|p| format!("{}/{p}", m.dir)).collect();
        want.extend(["README.txt", "index.html", "quantweb-chat.js"].map(String::from));
        want.sort();
        let got: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(got, want);

        for f in &m.files {
            let bytes = fs::read(out.path().join(&f.path)).unwrap();
            assert_eq!(f.bytes, bytes.len() as u64, "{}", f.path);
            assert_eq!(
                f.sha256,
                format!("{:x}", Sha256::digest(&bytes)),
                "{}",
                f.path
            );
            assert!(f.gzip_bytes > 0, "{}", f.path);
        }
        let json: serde_json::Value =
            serde_json::from_str(&text(out.path(), "manifest.json")).unwrap();
        assert_eq!(json["version"], "1.2.3");
        assert_eq!(json["dir"], m.dir.as_str());
        assert_eq!(json["files"].as_array().unwrap().len(), m.files.len());
        let sum = |key: &str| -> u64 {
            json["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f[key].as_u64().unwrap())
                .sum()
        };
        assert_eq!(json["totalBytes"].as_u64().unwrap(), sum("bytes"));
        assert_eq!(json["totalGzipBytes"].as_u64().unwrap(), sum("gzipBytes"));
        assert_eq!(sum("bytes"), m.total_bytes());
        // What a static host sends for the biggest (gzip-compressible) files is smaller.
        let page = m.files.iter().find(|f| f.path == "index.html").unwrap();
        assert!(page.gzip_bytes < page.bytes);
        assert!(text(out.path(), "README.txt").contains(&m.dir));
    }

    #[test]
    fn the_hash_is_stable_and_changes_with_any_bundled_byte() {
        let www = www();
        let dir = |w: &Path| bundle(w, out().path(), None, "0").unwrap().dir;
        let first = dir(www.path());
        assert_eq!(dir(www.path()), first);
        // Files dist leaves out do not count.
        fs::write(www.path().join("pkg/package.json"), b"{\"x\":1}\n").unwrap();
        fs::write(www.path().join("notes.txt"), b"changed\n").unwrap();
        assert_eq!(dir(www.path()), first);
        let wasm = www.path().join("pkg-threads/quantweb_bg.wasm");
        let mut bytes = fs::read(&wasm).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        fs::write(&wasm, bytes).unwrap();
        assert_ne!(dir(www.path()), first);
    }

    #[test]
    fn the_loader_imports_the_element_from_the_hashed_directory() {
        let (www, out) = (www(), out());
        let m = bundle(www.path(), out.path(), None, "0").unwrap();
        let loader = text(out.path(), LOADER);
        assert!(
            loader.contains(&format!("const BASE = './{}/widget/';", m.dir)),
            "{loader}"
        );
        assert!(!loader.contains(BASE_LINE));
        assert!(out.path().join(&m.dir).join(ELEMENT).is_file());
        assert!(!out.path().join(&m.dir).join(LOADER_SRC).exists());

        let src = text(www.path(), LOADER_SRC);
        fs::write(
            www.path().join(LOADER_SRC),
            src.replace(BASE_LINE, "const BASE = '.';"),
        )
        .unwrap();
        assert!(err(bundle(www.path(), out.path(), None, "0")).contains("found it 0 times"));
        fs::write(www.path().join(LOADER_SRC), format!("{src}\n{BASE_LINE}\n")).unwrap();
        assert!(err(bundle(www.path(), out.path(), None, "0")).contains("found it 2 times"));
    }

    #[test]
    fn the_page_points_into_the_hashed_directory_and_unknown_references_fail() {
        let (www, out) = (www(), out());
        let m = bundle(www.path(), out.path(), None, "0").unwrap();
        let page = text(out.path(), "index.html");
        let want = PAGE
            .replace(
                "href=\"style.css\"",
                &format!("href=\"{}/style.css\"", m.dir),
            )
            .replace("src=\"app.js\"", &format!("src=\"{}/app.js\"", m.dir));
        assert_eq!(page, want);

        let html = www.path().join("index.html");
        fs::write(&html, PAGE.replace("app.js", "main.js")).unwrap();
        assert!(err(bundle(www.path(), out.path(), None, "0"))
            .contains("`main.js`, which the bundle does not contain"));
        fs::write(&html, PAGE.replace("src=\"app.js\"", "src='app.js'")).unwrap();
        assert!(err(bundle(www.path(), out.path(), None, "0")).contains("only double-quoted"));
        fs::write(&html, "<!doctype html><p>nothing</p>").unwrap();
        assert!(err(bundle(www.path(), out.path(), None, "0")).contains("no src/href"));
    }

    #[test]
    fn what_a_strict_csp_refuses_is_refused_by_name() {
        let www = www();
        let element = www.path().join(ELEMENT);
        fs::write(&element, b"const f = new Function('return 1');\n").unwrap();
        let e = err(bundle(www.path(), out().path(), None, "0"));
        assert!(
            e.contains("widget/quantweb-chat.js contains `new Function(`"),
            "{e}"
        );
        fs::write(&element, b"const x = eval('1');\n").unwrap();
        let e = err(bundle(www.path(), out().path(), None, "0"));
        assert!(
            e.contains("widget/quantweb-chat.js contains `eval(`"),
            "{e}"
        );
        fs::write(&element, b"retrieval(q); doc.medieval(1);\n").unwrap();
        bundle(www.path(), out().path(), None, "0").unwrap();

        let html = www.path().join("index.html");
        fs::write(
            &html,
            PAGE.replace("</head>", "<script>console.log(1)</script></head>"),
        )
        .unwrap();
        let e = err(bundle(www.path(), out().path(), None, "0"));
        assert!(e.contains("index.html has an inline <script>"), "{e}");
    }

    #[test]
    fn missing_builds_or_element_are_named() {
        let www = www();
        fs::remove_dir_all(www.path().join("pkg")).unwrap();
        let e = err(bundle(www.path(), out().path(), None, "0"));
        assert!(
            e.contains("pkg/quantweb.js is missing: run `cargo xtask build-wasm`"),
            "{e}"
        );

        let www = self::www();
        fs::remove_file(www.path().join(ELEMENT)).unwrap();
        let e = err(bundle(www.path(), out().path(), None, "0"));
        assert!(e.contains("widget/quantweb-chat.js is missing"), "{e}");
    }

    #[test]
    fn the_index_sits_at_the_top_and_an_earlier_bundle_is_replaced() {
        let (www, out) = (www(), out());
        let index = tempfile::tempdir().unwrap();
        let docs = index.path().join("docs-index.json");
        fs::write(&docs, b"{\"chunks\":[]}\n").unwrap();

        let first = bundle(www.path(), out.path(), None, "0").unwrap();
        fs::write(www.path().join("app.js"), b"// changed\n").unwrap();
        let m = bundle(www.path(), out.path(), Some(&docs), "0").unwrap();
        assert!(m.files.iter().any(|f| f.path == "docs-index.json"));
        assert_eq!(text(out.path(), "docs-index.json"), "{\"chunks\":[]}\n");
        assert!(
            !out.path().join(&first.dir).exists(),
            "the earlier hashed directory is gone"
        );

        let clash = index.path().join("index.html");
        fs::write(&clash, b"x").unwrap();
        assert!(err(bundle(www.path(), out.path(), Some(&clash), "0")).contains("clashes"));

        let other = tempfile::tempdir().unwrap();
        fs::write(other.path().join("precious.txt"), b"x").unwrap();
        assert!(
            err(bundle(www.path(), other.path(), None, "0")).contains("holds no earlier bundle")
        );
        assert!(other.path().join("precious.txt").is_file());
    }

    /// The page's own scripts and pages, as they are in the repository, pass the CSP checks (the
    /// wasm-bindgen glue is checked when dist runs).
    #[test]
    fn the_repository_pages_pass_the_csp_checks() {
        let www = www_dir();
        let mut checked = 0;
        for entry in read_dir(&www)
            .unwrap()
            .into_iter()
            .chain(read_dir(&www.join("widget")).unwrap())
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".js") || name.ends_with(".html") {
                check_csp(&name, &fs::read(entry.path()).unwrap()).unwrap();
                checked += 1;
            }
        }
        assert!(
            checked >= 5,
            "checked only {checked} files in {}",
            www.display()
        );
    }
}

//! `quantweb index` on a small site written here, with the chrome of mdBook and MkDocs around
//! its content: which pages and sections it keeps, their URLs, anchors and text, the postings,
//! the CLI end to end; and tokenizer v1 against tests/docsite/tokenize-cases.json, which
//! www/widget/retrieve.js is checked against too (tests/browser/retrieve.test.mjs).

use quantweb::site_index::{index_site, tokenize, SiteIndex};
use quantweb::Error;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A directory under the cargo target tmpdir, removed when dropped (also on a failed assert).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("site-index-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, path: &str, html: &str) {
        let path = self.0.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, html).unwrap();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Words that only the chrome around the content holds: none may reach the index.
const CHROME_WORDS: [&str; 9] = [
    "navword",
    "sidebarword",
    "headerword",
    "footerword",
    "menuword",
    "chapterword",
    "scriptword",
    "searchword",
    "¶",
];

fn long_text() -> String {
    (0..700).map(|i| format!("word{i} ")).collect()
}

/// A site of three indexed pages and three that are left out.
fn site(name: &str) -> TempDir {
    let dir = TempDir::new(name);
    // MkDocs Material: header, sidebars and footer around <main>, ¶ permalinks in headings.
    dir.write(
        "index.html",
        r##"<!doctype html><html><head><title> Home - MySite </title>
<meta name="robots" content="index, follow"><script>var scriptword = 1;</script></head><body>
<header class="md-header">headerword MySite</header>
<div class="md-sidebar md-sidebar--primary"><ul><li><a href="install.html">sidebarword Install</a></li></ul></div>
<main class="md-main"><div class="md-content"><article class="md-content__inner">
<h1 id="welcome">Welcome<a class="headerlink" href="#welcome" title="Permanent link">¶</a></h1>
<h2 id="features">Features<a class="headerlink" href="#features">¶</a></h2>
<p>Runs fast.</p>
<h2 id="details">Details <a class="headerlink" href="#details">¶</a></h2>
<p>Before the <em>h4</em>.</p>
<h4 id="fine-print">Fine print</h4>
<p>Inside the details section.</p>
<form role="search"><input placeholder="searchword"><button>searchword</button></form>
</article></div></main>
<footer class="md-footer">footerword Made with MkDocs</footer>
</body></html>"##,
    );
    // mdBook: sidebar, menu bar and chapter arrows; heading ids on <a> inside the headings.
    dir.write(
        "guide/index.html",
        &format!(
            r##"<!DOCTYPE html><html><head><title>Guide - My Book</title></head><body>
<nav id="sidebar" class="sidebar" aria-label="Table of contents"><ol class="chapter"><li>sidebarword Guide</li></ol></nav>
<div id="page-wrapper"><div class="page">
<div id="menu-bar" class="menu-bar"><h1 class="menu-title">menuword My Book</h1><button>menuword</button></div>
<div id="content" class="content"><main>
<h1 id="guide"><a class="header" href="#guide">Guide</a></h1>
<p>The guide walks through a <code>first   run</code>.</p>
<pre><code>cargo install quantweb
quantweb index site/
</code></pre>
<h2><a class="header" href="#long-section" id="long-section">Long section</a></h2>
<p>{}</p>
<a id="wrapped"><h3>Wrapped heading</h3></a>
<table><tr><td>cell one</td><td>cell two</td></tr></table>
<nav class="nav-chapters">chapterword next</nav>
</main><nav class="nav-wrapper" aria-label="Page navigation"><a class="mobile-nav-chapters">chapterword</a></nav>
</div></div></div></body></html>"##,
            long_text()
        ),
    );
    // No <title>: the first h1 is the title. Text before the first heading is a section.
    dir.write(
        "install.html",
        r#"<html><body><nav>navword Home</nav>
<div role="main"><p>Lead text before any heading.</p>
<h1>Install <span aria-hidden="true">navword</span></h1>
<h2 id="requirements">Requirements</h2><p>A GPU with WebGPU.</p>
<h3 id="empty">Empty</h3>
</div></body></html>"#,
    );
    dir.write(
        "404.html",
        "<html><body><main><h1>Not found</h1><p>missingpage</p></main></body></html>",
    );
    dir.write(
        "drafts/private.html",
        r#"<html><head><meta name="ROBOTS" content="NOINDEX, nofollow"></head>
<body><main><p>secretword</p></main></body></html>"#,
    );
    dir.write(
        "nav-only.html",
        "<html><body><nav>navword</nav><main><footer>footerword</footer></main></body></html>",
    );
    dir
}

fn sections_of(index: &SiteIndex) -> Vec<(&str, &str, &str, &str)> {
    index
        .sections
        .iter()
        .map(|s| {
            (
                s.url.as_str(),
                s.anchor.as_str(),
                s.title.as_str(),
                s.heading.as_str(),
            )
        })
        .collect()
}

#[test]
fn pages_are_cut_into_sections_without_chrome() {
    let dir = site("sections");
    let indexed = index_site(&dir.0, None).unwrap();
    assert_eq!(indexed.pages, 3);
    let index = &indexed.index;
    let long = ("guide/", "long-section", "Guide - My Book", "Long section");
    assert_eq!(
        sections_of(index),
        [
            ("guide/", "guide", "Guide - My Book", "Guide"),
            long,
            long,
            long,
            ("guide/", "wrapped", "Guide - My Book", "Wrapped heading"),
            ("./", "features", "Home - MySite", "Features"),
            ("./", "details", "Home - MySite", "Details"),
            ("install.html", "", "Install", ""),
            ("install.html", "requirements", "Install", "Requirements"),
        ]
    );
    let text: Vec<&str> = index.sections.iter().map(|s| s.text.as_str()).collect();
    assert_eq!(
        text[0],
        "The guide walks through a first run.\ncargo install quantweb\nquantweb index site/"
    );
    assert_eq!(text[4], "cell one cell two");
    assert_eq!(text[5], "Runs fast.");
    assert_eq!(
        text[6],
        "Before the h4.\nFine print\nInside the details section."
    );
    assert_eq!(text[7], "Lead text before any heading.");
    assert_eq!(text[8], "A GPU with WebGPU.");

    // 700 words in three parts of at most 300, in order, none lost.
    let parts: Vec<Vec<&str>> = text[1..4]
        .iter()
        .map(|t| t.split_whitespace().collect())
        .collect();
    assert!(
        parts.iter().all(|p| p.len() <= 300),
        "{:?}",
        parts.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert_eq!(parts.concat().join(" "), long_text().trim_end());

    for s in &index.sections {
        for word in CHROME_WORDS {
            assert!(
                !s.text.contains(word) && !s.heading.contains(word),
                "{word:?} in {s:?}"
            );
        }
    }
    for skipped in ["missingpage", "secretword"] {
        assert!(index.postings.keys().all(|t| t != skipped), "{skipped}");
    }
}

#[test]
fn postings_count_heading_twice_and_title_once() {
    let dir = site("postings");
    let index = index_site(&dir.0, Some("/docs/".into())).unwrap().index;
    assert_eq!(index.base.as_deref(), Some("/docs/"));
    // "Features" under "Home - MySite", text "Runs fast.":
    // features ×2, home, mysite, runs, fast.
    let features = index
        .sections
        .iter()
        .position(|s| s.anchor == "features")
        .unwrap() as u32;
    assert_eq!(index.lengths[features as usize], 6);
    let tf = |term: &str| {
        let p = &index.postings[term];
        p.chunks(2).find(|c| c[0] == features).map(|c| c[1])
    };
    assert_eq!(
        [
            tf("features"),
            tf("home"),
            tf("mysite"),
            tf("runs"),
            tf("fast")
        ],
        [Some(2), Some(1), Some(1), Some(1), Some(1)]
    );

    let mut sums = vec![0; index.sections.len()];
    for (term, list) in &index.postings {
        assert_eq!(list.len() % 2, 0, "{term}");
        let ids: Vec<u32> = list.chunks(2).map(|c| c[0]).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{term}: {ids:?}");
        for c in list.chunks(2) {
            assert!(c[1] > 0, "{term}");
            sums[c[0] as usize] += c[1];
        }
    }
    assert_eq!(sums, index.lengths);
}

#[test]
fn tokenizer_v1_cases() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/docsite/tokenize-cases.json");
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(cases.len() >= 12);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let expected: Vec<&str> = case["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(tokenize(text), expected, "{text:?}");
    }
}

fn quantweb(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_quantweb"))
        .arg("index")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn cli_writes_the_index() {
    let dir = site("cli");
    let out = dir.0.join("out/index.json");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let run = quantweb(&[
        dir.0.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "--base-url".as_ref(),
        "/docs/".as_ref(),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let bytes = std::fs::read(&out).unwrap();
    assert!(
        stderr.contains("3 pages in 9 sections")
            && stderr.contains(&format!("({} bytes)", bytes.len())),
        "{stderr}"
    );
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(json["format"], "quantweb-index");
    assert_eq!(json["version"], 1);
    assert_eq!(json["base"], "/docs/");
    assert_eq!(json["sections"][5]["url"], "./");
    assert_eq!(json["sections"][5]["anchor"], "features");
    assert_eq!(json["lengths"].as_array().unwrap().len(), 9);
    assert_eq!(json["postings"]["webgpu"], serde_json::json!([8, 1]));
    assert!(
        !String::from_utf8_lossy(&bytes).contains('\n'),
        "compact JSON"
    );

    // Without -o and --base-url: SITE_DIR/quantweb-index.json, relative URLs.
    let run = quantweb(&[dir.0.as_os_str()]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.0.join("quantweb-index.json")).unwrap()).unwrap();
    assert_eq!(json["base"], serde_json::Value::Null);

    let unwritable = dir.0.join("missing/index.json");
    let run = quantweb(&[dir.0.as_os_str(), "-o".as_ref(), unwritable.as_os_str()]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(
        stderr.contains(&format!("{}: cannot write the index", unwritable.display())),
        "{stderr}"
    );
}

#[test]
fn a_site_without_pages_is_an_error() {
    let dir = TempDir::new("empty");
    dir.write("404.html", "<html><body><p>Not found</p></body></html>");
    dir.write("nav.html", "<html><body><nav>navword</nav></body></html>");
    let err = index_site(&dir.0, None).err().unwrap();
    assert!(matches!(err, Error::NoPages { files: 1, .. }), "{err}");

    let run = quantweb(&[dir.0.as_os_str()]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(
        stderr.contains("no pages to index among its 1 .html files"),
        "{stderr}"
    );

    let missing = dir.0.join("missing");
    let run = quantweb(&[missing.as_os_str()]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");

    let file = dir.0.join("nav.html");
    let err = index_site(&file, None).err().unwrap();
    assert!(matches!(err, Error::NotADirectory(_)), "{err}");
}

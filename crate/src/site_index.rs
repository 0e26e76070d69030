//! `quantweb index`: a lexical (BM25) search index over a built static documentation site, for the
//! chat widget (www/widget/retrieve.js) to ground its answers in the site's own sections.
//!
//! Each page's main content is cut into sections at h1–h3; each section is indexed as its
//! heading (counted twice), the page title and its text, under tokenizer v1 ([`tokenize`]), which
//! retrieve.js repeats character for character: a query only finds what both sides split alike.

use crate::error::{Error, Result};
use scraper::{ElementRef, Html, Node, Selector};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Words too common to tell sections apart; retrieve.js has the same list.
pub const STOPWORDS: [&str; 36] = [
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "have", "how", "i",
    "in", "is", "it", "its", "of", "on", "or", "that", "the", "this", "to", "was", "what", "when",
    "where", "which", "who", "why", "will", "with", "you", "your",
];

/// A retrieved part must fit a small model's context next to the question and a few others.
pub const MAX_SECTION_WORDS: usize = 300;

/// Navigation, page chrome and generator furniture (mdBook, MkDocs Material) that would match
/// queries on every page without answering any of them.
const CHROME: &str = "nav, header, footer, aside, script, style, noscript, template, svg, form, \
    button, select, [role=navigation], [role=search], [aria-hidden=true], .headerlink, \
    .sidebar, #menu-bar, .nav-chapters, .mobile-nav-chapters, .md-sidebar, .md-header, .md-footer";

/// What an element puts between the words before, in and after it: a line break around a block
/// (a paragraph to the model that reads the text), a space between table cells.
fn gap(element: &str) -> Gap {
    match element {
        "td" | "th" => Gap::Space,
        "address" | "article" | "blockquote" | "br" | "caption" | "dd" | "details" | "div"
        | "dl" | "dt" | "figcaption" | "figure" | "h4" | "h5" | "h6" | "hr" | "li" | "main"
        | "ol" | "p" | "pre" | "section" | "summary" | "table" | "tbody" | "tfoot" | "thead"
        | "tr" | "ul" => Gap::Line,
        _ => Gap::None,
    }
}

/// Tokenizer v1: lowercase, maximal runs of alphanumeric characters (Unicode Alphabetic or
/// general category N), without one-character tokens other than numbers, without [`STOPWORDS`].
pub fn tokenize(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| {
            let mut chars = t.chars();
            match (chars.next(), chars.next()) {
                (None, _) => false,
                (Some(c), None) => c.is_numeric(),
                _ => !STOPWORDS.contains(t),
            }
        })
        .map(str::to_string)
        .collect()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Section {
    /// The page, relative to the index's base.
    pub url: String,
    /// The heading's fragment id; "" for the text before the first heading.
    pub anchor: String,
    /// The page title.
    pub title: String,
    /// "" for the text before the first heading.
    pub heading: String,
    pub text: String,
}

/// The file `quantweb index` writes (format "quantweb-index", version 1).
#[derive(Debug, Serialize)]
pub struct SiteIndex {
    pub format: &'static str,
    pub version: u32,
    /// The URL section URLs are relative to; `None`: the directory that holds the index file.
    pub base: Option<String>,
    pub sections: Vec<Section>,
    /// Indexed tokens per section, the BM25 document length.
    pub lengths: Vec<u32>,
    /// Term → flat `[section, tf, section, tf, …]` in section order.
    pub postings: BTreeMap<String, Vec<u32>>,
}

impl SiteIndex {
    pub fn new(sections: Vec<Section>, base: Option<String>) -> SiteIndex {
        let mut lengths = Vec::with_capacity(sections.len());
        let mut postings: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (i, s) in sections.iter().enumerate() {
            let heading = tokenize(&s.heading);
            let tokens = heading
                .iter()
                .chain(&heading)
                .cloned()
                .chain(tokenize(&s.title))
                .chain(tokenize(&s.text));
            let mut tf: BTreeMap<String, u32> = BTreeMap::new();
            let mut length = 0;
            for t in tokens {
                *tf.entry(t).or_default() += 1;
                length += 1;
            }
            lengths.push(length);
            for (term, n) in tf {
                postings.entry(term).or_default().extend([i as u32, n]);
            }
        }
        SiteIndex {
            format: "quantweb-index",
            version: 1,
            base,
            sections,
            lengths,
            postings,
        }
    }
}

/// What [`index_site`] found.
pub struct Indexed {
    pub index: SiteIndex,
    pub pages: usize,
}

/// Indexes every `*.html` under `dir` but 404 pages, `noindex` pages and pages without text.
pub fn index_site(dir: &Path, base: Option<String>) -> Result<Indexed> {
    let io = |path: &Path, e: std::io::Error| Error::Io {
        source_name: path.display().to_string(),
        message: e.to_string(),
    };
    if !std::fs::metadata(dir).map_err(|e| io(dir, e))?.is_dir() {
        return Err(Error::NotADirectory(dir.display().to_string()));
    }
    let mut files = vec![];
    html_files(dir, &mut files).map_err(|(path, e)| io(&path, e))?;
    files.sort();
    let mut sections = vec![];
    let mut pages = 0;
    for path in &files {
        let bytes = std::fs::read(path).map_err(|e| io(path, e))?;
        let url = page_url(path.strip_prefix(dir).expect("found under dir"));
        let page = page_sections(&String::from_utf8_lossy(&bytes), &url);
        if !page.is_empty() {
            pages += 1;
            sections.extend(page);
        }
    }
    if pages == 0 {
        return Err(Error::NoPages {
            dir: dir.display().to_string(),
            files: files.len(),
        });
    }
    Ok(Indexed {
        index: SiteIndex::new(sections, base),
        pages,
    })
}

/// The `*.html` files under `dir` but 404.html; symbolic links to directories are not followed,
/// so that a link cycle cannot loop.
fn html_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), (PathBuf, std::io::Error)> {
    let entries = std::fs::read_dir(dir).map_err(|e| (dir.to_path_buf(), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| (dir.to_path_buf(), e))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| (path.clone(), e))?;
        if kind.is_dir() {
            html_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "html") && entry.file_name() != "404.html" {
            out.push(path);
        }
    }
    Ok(())
}

/// `guide/index.html` → `guide/`, `index.html` → `./`; `%`, `#` and `?` escaped so that the URL
/// names the file.
fn page_url(relative: &Path) -> String {
    let parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let path = parts.join("/");
    let path = match path.strip_suffix("index.html") {
        Some("") => "./".to_string(),
        Some(dir) if dir.ends_with('/') => dir.to_string(),
        _ => path,
    };
    path.replace('%', "%25")
        .replace('#', "%23")
        .replace('?', "%3F")
}

/// The sections of one page; none for a `noindex` page or one without main text.
pub fn page_sections(html: &str, url: &str) -> Vec<Section> {
    let doc = Html::parse_document(html);
    let sel = |s: &str| Selector::parse(s).expect("valid selector");
    let noindex = doc.select(&sel("meta")).any(|m| {
        m.attr("name")
            .is_some_and(|n| n.eq_ignore_ascii_case("robots"))
            && m.attr("content")
                .is_some_and(|c| c.to_ascii_lowercase().contains("noindex"))
    });
    if noindex {
        return vec![];
    }
    let main = ["main", "[role=main]", "article", "body"]
        .iter()
        .find_map(|s| doc.select(&sel(s)).next());
    let Some(main) = main else {
        return vec![];
    };
    let chrome = sel(CHROME);
    let title = doc
        .select(&sel("title"))
        .next()
        .map(|t| normalize(&t.text().collect::<String>()))
        .filter(|t| !t.is_empty())
        .or_else(|| {
            doc.select(&sel("h1"))
                .next()
                .map(|h| heading_text(h, &chrome))
        })
        .unwrap_or_default();
    let mut cutter = Cutter {
        chrome,
        url,
        title: &title,
        sections: vec![],
        anchor: String::new(),
        heading: String::new(),
        text: Text::default(),
    };
    cutter.walk(main, false);
    cutter.finish();
    cutter.sections
}

/// Collects text in document order, starting a section at each h1–h3.
struct Cutter<'a> {
    chrome: Selector,
    url: &'a str,
    title: &'a str,
    sections: Vec<Section>,
    anchor: String,
    heading: String,
    text: Text,
}

impl Cutter<'_> {
    fn walk(&mut self, el: ElementRef, pre: bool) {
        for child in el.children() {
            match child.value() {
                Node::Text(t) => self.text.push(t, pre),
                Node::Element(_) => {
                    let child = ElementRef::wrap(child).expect("an element");
                    if self.chrome.matches(&child) {
                        continue;
                    }
                    let name = child.value().name();
                    if matches!(name, "h1" | "h2" | "h3") {
                        self.finish();
                        self.anchor = anchor(child).unwrap_or_default().to_string();
                        self.heading = heading_text(child, &self.chrome);
                        continue;
                    }
                    let around = gap(name);
                    self.text.gap(around);
                    self.walk(child, pre || name == "pre");
                    self.text.gap(around);
                }
                _ => {}
            }
        }
    }

    /// Ends the current section: kept if it has text, in parts of at most
    /// [`MAX_SECTION_WORDS`] words.
    fn finish(&mut self) {
        let text = std::mem::take(&mut self.text).out;
        for part in split_words(&text, MAX_SECTION_WORDS) {
            self.sections.push(Section {
                url: self.url.to_string(),
                anchor: self.anchor.clone(),
                title: self.title.to_string(),
                heading: self.heading.clone(),
                text: part.to_string(),
            });
        }
    }
}

/// The heading's own id, an id inside it (`<h2><a id="x">`), or that of an `<a>` wrapping it.
fn anchor(heading: ElementRef<'_>) -> Option<&str> {
    fn id(e: ElementRef<'_>) -> Option<&str> {
        e.value().id().filter(|id| !id.is_empty())
    }
    let inside = || heading.descendent_elements().find_map(id);
    let wrapping = || {
        heading
            .parent()
            .and_then(ElementRef::wrap)
            .filter(|p| p.value().name() == "a")
            .and_then(id)
    };
    id(heading).or_else(inside).or_else(wrapping)
}

/// A heading's text without its chrome (MkDocs' ¶ permalink).
fn heading_text(heading: ElementRef, chrome: &Selector) -> String {
    fn collect(el: ElementRef, chrome: &Selector, out: &mut String) {
        for child in el.children() {
            match child.value() {
                Node::Text(t) => out.push_str(t),
                Node::Element(_) => {
                    let child = ElementRef::wrap(child).expect("an element");
                    if !chrome.matches(&child) {
                        collect(child, chrome, out);
                    }
                }
                _ => {}
            }
        }
    }
    let mut out = String::new();
    collect(heading, chrome, &mut out);
    normalize(&out)
}

fn normalize(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What separates the next word from the last one.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
enum Gap {
    #[default]
    None,
    Space,
    Line,
}

/// Text with whitespace collapsed: a space between words, a line break between blocks and
/// between a code block's lines.
#[derive(Default)]
struct Text {
    out: String,
    pending: Gap,
}

impl Text {
    fn gap(&mut self, gap: Gap) {
        self.pending = self.pending.max(gap);
    }

    fn push(&mut self, s: &str, pre: bool) {
        for (i, line) in s.split('\n').enumerate() {
            if i > 0 {
                self.gap(if pre { Gap::Line } else { Gap::Space });
            }
            if line.starts_with(char::is_whitespace) {
                self.gap(Gap::Space);
            }
            for (j, word) in line.split_whitespace().enumerate() {
                if j > 0 {
                    self.gap(Gap::Space);
                }
                if !self.out.is_empty() {
                    match self.pending {
                        Gap::None => {}
                        Gap::Space => self.out.push(' '),
                        Gap::Line => self.out.push('\n'),
                    }
                }
                self.pending = Gap::None;
                self.out.push_str(word);
            }
            if line.ends_with(char::is_whitespace) {
                self.gap(Gap::Space);
            }
        }
    }
}

/// `text` in consecutive parts of at most `max` words, as even as that allows (no 1-word tail).
fn split_words(text: &str, max: usize) -> Vec<&str> {
    let mut after_space = true;
    let starts: Vec<usize> = text
        .char_indices()
        .filter_map(|(i, c)| {
            let start = after_space && !c.is_whitespace();
            after_space = c.is_whitespace();
            start.then_some(i)
        })
        .collect();
    if starts.is_empty() {
        return vec![];
    }
    let per_part = starts.len().div_ceil(starts.len().div_ceil(max));
    (0..starts.len())
        .step_by(per_part)
        .map(|k| {
            let end = starts.get(k + per_part).copied().unwrap_or(text.len());
            text[starts[k]..end].trim_end()
        })
        .collect()
}

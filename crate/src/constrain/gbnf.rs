//! llama.cpp's GBNF grammar format (grammars/README.md there), read into a syntax tree and
//! written out as the Lark-like syntax that llguidance compiles. Parsing it ourselves keeps
//! GBNF's own rules: a rule ends at the end of its line unless a bracket is open, names are
//! `[a-zA-Z0-9_-]`, terminals are code points, and `root` is where the output starts.

use std::collections::HashMap;
use std::fmt::Write;

/// A GBNF text that is not a grammar: what is wrong, and on which line where one line is at
/// fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GbnfError {
    pub line: Option<usize>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Atom {
    Literal(String),
    /// `[...]`: inclusive code point ranges, or their complement.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    /// `.`: any code point.
    Any,
    Rule(String),
    Group(Vec<Vec<Item>>),
}

#[derive(Debug, Clone, PartialEq)]
struct Item {
    atom: Atom,
    /// How many times, as (min, max); (1, Some(1)) is once.
    times: (u32, Option<u32>),
}

struct Parser<'a> {
    src: &'a [char],
    pos: usize,
    /// Open brackets: inside them a newline does not end the rule.
    depth: usize,
}

/// At most this many repetitions in `{m,n}`: llama.cpp expands them into copies, and a bound
/// keeps a hostile grammar from costing unbounded memory here too.
const MAX_REPEAT: u32 = 10_000;

impl Parser<'_> {
    fn line(&self) -> usize {
        1 + self.src[..self.pos.min(self.src.len())]
            .iter()
            .filter(|&&c| c == '\n')
            .count()
    }

    fn err<T>(&self, reason: impl Into<String>) -> Result<T, GbnfError> {
        Err(GbnfError {
            line: Some(self.line()),
            reason: reason.into(),
        })
    }

    fn peek(&self) -> Option<char> {
        self.src.get(self.pos).copied()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.src.get(self.pos + n).copied()
    }

    /// Skips blanks and comments; newlines too when `newlines` (between rules, after `::=` or
    /// `|`, and inside brackets).
    fn space(&mut self, newlines: bool) {
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' => self.pos += 1,
                '\r' | '\n' if newlines => self.pos += 1,
                '#' => {
                    while self.peek().is_some_and(|c| c != '\n') {
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn name(&mut self) -> Option<String> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            self.pos += 1;
        }
        (self.pos > start).then(|| self.src[start..self.pos].iter().collect())
    }

    fn hex(&mut self, digits: usize) -> Result<char, GbnfError> {
        let mut v = 0u32;
        for _ in 0..digits {
            let Some(d) = self.peek().and_then(|c| c.to_digit(16)) else {
                return self.err(format!("expected {digits} hex digits after the escape"));
            };
            v = v * 16 + d;
            self.pos += 1;
        }
        match char::from_u32(v) {
            Some(c) => Ok(c),
            None => self.err(format!("U+{v:X} is not a Unicode scalar value")),
        }
    }

    /// One character of a literal or class, escapes decoded.
    fn char_in(&mut self, what: &str) -> Result<char, GbnfError> {
        let Some(c) = self.peek() else {
            return self.err(format!("unterminated {what}"));
        };
        self.pos += 1;
        if c != '\\' {
            return Ok(c);
        }
        let Some(e) = self.peek() else {
            return self.err(format!("unterminated {what}"));
        };
        self.pos += 1;
        match e {
            'x' => self.hex(2),
            'u' => self.hex(4),
            'U' => self.hex(8),
            't' => Ok('\t'),
            'r' => Ok('\r'),
            'n' => Ok('\n'),
            '\\' | '"' | '[' | ']' | '-' | '^' => Ok(e),
            _ => self.err(format!("unknown escape \\{e}")),
        }
    }

    fn literal(&mut self) -> Result<Atom, GbnfError> {
        self.pos += 1;
        let mut s = String::new();
        while self.peek() != Some('"') {
            if self.peek().is_none_or(|c| c == '\n') {
                return self.err("unterminated string");
            }
            s.push(self.char_in("string")?);
        }
        self.pos += 1;
        Ok(Atom::Literal(s))
    }

    fn class(&mut self) -> Result<Atom, GbnfError> {
        self.pos += 1;
        let negated = self.peek() == Some('^');
        if negated {
            self.pos += 1;
        }
        let mut ranges = Vec::new();
        while self.peek() != Some(']') {
            let lo = self.char_in("character class")?;
            let hi = if self.peek() == Some('-') && self.peek_at(1).is_some_and(|c| c != ']') {
                self.pos += 1;
                self.char_in("character class")?
            } else {
                lo
            };
            if hi < lo {
                return self.err(format!("range {lo:?}-{hi:?} is reversed"));
            }
            ranges.push((lo, hi));
        }
        self.pos += 1;
        Ok(Atom::Class { negated, ranges })
    }

    fn number(&mut self) -> Option<u32> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        let s: String = self.src[start..self.pos].iter().collect();
        s.parse().ok()
    }

    /// `{m}`, `{m,}`, `{,n}` or `{m,n}`.
    fn braces(&mut self) -> Result<(u32, Option<u32>), GbnfError> {
        self.pos += 1;
        self.space(true);
        let min = self.number();
        self.space(true);
        let max = if self.peek() == Some(',') {
            self.pos += 1;
            self.space(true);
            self.number()
        } else {
            min
        };
        self.space(true);
        if self.peek() != Some('}') {
            return self.err("expected } to close a repetition");
        }
        self.pos += 1;
        let min = min.unwrap_or(0);
        if max.is_some_and(|m| m < min) || min > MAX_REPEAT || max.is_some_and(|m| m > MAX_REPEAT) {
            return self.err(format!(
                "repetition bounds must be ordered and at most {MAX_REPEAT}"
            ));
        }
        Ok((min, max))
    }

    fn sequence(&mut self) -> Result<Vec<Item>, GbnfError> {
        let mut items = Vec::new();
        loop {
            self.space(self.depth > 0);
            let atom = match self.peek() {
                Some('"') => self.literal()?,
                Some('[') => self.class()?,
                Some('.') => {
                    self.pos += 1;
                    Atom::Any
                }
                Some('(') => {
                    self.pos += 1;
                    self.depth += 1;
                    let alts = self.alternatives()?;
                    self.space(true);
                    if self.peek() != Some(')') {
                        return self.err("expected ) to close a group");
                    }
                    self.pos += 1;
                    self.depth -= 1;
                    Atom::Group(alts)
                }
                Some('<') | Some('!') => {
                    return self
                        .err("token references (<…>, !<…>) are not supported; write the text")
                }
                Some(c) if c.is_ascii_alphanumeric() || c == '-' || c == '_' => {
                    Atom::Rule(self.name().unwrap_or_default())
                }
                _ => break,
            };
            let times = match self.peek() {
                Some('{') => self.braces()?,
                Some(c @ ('*' | '+' | '?')) => {
                    self.pos += 1;
                    match c {
                        '*' => (0, None),
                        '+' => (1, None),
                        _ => (0, Some(1)),
                    }
                }
                _ => (1, Some(1)),
            };
            items.push(Item { atom, times });
        }
        Ok(items)
    }

    fn alternatives(&mut self) -> Result<Vec<Vec<Item>>, GbnfError> {
        let mut alts = vec![self.sequence()?];
        loop {
            self.space(self.depth > 0);
            if self.peek() != Some('|') {
                return Ok(alts);
            }
            self.pos += 1;
            self.space(true);
            alts.push(self.sequence()?);
        }
    }
}

/// The grammar `text` in llguidance's Lark syntax, with `root` as its start.
pub fn to_lark(text: &str) -> Result<String, GbnfError> {
    let src: Vec<char> = text.chars().collect();
    let mut p = Parser {
        src: &src,
        pos: 0,
        depth: 0,
    };
    let mut rules: Vec<(String, Vec<Vec<Item>>)> = Vec::new();
    loop {
        p.space(true);
        if p.peek().is_none() {
            break;
        }
        let Some(name) = p.name() else {
            return p.err("expected a rule name");
        };
        p.space(false);
        if !p.src[p.pos..].starts_with(&[':', ':', '=']) {
            return p.err(format!("expected ::= after {name}"));
        }
        p.pos += 3;
        p.space(true);
        let alts = p.alternatives()?;
        p.space(false);
        if p.peek().is_some_and(|c| c != '\n' && c != '\r') {
            return p.err(format!("unexpected {:?}", p.peek().unwrap_or(' ')));
        }
        if rules.iter().any(|(n, _)| *n == name) {
            return p.err(format!("rule {name} is defined twice"));
        }
        rules.push((name, alts));
    }
    if !rules.iter().any(|(n, _)| n == "root") {
        return Err(GbnfError {
            line: None,
            reason: "the grammar has no root rule".into(),
        });
    }
    let names = lark_names(rules.iter().map(|(n, _)| n.as_str()));
    let mut out = String::new();
    for (name, alts) in &rules {
        let _ = write!(out, "{}: ", names[name.as_str()]);
        write_alts(&mut out, alts, &names)?;
        out.push('\n');
    }
    Ok(out)
}

/// Lark names for GBNF's: `root` becomes `start`; the rest are lower-cased (Lark reads an
/// upper-case name as a terminal, which may not recurse) and kept apart where that merges two.
fn lark_names<'a>(gbnf: impl Iterator<Item = &'a str>) -> HashMap<&'a str, String> {
    let mut taken = std::collections::HashSet::new();
    let mut names = HashMap::new();
    for n in gbnf {
        let base = if n == "root" {
            "start".to_string()
        } else {
            format!("r-{}", n.to_ascii_lowercase().replace('_', "-"))
        };
        let mut name = base.clone();
        let mut k = 1;
        while !taken.insert(name.clone()) {
            k += 1;
            name = format!("{base}-{k}");
        }
        names.insert(n, name);
    }
    names
}

fn write_alts(
    out: &mut String,
    alts: &[Vec<Item>],
    names: &HashMap<&str, String>,
) -> Result<(), GbnfError> {
    for (i, seq) in alts.iter().enumerate() {
        if i > 0 {
            out.push_str(" | ");
        }
        if seq.is_empty() {
            out.push_str("\"\"");
        }
        for (j, item) in seq.iter().enumerate() {
            if j > 0 {
                out.push(' ');
            }
            write_atom(out, &item.atom, names)?;
            match item.times {
                (1, Some(1)) => {}
                (0, None) => out.push('*'),
                (1, None) => out.push('+'),
                (0, Some(1)) => out.push('?'),
                (m, None) => {
                    let _ = write!(out, "{{{m},}}");
                }
                (m, Some(n)) => {
                    let _ = write!(out, "{{{m},{n}}}");
                }
            }
        }
    }
    Ok(())
}

fn write_atom(
    out: &mut String,
    atom: &Atom,
    names: &HashMap<&str, String>,
) -> Result<(), GbnfError> {
    match atom {
        Atom::Literal(s) => {
            out.push_str(&serde_json::to_string(s).expect("a string serializes"));
        }
        Atom::Any => out.push_str("/(?s:.)/"),
        Atom::Class { negated, ranges } => {
            if ranges.is_empty() {
                // `[]` matches nothing, `[^]` any code point.
                out.push_str(if *negated {
                    "/(?s:.)/"
                } else {
                    "/[^\\x{0}-\\x{10FFFF}]/"
                });
                return Ok(());
            }
            out.push_str(if *negated { "/[^" } else { "/[" });
            for &(lo, hi) in ranges {
                let _ = write!(out, "\\x{{{:X}}}", lo as u32);
                if hi != lo {
                    let _ = write!(out, "-\\x{{{:X}}}", hi as u32);
                }
            }
            out.push_str("]/");
        }
        Atom::Rule(n) => match names.get(n.as_str()) {
            Some(l) => out.push_str(l),
            None => {
                return Err(GbnfError {
                    line: None,
                    reason: format!("rule {n} is used but not defined"),
                })
            }
        },
        Atom::Group(alts) => {
            out.push('(');
            write_alts(out, alts, names)?;
            out.push(')');
        }
    }
    Ok(())
}

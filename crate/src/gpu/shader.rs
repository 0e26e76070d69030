//! The WGSL sources of `shaders/` and the tiny preprocessor that makes their variants.
//!
//! Directives, each on its own line:
//! - `#include "name.wgsl"` pastes another file of `shaders/`, once per shader (a second
//!   include of the same file, e.g. f16.wgsl through two helpers, is skipped);
//! - `#ifdef NAME` / `#ifndef NAME` / `#else` / `#endif` keep or drop lines by whether a define
//!   is set (nesting allowed);
//! - every other line has each whole-word occurrence of a define's name replaced by its value,
//!   so `const WG: u32 = WG_SIZE;` with `WG_SIZE=64` becomes `const WG: u32 = 64;`.
//!
//! Pipelines are cached by (shader, defines), so a variant is compiled once per device.

use std::collections::BTreeMap;

/// All `shaders/*.wgsl` files by name, embedded by build.rs.
const FILES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/shaders.rs"));

pub type Defines = BTreeMap<String, String>;

/// Builds defines from pairs: `defines(&[("TYPE", "Q4_K"), ("WG", "64")])`.
pub fn defines(pairs: &[(&str, &str)]) -> Defines {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The source of `name` with includes expanded and defines applied.
pub fn preprocess(name: &str, defs: &Defines) -> Result<String, String> {
    let mut out = String::new();
    expand(name, defs, &mut vec![], &mut vec![], &mut out)?;
    Ok(out)
}

fn file(name: &str) -> Result<&'static str, String> {
    FILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .ok_or_else(|| format!("no shader file {name:?} in shaders/"))
}

fn expand(
    name: &str,
    defs: &Defines,
    stack: &mut Vec<String>,
    included: &mut Vec<String>,
    out: &mut String,
) -> Result<(), String> {
    if stack.iter().any(|s| s == name) {
        return Err(format!("include cycle: {} -> {name}", stack.join(" -> ")));
    }
    stack.push(name.to_string());
    // One entry per open #if: (this branch active, some enclosing branch inactive).
    let mut conds: Vec<(bool, bool)> = vec![];
    let active =
        |conds: &[(bool, bool)]| conds.last().is_none_or(|&(on, outer_off)| on && !outer_off);
    for (lineno, line) in file(name)?.lines().enumerate() {
        let t = line.trim();
        let err = |m: &str| format!("{name}:{}: {m}", lineno + 1);
        if let Some(rest) = t
            .strip_prefix("#ifdef ")
            .map(|r| (r, true))
            .or_else(|| t.strip_prefix("#ifndef ").map(|r| (r, false)))
        {
            let outer_off = !active(&conds);
            conds.push((defs.contains_key(rest.0.trim()) == rest.1, outer_off));
        } else if t == "#else" {
            let c = conds
                .last_mut()
                .ok_or_else(|| err("#else without #ifdef"))?;
            c.0 = !c.0;
        } else if t == "#endif" {
            conds.pop().ok_or_else(|| err("#endif without #ifdef"))?;
        } else if !active(&conds) {
            continue;
        } else if let Some(inc) = t.strip_prefix("#include ") {
            let inc = inc.trim().trim_matches('"');
            if !included.iter().any(|i| i == inc) {
                included.push(inc.to_string());
                expand(inc, defs, stack, included, out)?;
            }
        } else if t.starts_with('#') {
            return Err(err(&format!("unknown directive {t:?}")));
        } else {
            out.push_str(&substitute(line, defs));
            out.push('\n');
        }
    }
    if !conds.is_empty() {
        return Err(format!("{name}: #ifdef without #endif"));
    }
    stack.pop();
    Ok(())
}

/// Replaces whole-word define names by their values.
fn substitute(line: &str, defs: &Defines) -> String {
    if defs.is_empty() {
        return line.to_string();
    }
    let mut out = String::with_capacity(line.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        out.push_str(
            defs.get(word.as_str())
                .map_or(word.as_str(), |v| v.as_str()),
        );
        word.clear();
    };
    for c in line.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defines_and_conditionals() {
        let src = preprocess("add.wgsl", &defines(&[("WG_SIZE", "32")])).unwrap();
        assert!(src.contains("@workgroup_size(32)"), "{src}");
        assert!(!src.contains("WG_SIZE"));
        assert_eq!(
            substitute(
                "a WG_SIZE b WG_SIZEX (WG_SIZE)",
                &defines(&[("WG_SIZE", "8")])
            ),
            "a 8 b WG_SIZEX (8)"
        );
        assert!(preprocess("nope.wgsl", &Defines::new()).is_err());
    }

    /// The gated matvec quantizing its input includes f16.wgsl through act_fn.wgsl and through
    /// quant_act.wgsl: pasted once, or the shader would define its functions twice.
    #[test]
    fn a_file_included_twice_is_pasted_once() {
        let defs = defines(&[
            ("TYPE_Q4_0", "1"),
            ("GATED", "1"),
            ("ACT_GELU_TANH", "1"),
            ("QUANT_IN", "1"),
            ("KIND_Q8_0", "1"),
            ("BLOCK_32", "1"),
        ]);
        let src = preprocess("matvec.wgsl", &defs).unwrap();
        assert_eq!(src.matches("fn f16_bits(").count(), 1);
        assert_eq!(src.matches("fn quantize_block(").count(), 1);
        assert_eq!(src.matches("fn act(").count(), 1);
    }
}

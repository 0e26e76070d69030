//! Small helpers shared by the commands: errors, paths, running programs, argument parsing.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

/// An error whose message was already printed (main then only sets the exit code).
#[derive(Debug)]
pub struct Reported;

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("(reported above)")
    }
}

impl std::error::Error for Reported {}

/// The workspace root (the parent of xtask/).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The cargo that runs us (`$CARGO` under `cargo run`), else `cargo` from PATH.
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the root) or `<root>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => repo_root().join(d),
        _ => repo_root().join("target"),
    }
}

/// The page's source: `$QUANTWEB_WWW_DIR` (relative to the root) or `<root>/www`.
pub fn www_dir() -> PathBuf {
    match std::env::var_os("QUANTWEB_WWW_DIR") {
        Some(d) if !d.is_empty() => repo_root().join(d),
        _ => repo_root().join("www"),
    }
}

/// Prints a step header so long runs are easy to follow.
pub fn step(msg: &str) {
    println!("\n==> {msg}");
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.contains('\n') {
            s.push_str(" '<script>'");
        } else if a.contains(' ') || a.is_empty() {
            s.push_str(&format!(" '{a}'"));
        } else {
            s.push(' ');
            s.push_str(&a);
        }
    }
    s
}

/// Runs a command with inherited stdio; a spawn failure or a non-zero exit is an error that
/// names the command and adds `hint` (what the user should do).
pub fn run_cmd(cmd: &mut Command, hint: &str) -> Result<()> {
    let desc = describe(cmd);
    println!("$ {desc}");
    let status = cmd.status().map_err(|e| {
        format!(
            "could not start `{desc}`: {e}{}",
            if hint.is_empty() {
                String::new()
            } else {
                format!("\n  {hint}")
            }
        )
    })?;
    if status.success() {
        Ok(())
    } else {
        let mut msg = format!("`{desc}` failed ({status})");
        if !hint.is_empty() {
            msg.push_str("\n  ");
            msg.push_str(hint);
        }
        Err(msg.into())
    }
}

/// Runs a program and returns its trimmed stdout if it started and exited 0, else None.
pub fn capture<S: AsRef<OsStr>>(program: S, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A tiny argument parser: `flag("--all")`, `value("--port")` (`--port 80` or `--port=80`),
/// `positional()` (the first non-option), `passthrough()` (everything after `--`), then
/// `finish()` rejects anything left over.
pub struct Args {
    rest: Vec<String>,
    after_dashdash: Vec<String>,
}

impl Args {
    pub fn new(args: &[String]) -> Self {
        let (rest, after) = match args.iter().position(|a| a == "--") {
            Some(i) => (args[..i].to_vec(), args[i + 1..].to_vec()),
            None => (args.to_vec(), Vec::new()),
        };
        Args {
            rest,
            after_dashdash: after,
        }
    }

    pub fn flag(&mut self, name: &str) -> bool {
        let before = self.rest.len();
        self.rest.retain(|a| a != name);
        self.rest.len() != before
    }

    pub fn value(&mut self, name: &str) -> Result<Option<String>> {
        let prefix = format!("{name}=");
        if let Some(i) = self.rest.iter().position(|a| a.starts_with(&prefix)) {
            let v = self.rest.remove(i)[prefix.len()..].to_string();
            return Ok(Some(v));
        }
        if let Some(i) = self.rest.iter().position(|a| a == name) {
            if i + 1 >= self.rest.len() {
                return Err(format!("{name} needs a value").into());
            }
            let v = self.rest.remove(i + 1);
            self.rest.remove(i);
            return Ok(Some(v));
        }
        Ok(None)
    }

    /// The first argument that is not an option.
    pub fn positional(&mut self) -> Option<String> {
        let i = self.rest.iter().position(|a| !a.starts_with('-'))?;
        Some(self.rest.remove(i))
    }

    pub fn passthrough(&mut self) -> Vec<String> {
        std::mem::take(&mut self.after_dashdash)
    }

    pub fn finish(self) -> Result<()> {
        if let Some(a) = self.rest.first() {
            return Err(format!("unexpected argument `{a}` (see `cargo xtask help`)").into());
        }
        if !self.after_dashdash.is_empty() {
            return Err("arguments after `--` are only accepted by `cargo xtask test`".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn args_parse() {
        let mut a = Args::new(&v(&["--port", "90", "--all", "--host=h"]));
        assert!(a.flag("--all"));
        assert!(!a.flag("--all"));
        assert_eq!(a.value("--port").unwrap().as_deref(), Some("90"));
        assert_eq!(a.value("--host").unwrap().as_deref(), Some("h"));
        assert!(a.finish().is_ok());

        let a = Args::new(&v(&["--bogus"]));
        assert!(a.finish().is_err());

        let mut a = Args::new(&v(&["--port"]));
        assert!(a.value("--port").is_err());

        let mut a = Args::new(&v(&["--browser-only", "--", "--test-name-pattern=x"]));
        assert!(a.flag("--browser-only"));
        assert_eq!(a.passthrough(), v(&["--test-name-pattern=x"]));
        assert!(a.finish().is_ok());
    }
}

//! Python tools from PyPI, each in a venv under target/ that holds exactly its pinned packages
//! (`--no-deps`: every package a tool imports is pinned, so the venv is the same on every
//! machine). Debian's python3 needs python3-venv for this (.ci/run installs it).

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use crate::util::{run_cmd, target_dir, Result};

/// The python of `target/<name>`, created (`python3 -m venv`) and filled with `packages` on
/// first use. A marker file lists the installed pins, so a venv with other versions is refilled.
pub fn python(name: &str, packages: &[&str], what: &str) -> Result<PathBuf> {
    let venv = target_dir().join(name);
    let python = venv.join("bin").join("python");
    let marker = venv.join("quantweb-packages.txt");
    let want = packages.join("\n") + "\n";
    if python.is_file() && fs::read_to_string(&marker).ok().as_deref() == Some(want.as_str()) {
        return Ok(python);
    }
    if !python.is_file() {
        let _ = fs::remove_dir_all(&venv);
        run_cmd(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "could not create a python venv: on Debian `apt-get install python3-venv`",
        )?;
    }
    run_cmd(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "--progress-bar",
                "off",
                "--no-deps",
            ])
            .args(packages),
        &format!("pip could not install {what}: check network access to PyPI"),
    )?;
    fs::write(&marker, want)?;
    Ok(python)
}

/// MkDocs and everything it imports, for the docs-site browser test (tests/docsite).
pub const MKDOCS_PACKAGES: &[&str] = &[
    "mkdocs==1.6.1",
    "click==8.5.1",
    "ghp-import==2.1.0",
    "Jinja2==3.1.6",
    "Markdown==3.11.3",
    "MarkupSafe==3.0.4",
    "mergedeep==1.3.4",
    "mkdocs-get-deps==0.2.2",
    "packaging==26.4",
    "pathspec==1.1.1",
    "platformdirs==4.14.9",
    "python-dateutil==4.0.0",
    "PyYAML==6.0.4",
    "pyyaml_env_tag==1.1",
    "watchdog==7.1.1",
];

/// The `mkdocs` program of its venv (`target/mkdocs-pyenv`).
pub fn mkdocs() -> Result<PathBuf> {
    let python = python("mkdocs-pyenv", MKDOCS_PACKAGES, "MkDocs")?;
    Ok(python.with_file_name("mkdocs"))
}

//! What the integration tests share: where the real models are, and the skip-or-fail rule for
//! missing models and GPUs (`cargo xtask test` sets QUANTWEB_REQUIRE_MODELS=1 and
//! QUANTWEB_REQUIRE_GPU=1, so CI fails where a bare `cargo test` skips).
#![allow(dead_code)] // each test binary uses its own subset

use std::path::PathBuf;

pub const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const GEMMA_PARTS: [&str; 4] = [
    "gemma-3-270m-q4_k_m.gguf.part00",
    "gemma-3-270m-q4_k_m.gguf.part01",
    "gemma-3-270m-q4_k_m.gguf.part02",
    "gemma-3-270m-q4_k_m.gguf.part03",
];

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn models_dir() -> PathBuf {
    root().join("models")
}

fn required(var: &str) -> bool {
    std::env::var(var).as_deref() == Ok("1")
}

/// Paths of the model files, or `None` (skip) when one is missing and models are not required.
pub fn model_paths(names: &[&str]) -> Option<Vec<String>> {
    let paths: Vec<PathBuf> = names.iter().map(|n| models_dir().join(n)).collect();
    if let Some(missing) = paths.iter().find(|p| !p.exists()) {
        assert!(
            !required("QUANTWEB_REQUIRE_MODELS"),
            "{} is missing: run `cargo xtask fetch-models --all`",
            missing.display()
        );
        eprintln!("skipping: {} missing", missing.display());
        return None;
    }
    Some(paths.iter().map(|p| p.display().to_string()).collect())
}

/// The GPU wgpu finds (Mesa llvmpipe in CI), or `None` (skip) when there is none and GPUs are
/// not required.
pub fn gpu() -> Option<quantweb::gpu::Gpu> {
    match pollster::block_on(quantweb::gpu::Gpu::new()) {
        Ok(g) => Some(g),
        Err(e) => {
            assert!(!required("QUANTWEB_REQUIRE_GPU"), "{e}");
            eprintln!("skipping: {e}");
            None
        }
    }
}

//! The calculator on the two real models of shared/models.md: every figure is computed here by
//! hand from the architecture (shapes × block sizes), and the reader must agree to the byte.
//! Models live in <workspace>/models (`cargo xtask fetch-models --all`).

use quantweb::gguf::{GgufModel, GgufWriter, Layout, Value};
use quantweb::inspect::ModelInfo;
use quantweb::memory::{estimate, FitOptions, KvType};
use quantweb::source::open_args;
use std::path::PathBuf;
use std::process::Command;

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const GEMMA_PARTS: [&str; 4] = [
    "gemma-3-270m-q4_k_m.gguf.part00",
    "gemma-3-270m-q4_k_m.gguf.part01",
    "gemma-3-270m-q4_k_m.gguf.part02",
    "gemma-3-270m-q4_k_m.gguf.part03",
];

/// Paths of the files, or `None` (skip) when they are missing and not required.
fn model_paths(names: &[&str]) -> Option<Vec<String>> {
    let paths: Vec<PathBuf> = names.iter().map(|n| models_dir().join(n)).collect();
    if let Some(missing) = paths.iter().find(|p| !p.exists()) {
        if std::env::var("QUANTWEB_REQUIRE_MODELS").as_deref() == Ok("1") {
            panic!(
                "{} is missing: run `cargo xtask fetch-models --all`",
                missing.display()
            );
        }
        eprintln!("skipping: {} missing", missing.display());
        return None;
    }
    Some(paths.iter().map(|p| p.display().to_string()).collect())
}

fn info(paths: &[String]) -> ModelInfo {
    let m = pollster::block_on(GgufModel::open(open_args(paths).unwrap())).unwrap();
    ModelInfo::from_model(&m).unwrap()
}

/// Bytes of a `rows × cols` matrix in a type with `block` elements in `bytes` bytes.
fn mat(cols: u64, rows: u64, block: u64, bytes: u64) -> u64 {
    cols * rows / block * bytes
}
const F32: (u64, u64) = (1, 4);
const Q4_1: (u64, u64) = (32, 20);
const Q5_0: (u64, u64) = (32, 22);
const Q8_0: (u64, u64) = (32, 34);
const Q4_K: (u64, u64) = (256, 144);
const Q6_K: (u64, u64) = (256, 210);
fn m(cols: u64, rows: u64, t: (u64, u64)) -> u64 {
    mat(cols, rows, t.0, t.1)
}

#[test]
fn smollm2_figures_match_a_hand_computation() {
    let Some(paths) = model_paths(&[SMOLLM2]) else {
        return;
    };
    let i = info(&paths);
    assert_eq!(
        (i.architecture.as_str(), i.layout.as_str(), i.file_bytes),
        ("llama", "single", 98_362_432)
    );
    let h = &i.hparams;
    assert_eq!(
        (
            h.layers,
            h.embedding_length,
            h.heads,
            h.kv_heads[0],
            h.key_length,
            h.value_length
        ),
        (30, 576, 9, 3, 64, 64)
    );
    assert_eq!(
        (
            h.feed_forward_length,
            h.context_length,
            h.vocab_size,
            h.sliding_window
        ),
        (Some(1536), 8192, 49152, None)
    );

    // d = 576, kv = 3 heads × 64 = 192, ffn = 1536; Q4_1 matrices, F32 norms, Q8_0 tied embedding.
    let layer = m(576, 576, Q4_1) * 2 // attn_q, attn_output
        + m(576, 192, Q4_1) * 2 // attn_k, attn_v
        + m(576, 1536, Q4_1) * 2 + m(1536, 576, Q4_1) // ffn_gate, ffn_up, ffn_down
        + m(576, 2, F32); // attn_norm, ffn_norm
    let weights = 30 * layer + m(576, 1, F32) + m(576, 49152, Q8_0);
    assert_eq!(weights, 96_576_768);
    assert_eq!(i.tensor_bytes, weights);
    assert_eq!(
        i.parameters,
        30 * (576 * 576 * 2 + 576 * 192 * 2 + 576 * 1536 * 3 + 576 * 2) + 576 + 576 * 49152
    );

    let e = estimate(&i, &FitOptions::default()).unwrap();
    assert_eq!(e.weights_bytes, weights);
    // KV: 30 layers × 4096 cells × 3 kv heads × (64 + 64) × 2 B = 90 MiB, llama.cpp's figure.
    assert_eq!(e.kv_cache_bytes, 30 * 4096 * 3 * (64 + 64) * 2);
    assert_eq!(e.kv_cache_bytes, 90 << 20);
    // Scratch: one 512-token batch of (3 × 576 + 9 × 128 + 3 × 128 + 2 × 1536) f32, one logits row.
    assert_eq!(
        e.scratch.activations_bytes,
        (3 * 576 + 9 * 128 + 3 * 128 + 2 * 1536) * 4 * 512
    );
    assert_eq!(e.scratch.logits_bytes, 49152 * 4);
    assert_eq!(
        e.total_bytes,
        e.weights_bytes + e.kv_cache_bytes + e.scratch_bytes
    );
    // The rule: 134.5M params × 0.5 B (Q4_1 is "4-bit") × 1.2.
    assert_eq!(e.rule_bits, 4);
    assert_eq!(
        e.rule_of_thumb_bytes,
        (i.parameters as f64 * 0.5 * 1.2).round() as u64
    );

    // KV options: q8_0 = 34 B per 32 values; f32 doubles f16; context scales linearly.
    let q8 = estimate(
        &i,
        &FitOptions {
            kv_type: KvType::Q8_0,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(q8.kv_cache_bytes, 30 * 4096 * 2 * (192 / 32 * 34));
    let long = estimate(
        &i,
        &FitOptions {
            context_length: 32768,
            kv_type: KvType::F32,
            batch: 512,
        },
    )
    .unwrap();
    assert_eq!(long.kv_cache_bytes, 30 * 32768 * 3 * 128 * 4);
    assert_eq!(
        long.warnings.len(),
        1,
        "32K is past the 8K training context"
    );
}

#[test]
fn gemma3_chunks_figures_match_a_hand_computation() {
    let Some(paths) = model_paths(&GEMMA_PARTS) else {
        return;
    };
    let i = info(&paths);
    assert_eq!(
        (
            i.architecture.as_str(),
            i.layout.as_str(),
            i.file_bytes,
            i.parts.len()
        ),
        ("gemma3", "chunks", 253_113_024, 4)
    );
    let h = &i.hparams;
    assert_eq!(
        (
            h.layers,
            h.embedding_length,
            h.heads,
            h.kv_heads[0],
            h.key_length,
            h.value_length
        ),
        (18, 640, 4, 1, 256, 256)
    );
    assert_eq!((h.vocab_size, h.sliding_window), (262144, Some(512)));
    // Global layers are 5, 11, 17 (il % 6 == 5); the other 15 slide.
    assert_eq!(
        h.sliding_window_layers,
        (0..18).filter(|il| il % 6 != 5).collect::<Vec<_>>()
    );

    // q = 4 × 256 = 1024 wide, k/v = 256; llama.cpp's Q4_K_M mix for 640-wide rows falls back from
    // Q4_K to Q5_0 and from Q6_K to Q8_0; 9 "more bits" layers get Q8_0 attn_v and Q6_K ffn_down.
    let per_layer = m(640, 1024, Q5_0) + m(640, 256, Q5_0) // attn_q, attn_k
        + m(1024, 640, Q4_K) // attn_output
        + m(640, 2048, Q5_0) * 2 // ffn_gate, ffn_up
        + m(640, 4, F32) + m(256, 2, F32); // 4 norms of d, q_norm, k_norm
    let more_bits = m(640, 256, Q8_0) + m(2048, 640, Q6_K);
    let base = m(640, 256, Q5_0) + m(2048, 640, Q4_K);
    let weights = 18 * per_layer + 9 * more_bits + 9 * base + m(640, 1, F32) + m(640, 262144, Q8_0);
    assert_eq!(weights, 246_587_904);
    assert_eq!(i.tensor_bytes, weights);
    let count = |t: &str| {
        i.type_mix
            .iter()
            .find(|s| s.ty == t)
            .map_or(0, |s| s.tensors)
    };
    assert_eq!(
        [
            count("F32"),
            count("Q5_0"),
            count("Q4_K"),
            count("Q8_0"),
            count("Q6_K")
        ],
        [109, 81, 27, 10, 9]
    );

    let e = estimate(&i, &FitOptions::default()).unwrap();
    // KV: 3 global layers × 4096 cells + 15 sliding layers × (512 window + 512 batch) cells,
    // each cell 1 kv head × (256 + 256) × 2 B.
    let cell = 256 * 2 * 2;
    assert_eq!(e.kv_cache_bytes, 3 * 4096 * cell + 15 * 1024 * cell);
    assert_eq!(
        3 * 4096 * cell,
        12 << 20,
        "llama.cpp: 12.00 MiB for the global layers"
    );
    assert_eq!(
        (
            e.kv_cache.full_layers,
            e.kv_cache.sliding_layers,
            e.kv_cache.sliding_cells
        ),
        (3, 15, 1024)
    );
    // A short context caps the sliding layers too.
    let short = estimate(
        &i,
        &FitOptions {
            context_length: 256,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(short.kv_cache_bytes, 18 * 256 * cell);
    // Logits for one position of a 262144-token vocabulary.
    assert_eq!(e.scratch.logits_bytes, 262144 * 4);

    // The what-if table reproduces the real Q4_K_M file exactly.
    let q4km = e.by_quant.iter().find(|r| r.quant == "Q4_K_M").unwrap();
    assert_eq!(q4km.weights_bytes, weights);
    assert_eq!(q4km.largest_tensor.name, "token_embd.weight");
    let f16 = e.by_quant.iter().find(|r| r.quant == "F16").unwrap();
    assert_eq!(
        f16.weights_bytes,
        (i.parameters - 55936) * 2 + 55936 * 4,
        "every matrix in F16, the 1-D norms stay F32"
    );
}

#[test]
fn gemma3_tensor_data_is_read_across_chunk_boundaries() {
    let Some(paths) = model_paths(&GEMMA_PARTS) else {
        return;
    };
    let m = pollster::block_on(GgufModel::open(open_args(&paths).unwrap())).unwrap();
    let sizes: Vec<u64> = paths
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .collect();
    // Every tensor that crosses a chunk boundary: token_embd.weight crosses two, blk.1.ffn_up one.
    let crossing: Vec<_> = m
        .tensors
        .iter()
        .filter(|t| {
            (1..4).any(|i| {
                sizes[..i].iter().sum::<u64>() > t.start
                    && sizes[..i].iter().sum::<u64>() < t.start + t.info.n_bytes
            })
        })
        .collect();
    assert_eq!(crossing.len(), 2);
    for t in crossing {
        // The same bytes, read file by file with plain std::fs.
        let mut expected = Vec::new();
        let (mut part_start, end) = (0u64, t.start + t.info.n_bytes);
        for (p, size) in paths.iter().zip(&sizes) {
            let (from, to) = (t.start.max(part_start), end.min(part_start + size));
            if from < to {
                let bytes = std::fs::read(p).unwrap();
                expected.extend_from_slice(
                    &bytes[(from - part_start) as usize..(to - part_start) as usize],
                );
            }
            part_start += size;
        }
        assert_eq!(
            pollster::block_on(m.read_tensor(&t.info.name)).unwrap(),
            expected,
            "{}",
            t.info.name
        );
    }
}

/// Splits SmolLM2 into three llama.cpp-style shards and opens them from the first shard's name.
#[test]
fn smollm2_split_into_shards_gives_the_same_figures() {
    let Some(paths) = model_paths(&[SMOLLM2]) else {
        return;
    };
    let m = pollster::block_on(GgufModel::open(open_args(&paths).unwrap())).unwrap();
    let dir = std::env::temp_dir().join(format!("quantweb-shards-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let n = m.tensors.len();
    let groups = [&m.tensors[..1], &m.tensors[1..n / 2], &m.tensors[n / 2..]];
    for (no, group) in groups.iter().enumerate() {
        let mut w = GgufWriter::new();
        if no == 0 {
            w.metadata = m
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
        }
        w = w
            .kv("split.no", Value::U16(no as u16))
            .kv("split.count", Value::U16(3))
            .kv("split.tensors.count", Value::I32(n as i32));
        for t in group.iter() {
            w = w.tensor(
                &t.info.name,
                &t.info.dims,
                t.info.ty,
                pollster::block_on(m.read_tensor(&t.info.name)).unwrap(),
            );
        }
        std::fs::write(
            dir.join(format!("smol-{:05}-of-00003.gguf", no + 1)),
            w.to_bytes(),
        )
        .unwrap();
    }
    let first = dir.join("smol-00001-of-00003.gguf").display().to_string();
    let sharded = pollster::block_on(GgufModel::open(open_args(&[first]).unwrap())).unwrap();
    assert_eq!(sharded.layout, Layout::Shards);
    assert_eq!(sharded.parts.len(), 3);
    let (a, b) = (
        ModelInfo::from_model(&m).unwrap(),
        ModelInfo::from_model(&sharded).unwrap(),
    );
    assert_eq!(
        (a.tensor_bytes, a.parameters, &a.hparams),
        (b.tensor_bytes, b.parameters, &b.hparams)
    );
    let opts = FitOptions::default();
    let (ea, eb) = (estimate(&a, &opts).unwrap(), estimate(&b, &opts).unwrap());
    assert_eq!(ea, eb);
    let name = "blk.29.ffn_down.weight";
    assert_eq!(
        pollster::block_on(sharded.read_tensor(name)).unwrap(),
        pollster::block_on(m.read_tensor(name)).unwrap()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_quantweb"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn cli_json_matches_the_library() {
    let Some(paths) = model_paths(&[SMOLLM2]) else {
        return;
    };
    let out = cli(&["fit", "--json", "--ctx", "8192", "--kv", "q8_0", &paths[0]]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let e = estimate(
        &info(&paths),
        &FitOptions {
            context_length: 8192,
            kv_type: KvType::Q8_0,
            batch: 512,
        },
    )
    .unwrap();
    assert_eq!(v, serde_json::to_value(&e).unwrap());
    for key in [
        "weights_bytes",
        "kv_cache_bytes",
        "scratch_bytes",
        "total_bytes",
        "rule_of_thumb_bytes",
    ] {
        assert!(v[key].is_u64(), "{key} is an integer");
    }
    assert_eq!(v["by_quant"].as_array().unwrap().len(), 7);

    let out = cli(&["inspect", "--json", &paths[0]]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tensor_bytes"], 96_576_768);
    assert_eq!(
        v["metadata"]["tokenizer.ggml.tokens"]["len"], 49152,
        "long arrays are summarized"
    );
}

#[test]
fn cli_rejects_hostile_files_quickly_and_names_the_error() {
    let dir = std::env::temp_dir();
    let cases: [(&str, Vec<u8>, &str); 3] = [
        (
            "claims 2^62 tensors",
            [
                b"GGUF".as_slice(),
                &3u32.to_le_bytes(),
                &(1u64 << 62).to_le_bytes(),
                &0u64.to_le_bytes(),
            ]
            .concat(),
            "claims",
        ),
        (
            "not gguf",
            b"<html>hello</html>".to_vec(),
            "not a GGUF file",
        ),
        (
            "truncated",
            b"GGUF\x03\x00\x00\x00\x01".to_vec(),
            "truncated",
        ),
    ];
    for (what, bytes, expect) in cases {
        let p = dir.join(format!(
            "quantweb-hostile-{}-{}.gguf",
            std::process::id(),
            what.replace(' ', "_")
        ));
        std::fs::write(&p, bytes).unwrap();
        let t = std::time::Instant::now();
        let out = cli(&["inspect", p.to_str().unwrap()]);
        assert!(
            t.elapsed().as_secs_f64() < 1.0,
            "{what}: took {:?}",
            t.elapsed()
        );
        assert!(!out.status.success(), "{what}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with("error: ") && err.contains(expect),
            "{what}: {err}"
        );
        std::fs::remove_file(p).unwrap();
    }
    let out = cli(&["fit", "--kv", "q4", "x.gguf"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown KV cache type"));
    let out = cli(&["inspect", "/nonexistent/model.gguf"]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("/nonexistent/model.gguf")
    );
}

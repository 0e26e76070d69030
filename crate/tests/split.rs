//! `quantweb split` on the real models, and matrices split over several GPU buffers.
//!
//! - The commands of `tests/golden/split.json` (verified against llama.cpp by
//!   `tests/oracle/check_split.mjs`: shards byte-identical to gguf-split's, greedy output of
//!   node-llama-cpp on them equal to the unsplit model's) give shards with the recorded sha256s;
//!   each shard is a valid GGUF on its own with the split keys in llama.cpp's types; read back
//!   from the first shard, metadata and every tensor's bytes equal the source.
//! - A split model scores bit-identical logits to the unsplit one.
//! - A forced small storage-binding limit splits the embeddings (and every large matrix) over
//!   several buffers, and the logits do not change by a bit.

mod common;

use quantweb::gguf::split::{split_files, SplitLimit, SplitOptions};
use quantweb::gguf::{read_header, GgufModel, Value, INITIAL_WINDOW};
use quantweb::model::{Model, Net, Output, Want};
use quantweb::source::{open_args, FileSource};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A directory under the cargo target tmpdir, removed when dropped (also on a failed assert).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("split-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn prefix(&self) -> String {
        self.0.join("OUT").display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn golden() -> serde_json::Value {
    let text = std::fs::read_to_string(common::root().join("tests/golden/split.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn sha256_file(path: &str) -> String {
    use std::io::Read;
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 8 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    format!("{:x}", h.finalize())
}

fn open(paths: &[String]) -> GgufModel {
    pollster::block_on(GgufModel::open(open_args(paths).unwrap())).unwrap()
}

/// Every tensor of `a` is in `b` with the same name, shape, type and bytes (compared 8 MiB at a
/// time), in the same order; and the metadata are equal.
fn assert_same_model(a: &GgufModel, b: &GgufModel) {
    assert_eq!(a.metadata, b.metadata, "metadata");
    assert_eq!(a.tensors.len(), b.tensors.len());
    for (x, y) in a.tensors.iter().zip(&b.tensors) {
        let (x, y) = (&x.info, &y.info);
        assert_eq!(
            (&x.name, &x.dims, x.ty, x.n_bytes),
            (&y.name, &y.dims, y.ty, y.n_bytes)
        );
        let mut off = 0;
        while off < x.n_bytes {
            let len = (8u64 << 20).min(x.n_bytes - off) as usize;
            let (p, q) = (
                pollster::block_on(a.read_tensor_range(&x.name, off, len)).unwrap(),
                pollster::block_on(b.read_tensor_range(&y.name, off, len)).unwrap(),
            );
            assert!(p == q, "{}: bytes differ in [{off}, +{len})", x.name);
            off += len as u64;
        }
    }
}

/// Each shard on its own: a valid GGUF whose tensors lie inside it, with `split.no` (u16),
/// `split.count` (u16) and `split.tensors.count` (i32); shard 1 has all the model's metadata,
/// the others nothing else.
fn assert_valid_shards(shards: &[String], model: &GgufModel) {
    for (i, path) in shards.iter().enumerate() {
        let src = FileSource::open(Path::new(path)).unwrap();
        let h = pollster::block_on(read_header(&src, INITIAL_WINDOW)).unwrap();
        h.validate().unwrap();
        assert_eq!(h.version, 3);
        assert_eq!(h.metadata["split.no"], Value::U16(i as u16), "{path}");
        assert_eq!(
            h.metadata["split.count"],
            Value::U16(shards.len() as u16),
            "{path}"
        );
        assert_eq!(
            h.metadata["split.tensors.count"],
            Value::I32(model.tensors.len() as i32),
            "{path}"
        );
        let mut rest = h.metadata.clone();
        rest.retain(|k, _| !k.starts_with("split."));
        if i == 0 {
            assert_eq!(rest, model.metadata, "{path}: all metadata in shard 1");
        } else {
            assert!(
                rest.is_empty(),
                "{path}: only split keys, got {:?}",
                rest.keys()
            );
        }
        assert_eq!(h.data_offset % h.alignment, 0);
        let end = h.tensors.iter().map(|t| t.offset + t.n_bytes).max();
        assert!(end.is_none_or(|e| h.data_offset + e <= h.file_size));
    }
}

/// Runs the CLI on a golden case; returns the shard paths after checking their sizes and sha256s.
fn run_case(case: &serde_json::Value, dir: &TempDir) -> Option<Vec<String>> {
    let inputs = strings(&case["inputs"]);
    let names: Vec<&str> = inputs
        .iter()
        .map(|p| p.strip_prefix("models/").unwrap())
        .collect();
    let paths = common::model_paths(&names)?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quantweb"))
        .arg("split")
        .args(&paths)
        .args(strings(&case["options"]))
        .arg(dir.prefix())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shards = case["shards"].as_array().unwrap();
    let mut made: Vec<String> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    made.sort();
    assert_eq!(made.len(), shards.len(), "{}: {made:?}", case["name"]);
    for (path, want) in made.iter().zip(shards) {
        assert_eq!(
            path.strip_prefix(&dir.prefix()).unwrap(),
            want["suffix"].as_str().unwrap()
        );
        assert_eq!(
            std::fs::metadata(path).unwrap().len(),
            want["bytes"].as_u64().unwrap(),
            "{path}"
        );
        assert_eq!(
            sha256_file(path),
            want["sha256"].as_str().unwrap(),
            "{path}: not the bytes llama.cpp was checked on; if the splitter changed on purpose, re-verify with `node tests/oracle/check_split.mjs` (see its header comment), which rewrites tests/golden/split.json"
        );
    }
    Some(made)
}

#[test]
fn golden_commands_give_the_oracle_verified_shards() {
    let g = golden();
    for case in g["cases"].as_array().unwrap() {
        let t = std::time::Instant::now();
        let dir = TempDir::new(case["name"].as_str().unwrap());
        let Some(shards) = run_case(case, &dir) else {
            return;
        };
        let inputs = strings(&case["inputs"]);
        let source = open(
            &common::model_paths(
                &inputs
                    .iter()
                    .map(|p| p.strip_prefix("models/").unwrap())
                    .collect::<Vec<_>>(),
            )
            .unwrap(),
        );
        assert_valid_shards(&shards, &source);
        // Opened from its first shard's name, as a user would.
        let split = open(&shards[..1]);
        assert_eq!(split.parts.len(), shards.len());
        assert_same_model(&source, &split);
        eprintln!(
            "{}: {} shards, checked in {:.1} s",
            case["name"],
            shards.len(),
            t.elapsed().as_secs_f64()
        );
    }
}

/// Shards split again (a shard set as input), a dry run that plans the same sizes, a tensor
/// larger than --max-size alone in its shard, no `.partial` file left, and named errors.
#[test]
fn shards_resplit_dry_run_and_errors() {
    let Some(paths) = common::model_paths(&common::GEMMA_PARTS) else {
        return;
    };
    let dir = TempDir::new("resplit");
    let first = split_files(
        &paths,
        &format!("{}-a", dir.prefix()),
        &SplitOptions {
            limit: SplitLimit::MaxTensors(100),
            no_tensor_first_split: false,
        },
        false,
    )
    .unwrap();
    assert_eq!(first.len(), 3);
    let opts = SplitOptions {
        limit: SplitLimit::MaxBytes(50_000_000),
        no_tensor_first_split: false,
    };
    let plan = split_files(&[first[0].path.clone()], &dir.prefix(), &opts, true).unwrap();
    assert!(
        !Path::new(&plan[0].path).exists(),
        "a dry run writes nothing"
    );
    let again = split_files(&[first[0].path.clone()], &dir.prefix(), &opts, false).unwrap();
    assert_eq!(
        plan.iter().map(|s| s.file_bytes).collect::<Vec<_>>(),
        again.iter().map(|s| s.file_bytes).collect::<Vec<_>>()
    );
    // token_embd (178 MB) is larger than 50 MB: alone in its shard.
    let model = open(&again.iter().map(|s| s.path.clone()).collect::<Vec<_>>());
    let embd = model.tensor("token_embd.weight").unwrap();
    assert_eq!(again[embd.file].n_tensors, 1);
    assert!(std::fs::read_dir(&dir.0).unwrap().all(|e| !e
        .unwrap()
        .path()
        .display()
        .to_string()
        .ends_with(".partial")));
    assert_same_model(&open(&paths), &model);

    // One tensor per shard (236) is allowed; a limit of 0 is not.
    let one_each = SplitOptions {
        limit: SplitLimit::MaxBytes(1),
        no_tensor_first_split: false,
    };
    assert_eq!(
        split_files(&paths, &dir.prefix(), &one_each, true)
            .unwrap()
            .len(),
        236
    );
    let zero = split_files(
        &paths,
        &dir.prefix(),
        &SplitOptions {
            limit: SplitLimit::MaxTensors(0),
            no_tensor_first_split: false,
        },
        true,
    );
    assert!(zero.is_err());
    // An output directory that does not exist: an I/O error naming the file, nothing left.
    let missing = dir.0.join("no/such/dir/OUT").display().to_string();
    let e = split_files(&paths, &missing, &opts, false).unwrap_err();
    assert!(e.to_string().contains("no/such/dir"), "{e}");
}

// ---- on the GPU ----

// Ids far apart, so that with a small binding limit the lookups hit different embedding
// buffers (SmolLM2: 6852 rows per 4 MiB buffer, gemma: 6168).
const SMOLLM2_TOKENS: [u32; 3] = [504, 40000, 3575];
const GEMMA_TOKENS: [u32; 3] = [2, 236761, 818];

/// Logits of every position of `tokens` on the model of `paths`, with the storage binding
/// limit forced down to `limit` bytes if given; and the token embedding's buffer count. All but
/// the last token go as one batch (matrix × matrix kernels), the last as a decode step
/// (matrix × vector).
fn score(paths: &[String], tokens: &[u32], limit: Option<u64>) -> Option<(Vec<f32>, usize)> {
    let mut gpu = common::gpu()?;
    if let Some(l) = limit {
        gpu.limits.max_storage_buffer_binding_size = l;
    }
    let gguf = open(paths);
    let t = std::time::Instant::now();
    let mut m = pollster::block_on(Model::load(gpu, &gguf, 16)).unwrap();
    let loaded = t.elapsed().as_secs_f64();
    let (batch, last) = tokens.split_at(tokens.len() - 1);
    let Output::AllLogits(mut logits) = pollster::block_on(m.eval(batch, Want::AllLogits)).unwrap()
    else {
        unreachable!()
    };
    let Output::Logits(l) = pollster::block_on(m.eval(last, Want::Logits)).unwrap() else {
        unreachable!()
    };
    logits.extend(l);
    eprintln!(
        "  {}: loaded in {loaded:.1} s, {} tokens scored in {:.1} s",
        gguf.parts[0].0,
        tokens.len(),
        t.elapsed().as_secs_f64() - loaded
    );
    let Net::Gpu(net) = &m.net else {
        unreachable!("loaded on the GPU")
    };
    Some((logits, net.token_embd.buffer_count()))
}

/// The unsplit model's logits, computed once per test binary (the GPU is the slow part).
fn reference(which: &str) -> Option<Vec<f32>> {
    static REFS: Mutex<Option<HashMap<String, Vec<f32>>>> = Mutex::new(None);
    let mut refs = REFS.lock().unwrap_or_else(|e| e.into_inner());
    let refs = refs.get_or_insert_with(HashMap::new);
    if let Some(r) = refs.get(which) {
        return Some(r.clone());
    }
    let (paths, tokens) = model_of(which)?;
    let t = std::time::Instant::now();
    let (l, _) = score(&paths, tokens, None)?;
    eprintln!(
        "{which}: reference logits in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    refs.insert(which.into(), l.clone());
    Some(l)
}

fn model_of(which: &str) -> Option<(Vec<String>, &'static [u32])> {
    Some(match which {
        "smollm2" => (
            common::model_paths(&[common::SMOLLM2])?,
            &SMOLLM2_TOKENS[..],
        ),
        _ => (
            common::model_paths(&common::GEMMA_PARTS)?,
            &GEMMA_TOKENS[..],
        ),
    })
}

fn assert_bits_eq(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!("{what}: logit {i}: {} != {}", got[i], want[i]);
    }
}

/// The golden splits of both models (SmolLM2 in 4 shards, gemma's 4 byte chunks in 6), loaded
/// from their first shard, give the unsplit model's logits bit for bit.
#[test]
fn split_models_score_bit_identical() {
    let g = golden();
    for (which, case) in [
        ("smollm2", "smollm2-max-size"),
        ("gemma3", "gemma3-chunks-max-size"),
    ] {
        let case = g["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == case)
            .unwrap();
        let dir = TempDir::new(&format!("gpu-{which}"));
        let Some(shards) = run_case(case, &dir) else {
            return;
        };
        let Some(want) = reference(which) else { return };
        let t = std::time::Instant::now();
        let (got, _) = score(&shards[..1], model_of(which).unwrap().1, None).unwrap();
        eprintln!(
            "{which}: {} shards scored in {:.1} s",
            shards.len(),
            t.elapsed().as_secs_f64()
        );
        assert_bits_eq(&got, &want, &format!("{which} split into {}", shards.len()));
    }
}

/// A 4 MiB binding limit (WebGPU's default is 128 MiB) splits SmolLM2's 30 MB embedding into 8
/// buffers and gemma's 178 MB one into 43; lookups and the tied output projection then run once
/// per buffer. The logits must not change by a bit.
#[test]
fn forced_small_binding_limit_keeps_logits() {
    const LIMIT: u64 = 4 << 20;
    for which in ["smollm2", "gemma3"] {
        let Some(want) = reference(which) else { return };
        let (paths, tokens) = model_of(which).unwrap();
        let t = std::time::Instant::now();
        let (got, parts) = score(&paths, tokens, Some(LIMIT)).unwrap();
        let gguf = open(&paths);
        let embd = gguf.tensor("token_embd.weight").unwrap().info.n_bytes;
        eprintln!(
            "{which}: token_embd ({embd} bytes) in {parts} buffers of at most {LIMIT}, scored in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        assert!(
            parts > 1 && parts as u64 >= embd.div_ceil(LIMIT),
            "{which}: {parts} buffers"
        );
        assert_bits_eq(
            &got,
            &want,
            &format!("{which} with a {LIMIT}-byte binding limit"),
        );
    }
}

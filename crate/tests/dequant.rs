//! `quantweb::quant::dequantize` checked bit for bit against the `gguf` Python package.
//!
//! The goldens (tests/golden/dequant.json) come from tests/golden/make_dequant_goldens.py:
//! synthetic blocks of every supported type with their expected f32 bits, and whole tensors of
//! the two test models identified by absolute offset and the sha256 of their dequantized output.
//! The model tests read the tensor bytes straight from models/ (the gemma model as four byte
//! chunks, read as one stream); without the models they skip, unless QUANTWEB_REQUIRE_MODELS=1.

use quantweb::quant::{dequantize, GgmlType};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
struct Golden {
    model_files: BTreeMap<String, Vec<String>>,
    synthetic: Vec<Synthetic>,
    real: Vec<RealTensor>,
}

#[derive(Deserialize)]
struct Synthetic {
    #[serde(rename = "type")]
    ty: String,
    blocks: Vec<String>,
    input_hex: String,
    expected_f32_le_hex: String,
}

#[derive(Deserialize)]
struct RealTensor {
    model: String,
    tensor: String,
    #[serde(rename = "type")]
    ty: String,
    offset: u64,
    n_bytes: usize,
    n_elements: usize,
    sha256_f32_le: String,
    first8_bits: Vec<u32>,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn golden() -> Golden {
    let path = workspace().join("tests/golden/dequant.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ggml_type(name: &str) -> GgmlType {
    GgmlType::from_name(name).unwrap_or_else(|| panic!("golden names unknown type {name}"))
}

fn from_hex(hex: &str) -> Vec<u8> {
    assert!(hex.len().is_multiple_of(2), "odd-length hex");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("bad hex in golden"))
        .collect()
}

fn f32_le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// `len` bytes at `offset` of the concatenation of `paths`, without joining the files on disk.
fn read_across(paths: &[PathBuf], offset: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let end = offset + len as u64;
    let mut part_start = 0u64;
    for path in paths {
        let part_end = part_start + std::fs::metadata(path).unwrap().len();
        let (from, to) = (offset.max(part_start), end.min(part_end));
        if from < to {
            let mut file = File::open(path).unwrap();
            file.seek(SeekFrom::Start(from - part_start)).unwrap();
            let filled = out.len();
            out.resize(filled + (to - from) as usize, 0);
            file.read_exact(&mut out[filled..]).unwrap();
        }
        part_start = part_end;
    }
    assert_eq!(
        out.len(),
        len,
        "[{offset}, {end}) runs past the end of {paths:?}"
    );
    out
}

/// The model's files, or `None` (after saying so) when one is missing and models are optional.
fn model_paths(golden: &Golden, model: &str) -> Option<Vec<PathBuf>> {
    let files = &golden.model_files[model];
    let paths: Vec<PathBuf> = files
        .iter()
        .map(|f| workspace().join("models").join(f))
        .collect();
    if let Some(f) = files
        .iter()
        .zip(&paths)
        .find(|(_, p)| !p.exists())
        .map(|(f, _)| f)
    {
        if std::env::var("QUANTWEB_REQUIRE_MODELS").as_deref() == Ok("1") {
            panic!(
                "models/{f} missing (QUANTWEB_REQUIRE_MODELS=1): run `cargo xtask fetch-models`"
            );
        }
        println!("skipping: models/{f} missing (run `cargo xtask fetch-models`)");
        return None;
    }
    Some(paths)
}

#[test]
fn synthetic_blocks_match_gguf_py_bit_for_bit() {
    let golden = golden();
    let mut failures = Vec::new();
    for case in &golden.synthetic {
        let ty = ggml_type(&case.ty);
        let input = from_hex(&case.input_hex);
        let expected: Vec<u32> = from_hex(&case.expected_f32_le_hex)
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let got = dequantize(ty, &input).unwrap_or_else(|e| panic!("{ty}: {e}"));
        assert_eq!(got.len(), expected.len(), "{ty}: output length");
        let block = ty.block_size() as usize;
        if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != expected[i]) {
            // Quant cases have one note per block, float cases one for all their elements.
            let note = match case.blocks.get(i / block) {
                Some(note) if block > 1 => format!("block {}: {note}", i / block),
                _ => case.blocks.join("; "),
            };
            failures.push(format!(
                "{ty}: first mismatch at element {i} ({note}): got {} ({:#010x}), gguf-py {} ({:#010x})",
                got[i],
                got[i].to_bits(),
                f32::from_bits(expected[i]),
                expected[i]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} synthetic cases differ:\n{}",
        failures.len(),
        golden.synthetic.len(),
        failures.join("\n")
    );
}

#[test]
fn synthetic_goldens_cover_every_supported_type() {
    let golden = golden();
    for &ty in GgmlType::ALL.iter().filter(|t| t.is_supported()) {
        assert!(
            golden.synthetic.iter().any(|c| ggml_type(&c.ty) == ty),
            "no synthetic golden for {ty}"
        );
    }
}

fn check_real_tensors(model: &str) {
    let golden = golden();
    let Some(paths) = model_paths(&golden, model) else {
        return;
    };
    let cases: Vec<&RealTensor> = golden.real.iter().filter(|c| c.model == model).collect();
    assert!(!cases.is_empty(), "no real-tensor goldens for {model}");
    let mut failures = Vec::new();
    for case in &cases {
        let ty = ggml_type(&case.ty);
        let bytes = read_across(&paths, case.offset, case.n_bytes);
        let got = dequantize(ty, &bytes).unwrap_or_else(|e| panic!("{model} {}: {e}", case.tensor));
        assert_eq!(
            got.len(),
            case.n_elements,
            "{model} {}: element count",
            case.tensor
        );
        let sha = format!("{:x}", Sha256::digest(f32_le_bytes(&got)));
        if sha != case.sha256_f32_le {
            let first8: Vec<u32> = got.iter().take(8).map(|v| v.to_bits()).collect();
            failures.push(format!(
                "{model} {} ({ty}, {} bytes at {}): sha256 {sha}, gguf-py {}; first 8 bits {first8:08x?}, gguf-py {:08x?}",
                case.tensor, case.n_bytes, case.offset, case.sha256_f32_le, case.first8_bits
            ));
        }
    }
    println!("{model}: {} tensors checked", cases.len());
    assert!(
        failures.is_empty(),
        "{} of {} tensors differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn smollm2_tensors_match_gguf_py() {
    check_real_tensors("smollm2");
}

#[test]
fn gemma3_tensors_match_gguf_py() {
    check_real_tensors("gemma3");
}

#[test]
fn read_across_joins_parts() {
    let dir = std::env::temp_dir().join(format!("quantweb-read-across-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let paths: Vec<PathBuf> = (0..3).map(|i| dir.join(format!("part{i}"))).collect();
    let all: Vec<u8> = (0..25u8).collect();
    for (path, chunk) in paths.iter().zip([&all[..10], &all[10..12], &all[12..]]) {
        std::fs::write(path, chunk).unwrap();
    }
    assert_eq!(read_across(&paths, 8, 6), &all[8..14]);
    assert_eq!(read_across(&paths, 0, 25), all);
    assert_eq!(read_across(&paths, 12, 3), &all[12..15]);
    std::fs::remove_dir_all(&dir).unwrap();
}

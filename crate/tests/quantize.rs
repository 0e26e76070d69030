//! `quantweb::quant::quantize` and `quant::convert` checked bit for bit against llama.cpp.
//!
//! The goldens (tests/golden/quant.json) come from tests/golden/make_quant_goldens.py:
//! - synthetic: rows from a generator reproduced here exactly (splitmix64, exact f32 operations),
//!   quantized by llama.cpp's `ggml_quantize_chunk` (oracle build 5b4ebc5) and, for F16, BF16,
//!   Q4_0 … Q8_0, also by the `gguf` Python package (the script checks that both agree). Per
//!   edge-case row a short sha256, for a bulk of random rows one sha256 per type.
//! - real: tensors of the two test models as llama.cpp's `llama_model_quantize --pure
//!   --allow-requantize` wrote them, with the type it chose (its fallbacks) and their sha256.
//!   These need the models and skip without them, unless QUANTWEB_REQUIRE_MODELS=1.

mod common;

use quantweb::gguf::GgufModel;
use quantweb::quant::convert::{self, TensorPlan};
use quantweb::quant::{dequantize, quantize, GgmlType};
use quantweb::source::open_args;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

#[derive(Deserialize)]
struct Golden {
    seed: u64,
    row: usize,
    bulk_rows: usize,
    synthetic: Synthetic,
    real: Vec<RealTensor>,
}

#[derive(Deserialize)]
struct Synthetic {
    edge_rows: Vec<String>,
    edge_input_sha256_16: Vec<String>,
    bulk_input_sha256: String,
    types: BTreeMap<String, SyntheticType>,
}

#[derive(Deserialize)]
struct SyntheticType {
    edge_sha256_16: Vec<String>,
    bulk_sha256: String,
    first_edge_row_hex: String,
}

#[derive(Deserialize)]
struct RealTensor {
    model: String,
    target: String,
    tensor: String,
    dims: Vec<u64>,
    source_type: String,
    #[serde(rename = "type")]
    ty: String,
    sha256: String,
}

fn golden() -> Golden {
    let path = common::root().join("tests/golden/quant.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ggml_type(name: &str) -> GgmlType {
    GgmlType::from_name(name).unwrap_or_else(|| panic!("golden names unknown type {name}"))
}

fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

// ---- the generator of make_quant_goldens.py ----

struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| (self.next() >> 40) as f32 * 2f32.powi(-24))
            .collect()
    }

    /// Irwin-Hall: `(u1 + u2 + u3 + u4 - 2) * 1.7320508`, four whole rows of uniforms.
    fn gauss(&mut self, n: usize) -> Vec<f32> {
        let u: Vec<Vec<f32>> = (0..4).map(|_| self.uniform(n)).collect();
        (0..n)
            .map(|i| (((u[0][i] + u[1][i]) + u[2][i]) + u[3][i] - 2.0) * 1.732_050_8)
            .collect()
    }
}

const KVALUES: [f32; 16] = [
    -127.0, -104.0, -83.0, -65.0, -49.0, -35.0, -22.0, -10.0, 1.0, 13.0, 25.0, 38.0, 53.0, 69.0,
    89.0, 113.0,
];
const DECADES: [f32; 8] = [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3];

/// Edge row `name` (the script's EDGE_ROWS), from a generator seeded for it.
fn edge_row(name: &str, g: &mut SplitMix64, n: usize) -> Vec<f32> {
    let scaled = |v: Vec<f32>, s: f32| v.into_iter().map(|x| x * s).collect::<Vec<f32>>();
    let masked = |v: Vec<f32>, keep: &dyn Fn(usize) -> bool, other: f32| {
        v.into_iter()
            .enumerate()
            .map(|(i, x)| if keep(i) { x } else { other })
            .collect::<Vec<f32>>()
    };
    match name {
        "gauss_1" => g.gauss(n),
        "gauss_0.02" => scaled(g.gauss(n), 0.02),
        "gauss_1e4" => scaled(g.gauss(n), 1e4),
        "gauss_1e-6" => scaled(g.gauss(n), 1e-6),
        "gauss_1e-14" => scaled(g.gauss(n), 1e-14),
        "uniform_positive" => g.uniform(n),
        "uniform_negative" => g.uniform(n).into_iter().map(|x| x - 1.0).collect(),
        "zeros" => vec![0.0; n],
        "constant_0.7" => vec![0.7; n],
        "constant_-3" => vec![-3.0; n],
        "below_group_eps" => vec![5e-16; n],
        "sparse_outliers" => masked(scaled(g.gauss(n), 5.0), &|i| i % 37 == 0, 0.0),
        "zero_subblocks" => masked(g.gauss(n), &|i| (i / 16) % 3 != 0, 0.0),
        "one_outlier" => masked(scaled(g.gauss(n), 0.01), &|i| i != 77, 1000.0),
        "negative_outlier" => masked(g.gauss(n), &|i| i != 300, -50.0),
        "ties_quarter" => (0..n).map(|i| ((i % 16) as f32 - 7.5) * 0.25).collect(),
        "integers_-8_7" => (0..n).map(|i| (i % 16) as f32 - 8.0).collect(),
        "iq4_grid" => (0..n).map(|i| KVALUES[i % 16] * 0.01).collect(),
        "f16_overflow" => scaled(g.gauss(n), 1e5),
        "near_f16_max" => scaled(g.gauss(n), 2e4),
        "decades" => {
            let v = g.gauss(n);
            (0..n).map(|i| v[i] * DECADES[(i / 16) % 8]).collect()
        }
        "near_constant" => g.gauss(n).into_iter().map(|x| 1.0 + x * 1e-7).collect(),
        "f32_subnormal" => scaled(g.gauss(n), 1e-39),
        "alternating_sign" => {
            let u = g.uniform(n);
            (0..n)
                .map(|i| if i % 2 == 0 { 1.0f32 } else { -1.0 } * (1.0 + u[i]))
                .collect()
        }
        _ => panic!("golden names edge row {name:?} that this test does not know"),
    }
}

fn bulk_rows(golden: &Golden) -> Vec<f32> {
    let mut g = SplitMix64(golden.seed + 1000);
    let scales: Vec<f32> = (0..golden.bulk_rows)
        .map(|_| 2f32.powi((g.next() >> 60) as i32 - 10))
        .collect();
    scales
        .iter()
        .flat_map(|&s| g.gauss(golden.row).into_iter().map(move |x| x * s))
        .collect()
}

#[test]
fn generator_matches_the_script() {
    let golden = golden();
    let s = &golden.synthetic;
    for (i, (name, sha)) in s.edge_rows.iter().zip(&s.edge_input_sha256_16).enumerate() {
        let row = edge_row(name, &mut SplitMix64(golden.seed + i as u64), golden.row);
        assert_eq!(&sha256(&f32_le(&row))[..16], sha, "input row {name:?}");
    }
    assert_eq!(
        sha256(&f32_le(&bulk_rows(&golden))),
        s.bulk_input_sha256,
        "bulk input rows"
    );
}

fn f32_le(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn synthetic_rows_match_llama_cpp_bit_for_bit() {
    let golden = golden();
    let edges: Vec<(String, Vec<f32>)> = golden
        .synthetic
        .edge_rows
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let row = edge_row(name, &mut SplitMix64(golden.seed + i as u64), golden.row);
            (name.clone(), row)
        })
        .collect();
    let bulk = bulk_rows(&golden);
    let mut failures = Vec::new();
    for &ty in GgmlType::ALL
        .iter()
        .filter(|t| quantweb::quant::can_quantize(**t))
    {
        if ty == GgmlType::F32 {
            continue;
        }
        let want = golden
            .synthetic
            .types
            .get(ty.name())
            .unwrap_or_else(|| panic!("no synthetic golden for {ty}"));
        for ((name, row), sha) in edges.iter().zip(&want.edge_sha256_16) {
            let got = quantize(ty, row).unwrap();
            if &sha256(&got)[..16] != sha {
                failures.push(format!("{ty}: edge row {name:?} differs"));
            }
        }
        let first = quantize(ty, &edges[0].1).unwrap();
        let n = want.first_edge_row_hex.len() / 2;
        let first_hex: String = first[..n].iter().map(|b| format!("{b:02x}")).collect();
        if first_hex != want.first_edge_row_hex {
            failures.push(format!(
                "{ty}: first bytes {first_hex}, llama.cpp {}",
                want.first_edge_row_hex
            ));
        }
        if sha256(&quantize(ty, &bulk).unwrap()) != want.bulk_sha256 {
            failures.push(format!("{ty}: the {} random rows differ", golden.bulk_rows));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn open(paths: Vec<String>) -> GgufModel {
    pollster::block_on(GgufModel::open(open_args(&paths).unwrap())).unwrap()
}

/// The tensor as `quantweb quantize` writes it: copied, or dequantized and quantized.
fn converted(model: &GgufModel, p: &TensorPlan) -> Vec<u8> {
    let src = pollster::block_on(model.read_tensor(&p.name)).unwrap();
    if !p.converts() {
        return src;
    }
    quantize(p.to, &dequantize(p.from, &src).unwrap()).unwrap()
}

fn check_real(model_name: &str, paths: Option<Vec<String>>) {
    let Some(paths) = paths else { return };
    let golden = golden();
    let model = open(paths);
    let cases: Vec<&RealTensor> = golden
        .real
        .iter()
        .filter(|c| c.model == model_name)
        .collect();
    assert!(!cases.is_empty(), "no real goldens for {model_name}");
    let mut failures = Vec::new();
    for case in &cases {
        let target = ggml_type(&case.target);
        let plans = convert::plan(&model, target, true).unwrap();
        let p = plans.iter().find(|p| p.name == case.tensor).unwrap();
        assert_eq!(p.dims, case.dims, "{}", case.tensor);
        assert_eq!(p.from, ggml_type(&case.source_type), "{}", case.tensor);
        if p.to != ggml_type(&case.ty) {
            failures.push(format!(
                "{} -> {target}: type {}, llama.cpp chose {}",
                case.tensor, p.to, case.ty
            ));
            continue;
        }
        if sha256(&converted(&model, p)) != case.sha256 {
            failures.push(format!(
                "{} -> {target} ({}): bytes differ",
                case.tensor, p.to
            ));
        }
    }
    println!("{model_name}: {} tensors checked", cases.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn real_smollm2_tensors_match_llama_quantize() {
    check_real("smollm2", common::model_paths(&[common::SMOLLM2]));
}

#[test]
fn real_gemma3_tensors_match_llama_quantize() {
    check_real("gemma3", common::model_paths(&common::GEMMA_PARTS));
}

#[test]
fn requantizing_needs_permission_and_reports_the_types() {
    let Some(paths) = common::model_paths(&[common::SMOLLM2]) else {
        return;
    };
    let model = open(paths);
    let err = convert::plan(&model, GgmlType::Q4_K, false).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("Q4_1") && msg.contains("--allow-requantize"),
        "{msg}"
    );
    // Widening needs no permission; 1-D tensors keep their type.
    let plans = convert::plan(&model, GgmlType::F16, false).unwrap();
    let norm = plans
        .iter()
        .find(|p| p.name == "blk.0.attn_norm.weight")
        .unwrap();
    assert_eq!((norm.from, norm.to), (GgmlType::F32, GgmlType::F32));
    assert!(plans
        .iter()
        .filter(|p| p.dims.len() >= 2)
        .all(|p| p.to == GgmlType::F16));
    // Not a quantization target.
    assert!(convert::plan(&model, GgmlType::Q8_1, true).is_err());
}

/// The whole file through `convert::write` (to Q4_1, so that the test stays quick in a debug
/// build: only the Q8_0 embedding converts): metadata, tensor infos and data read back.
#[test]
fn a_converted_file_reads_back_with_the_planned_types_and_metadata() {
    let Some(paths) = common::model_paths(&[common::SMOLLM2]) else {
        return;
    };
    let model = open(paths);
    let plans = convert::plan(&model, GgmlType::Q4_1, true).unwrap();
    let mut out = Vec::new();
    let mut seen = 0;
    let n = pollster::block_on(convert::write(
        &model,
        GgmlType::Q4_1,
        &plans,
        &mut out,
        "memory",
        |i, _| {
            assert_eq!(i, seen);
            seen += 1;
        },
    ))
    .unwrap();
    assert_eq!(n as usize, out.len());
    assert_eq!(seen, plans.len());
    let summary = convert::summarize(&model, GgmlType::Q4_1, &plans);
    assert_eq!(summary.out_bytes, n, "the size announced before writing");
    assert_eq!((summary.tensors, summary.converted), (plans.len(), 1));
    assert_eq!(summary.requantized, 1, "Q8_0 → Q4_1");
    let back = pollster::block_on(GgufModel::open(vec![Box::new(
        quantweb::source::MemorySource::new("converted", out),
    )]))
    .unwrap();
    assert_eq!(back.metadata["general.file_type"].as_u64(), Some(3));
    assert_eq!(
        back.metadata["general.quantization_version"].as_u64(),
        Some(2)
    );
    for (k, v) in &model.metadata {
        if k != "general.file_type" && k != "general.quantization_version" {
            assert_eq!(&back.metadata[k], v, "{k}");
        }
    }
    assert_eq!(back.tensors.len(), plans.len());
    for (t, p) in back.tensors.iter().zip(&plans) {
        assert_eq!(
            (&t.info.name, &t.info.dims, t.info.ty),
            (&p.name, &p.dims, p.to)
        );
    }
    // Only the embedding (Q8_0 in this Q4_1 file) converts; copied tensors keep their bytes.
    let converted_ones: Vec<&str> = plans
        .iter()
        .filter(|p| p.converts())
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(converted_ones, ["token_embd.weight"]);
    for name in ["blk.1.attn_k.weight", "blk.1.ffn_norm.weight"] {
        let p = plans.iter().find(|p| p.name == name).unwrap();
        assert_eq!(
            pollster::block_on(back.read_tensor(name)).unwrap(),
            converted(&model, p),
            "{name}"
        );
    }
}

/// A small model written here: F32 weights (rows of 512 and of 96 values), a norm, and a tensor
/// of a type quantweb cannot read.
fn synthetic_model(odd_tensor: Option<GgmlType>) -> (GgufModel, Vec<f32>, Vec<f32>) {
    use quantweb::gguf::{GgufWriter, Value};
    let wide: Vec<f32> = bulk_rows(&golden())[..512 * 4].to_vec();
    let narrow: Vec<f32> = wide[..96 * 8].iter().map(|x| x * 0.5).collect();
    let f32_bytes = |x: &[f32]| x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
    let mut w = GgufWriter::new()
        .kv("general.architecture", Value::String("llama".into()))
        .kv("general.alignment", Value::U32(64))
        .tensor(
            "blk.0.ffn_down.weight",
            &[512, 4],
            GgmlType::F32,
            f32_bytes(&wide),
        )
        .tensor(
            "blk.0.attn_q.weight",
            &[96, 8],
            GgmlType::F32,
            f32_bytes(&narrow),
        )
        .tensor(
            "blk.0.attn_norm.weight",
            &[96],
            GgmlType::F32,
            f32_bytes(&narrow[..96]),
        );
    if let Some(ty) = odd_tensor {
        let bytes = vec![0u8; ty.bytes_for(256).unwrap() as usize];
        w = w.tensor("blk.0.attn_v.weight", &[256, 1, 1], ty, bytes.clone());
        w = w.tensor(
            "blk.0.attn_k.weight",
            &[256, 2],
            ty,
            [bytes.clone(), bytes].concat(),
        );
    }
    let bytes = w.to_bytes();
    let model = pollster::block_on(GgufModel::open(vec![Box::new(
        quantweb::source::MemorySource::new("synthetic", bytes),
    )]))
    .unwrap();
    (model, wide, narrow)
}

#[test]
fn an_f32_model_converts_with_fallbacks_and_keeps_its_alignment() {
    let (model, wide, narrow) = synthetic_model(None);
    let plans =
        convert::plan(&model, GgmlType::Q4_K, false).expect("f32 sources need no permission");
    let types: Vec<(GgmlType, Option<GgmlType>)> =
        plans.iter().map(|p| (p.to, p.fallback_from)).collect();
    assert_eq!(
        types,
        [
            (GgmlType::Q4_K, None),
            (GgmlType::Q5_0, Some(GgmlType::Q4_K)),
            (GgmlType::F32, None)
        ]
    );
    let mut out = Vec::new();
    pollster::block_on(convert::write(
        &model,
        GgmlType::Q4_K,
        &plans,
        &mut out,
        "memory",
        |_, _| {},
    ))
    .unwrap();
    let back = pollster::block_on(GgufModel::open(vec![Box::new(
        quantweb::source::MemorySource::new("converted", out),
    )]))
    .unwrap();
    assert_eq!(back.metadata["general.alignment"].as_u64(), Some(64));
    assert_eq!(back.metadata["general.file_type"].as_u64(), Some(15));
    assert!(back.tensors.iter().all(|t| t.start % 64 == 0));
    let read = |name: &str| pollster::block_on(back.read_tensor(name)).unwrap();
    assert_eq!(
        read("blk.0.ffn_down.weight"),
        quantize(GgmlType::Q4_K, &wide).unwrap()
    );
    assert_eq!(
        read("blk.0.attn_q.weight"),
        quantize(GgmlType::Q5_0, &narrow).unwrap()
    );
    assert_eq!(
        read("blk.0.attn_norm.weight"),
        pollster::block_on(model.read_tensor("blk.0.attn_norm.weight")).unwrap()
    );
}

#[test]
fn tensors_of_unreadable_types_are_named_when_they_must_change() {
    let (model, _, _) = synthetic_model(Some(GgmlType::IQ2_XXS));
    let err = convert::plan(&model, GgmlType::Q8_0, true).unwrap_err();
    assert!(
        matches!(&err, quantweb::Error::UnsupportedType { ty: GgmlType::IQ2_XXS, tensors } if tensors == "blk.0.attn_k.weight"),
        "{err:?}"
    );
    // A 1-D tensor ([256, 1, 1] as ggml counts) is copied, so its type does not matter; nor
    // does it when the tensor already has the target type.
    let (model, _, _) = synthetic_model(Some(GgmlType::Q8_0));
    let plans = convert::plan(&model, GgmlType::Q8_0, false).unwrap();
    assert!(plans.iter().all(|p| !p.requantizes()));
}

//! GGUF reader on synthetic files built in memory: every value type, v2 and v3, shards, byte
//! chunks, and the hostile headers of the foundation issue (each must give its named error,
//! quickly, without allocating what the header claims).

use quantweb::error::Error;
use quantweb::gguf::{
    read_header, GgufModel, GgufWriter, Layout, Value, ValueType, INITIAL_WINDOW,
};
use quantweb::quant::GgmlType;
use quantweb::source::{ByteSource, MemorySource};
use std::time::Instant;

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    pollster::block_on(f)
}

fn mem(bytes: Vec<u8>) -> Box<dyn ByteSource> {
    Box::new(MemorySource::new("test.gguf", bytes))
}

fn open(bytes: Vec<u8>) -> Result<GgufModel, Error> {
    block_on(GgufModel::open(vec![mem(bytes)]))
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A small valid llama-like model.
fn tiny_model() -> GgufWriter {
    GgufWriter::new()
        .kv("general.architecture", Value::String("llama".into()))
        .kv("llama.block_count", Value::U32(1))
        .kv("llama.embedding_length", Value::U32(32))
        .kv("llama.attention.head_count", Value::U32(4))
        .kv("llama.context_length", Value::U32(128))
        .tensor(
            "token_embd.weight",
            &[32, 8],
            GgmlType::F32,
            f32_bytes(&[0.5; 256]),
        )
        .tensor(
            "blk.0.attn_norm.weight",
            &[32],
            GgmlType::F32,
            f32_bytes(&[1.0; 32]),
        )
        .tensor(
            "blk.0.attn_q.weight",
            &[32, 32],
            GgmlType::Q8_0,
            vec![7u8; 34 * 32],
        )
}

#[test]
fn every_value_type_round_trips() {
    let nested = Value::Array(
        ValueType::Array,
        vec![
            Value::Array(ValueType::I16, vec![Value::I16(-1), Value::I16(2)]),
            Value::Array(ValueType::String, vec![Value::String("x".into())]),
        ],
    );
    let values = vec![
        ("u8", Value::U8(200)),
        ("i8", Value::I8(-100)),
        ("u16", Value::U16(60000)),
        ("i16", Value::I16(-30000)),
        ("u32", Value::U32(4_000_000_000)),
        ("i32", Value::I32(-2_000_000_000)),
        ("f32", Value::F32(1.5)),
        ("bool", Value::Bool(true)),
        ("string", Value::String("héllo ✓".into())),
        ("u64", Value::U64(u64::MAX)),
        ("i64", Value::I64(i64::MIN)),
        ("f64", Value::F64(-2.25e300)),
        ("empty", Value::Array(ValueType::F32, vec![])),
        ("nested", nested),
    ];
    let mut w = tiny_model();
    for (k, v) in &values {
        w = w.kv(&format!("test.{k}"), v.clone());
    }
    let m = open(w.to_bytes()).unwrap();
    for (k, v) in &values {
        assert_eq!(m.metadata.get(&format!("test.{k}")), Some(v), "{k}");
    }
    assert_eq!(m.layout, Layout::Single);
    assert_eq!(m.tensors.len(), 3);
    assert_eq!(
        m.tensor("blk.0.attn_q.weight").unwrap().info.n_bytes,
        34 * 32
    );
}

#[test]
fn version_2_is_read_and_tensor_data_is_addressed() {
    let mut bytes = tiny_model().to_bytes();
    bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    let m = open(bytes).unwrap();
    assert_eq!(m.version, 2);
    let data = block_on(m.read_tensor("blk.0.attn_norm.weight")).unwrap();
    assert_eq!(data, f32_bytes(&[1.0; 32]));
    assert!(matches!(
        block_on(m.read_tensor("nope")),
        Err(Error::NoSuchTensor(_))
    ));
}

#[test]
fn custom_alignment_is_honoured() {
    let bytes = tiny_model()
        .kv("general.alignment", Value::U32(256))
        .to_bytes();
    let h = block_on(read_header(mem(bytes).as_ref(), INITIAL_WINDOW)).unwrap();
    assert_eq!(h.alignment, 256);
    assert_eq!(h.data_offset % 256, 0);
    assert!(h.tensors.iter().all(|t| t.offset % 256 == 0));
}

#[test]
fn byte_chunks_read_as_one_file_even_when_the_header_spans_chunks() {
    let whole = tiny_model().to_bytes();
    // Cut inside the header (byte 40) and inside the tensor data.
    let cuts = [0, 40, 300, whole.len() - 100, whole.len()];
    let parts: Vec<Box<dyn ByteSource>> = cuts
        .windows(2)
        .map(|w| {
            Box::new(MemorySource::new(
                format!("part{}", w[0]),
                whole[w[0]..w[1]].to_vec(),
            )) as Box<dyn ByteSource>
        })
        .collect();
    let m = block_on(GgufModel::open(parts)).unwrap();
    assert_eq!(m.layout, Layout::Chunks);
    assert_eq!(m.parts.len(), 4);
    assert_eq!(
        block_on(m.read_tensor("blk.0.attn_q.weight")).unwrap(),
        vec![7u8; 34 * 32]
    );
}

fn shard(no: u16, count: u16, total: i32, with_meta: bool, tensors: &[(&str, f32)]) -> Vec<u8> {
    let mut w = if with_meta {
        tiny_model()
    } else {
        GgufWriter::new()
    };
    w.tensors.clear();
    w = w
        .kv("split.no", Value::U16(no))
        .kv("split.count", Value::U16(count))
        .kv("split.tensors.count", Value::I32(total));
    for (name, v) in tensors {
        w = w.tensor(name, &[32], GgmlType::F32, f32_bytes(&[*v; 32]));
    }
    w.to_bytes()
}

#[test]
fn shards_are_joined_by_tensor_name() {
    let s = [
        shard(0, 3, 3, true, &[("a", 1.0)]),
        shard(1, 3, 3, false, &[("b", 2.0)]),
        shard(2, 3, 3, false, &[("c", 3.0)]),
    ];
    let m = block_on(GgufModel::open(s.iter().map(|b| mem(b.clone())).collect())).unwrap();
    assert_eq!(m.layout, Layout::Shards);
    assert_eq!(
        m.tensors.iter().map(|t| t.file).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert_eq!(block_on(m.read_tensor("c")).unwrap(), f32_bytes(&[3.0; 32]));
    assert!(
        !m.metadata.contains_key("split.count"),
        "split keys are per-shard bookkeeping"
    );
    assert!(m.metadata.contains_key("llama.block_count"));

    // Missing, misordered and inconsistent shards are named errors.
    let err = |parts: Vec<Vec<u8>>| {
        block_on(GgufModel::open(parts.into_iter().map(mem).collect()))
            .err()
            .unwrap()
            .to_string()
    };
    assert!(err(vec![s[0].clone()]).contains("shard 1 of a 3-shard model, but 1 part(s)"));
    assert!(err(vec![s[0].clone(), s[2].clone(), s[1].clone()]).contains("should be shard 2 of 3"));
    let bad_total = [
        shard(0, 2, 5, true, &[("a", 1.0)]),
        shard(1, 2, 5, false, &[("b", 2.0)]),
    ];
    assert!(
        err(bad_total.to_vec()).contains("split.tensors.count says 5 tensors, the 2 shards hold 2")
    );
    let dup = [
        shard(0, 2, 2, true, &[("a", 1.0)]),
        shard(1, 2, 2, false, &[("a", 2.0)]),
    ];
    assert!(err(dup.to_vec()).contains("duplicate tensor"));
}

/// A raw header for hostile cases: magic, version, counts, then whatever the test appends.
fn raw(n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(n_tensors.to_le_bytes());
    b.extend(n_kv.to_le_bytes());
    b
}

fn kv_header(b: &mut Vec<u8>, key: &str, type_id: u32) {
    b.extend((key.len() as u64).to_le_bytes());
    b.extend(key.as_bytes());
    b.extend(type_id.to_le_bytes());
}

fn tensor_info(b: &mut Vec<u8>, name: &str, dims: &[u64], type_id: u32, offset: u64) {
    b.extend((name.len() as u64).to_le_bytes());
    b.extend(name.as_bytes());
    b.extend((dims.len() as u32).to_le_bytes());
    for d in dims {
        b.extend(d.to_le_bytes());
    }
    b.extend(type_id.to_le_bytes());
    b.extend(offset.to_le_bytes());
}

/// Parses `bytes` (padded with `pad` zero bytes of "file") and returns the error, checking it is
/// quick: no hostile claim may make the reader work or allocate in proportion to it.
fn hostile(mut bytes: Vec<u8>, pad: usize) -> Error {
    bytes.resize(bytes.len() + pad, 0);
    let t = Instant::now();
    let e = open(bytes).err().expect("hostile input must be rejected");
    assert!(
        t.elapsed().as_millis() < 1000,
        "took {:?} on {e}",
        t.elapsed()
    );
    e
}

#[test]
fn hostile_headers_give_named_errors() {
    // Not GGUF at all, and an empty file.
    assert!(matches!(
        hostile(b"PK\x03\x04 not a model".to_vec(), 0),
        Error::BadMagic { .. }
    ));
    assert!(matches!(hostile(vec![], 0), Error::BadMagic { .. }));
    // Versions 1 and big-endian 3.
    let mut v1 = raw(0, 0);
    v1[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert!(matches!(
        hostile(v1, 0),
        Error::UnsupportedVersion { version: 1, .. }
    ));
    let mut be = raw(0, 0);
    be[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert!(matches!(hostile(be, 0), Error::UnsupportedVersion { .. }));
    // Truncated right after the version, and in the middle of a key.
    assert!(matches!(
        hostile(raw(0, 0)[..10].to_vec(), 0),
        Error::Truncated { .. }
    ));
    let mut cut = raw(0, 1);
    kv_header(&mut cut, "general.architecture", 8);
    cut.extend(100u64.to_le_bytes());
    cut.extend(b"llama");
    assert!(matches!(
        hostile(cut, 0),
        Error::LengthBeyondData { claimed: 100, .. } | Error::Truncated { .. }
    ));
    // Absurd counts: 2^60 tensors or key/value pairs in a 1 KiB file.
    assert!(
        matches!(hostile(raw(1 << 60, 0), 1024), Error::LengthBeyondData { claimed: c, .. } if c == 1 << 60)
    );
    assert!(matches!(
        hostile(raw(0, u64::MAX), 1024),
        Error::LengthBeyondData { .. }
    ));
    // A string length near u64::MAX (overflow) and one just beyond the file.
    let mut s = raw(0, 1);
    kv_header(&mut s, "k", 8);
    s.extend(u64::MAX.to_le_bytes());
    assert!(matches!(hostile(s, 64), Error::LengthBeyondData { .. }));
    // An array of 2^61 u64 values, and an array nested 100 deep.
    let mut a = raw(0, 1);
    kv_header(&mut a, "tokenizer.ggml.scores", 9);
    a.extend(10u32.to_le_bytes());
    a.extend((1u64 << 61).to_le_bytes());
    assert!(matches!(hostile(a, 4096), Error::LengthBeyondData { .. }));
    let mut deep = raw(0, 1);
    kv_header(&mut deep, "deep", 9);
    for _ in 0..100 {
        deep.extend(9u32.to_le_bytes());
        deep.extend(1u64.to_le_bytes());
    }
    assert!(matches!(hostile(deep, 64), Error::NestingTooDeep { .. }));
    // Unknown metadata value type, invalid UTF-8 key, duplicate key.
    let mut t = raw(0, 1);
    kv_header(&mut t, "k", 13);
    assert!(matches!(
        hostile(t, 64),
        Error::UnknownValueType { type_id: 13, .. }
    ));
    let mut u = raw(0, 1);
    u.extend(2u64.to_le_bytes());
    u.extend([0xff, 0xfe]);
    u.extend(4u32.to_le_bytes());
    u.extend(1u32.to_le_bytes());
    assert!(matches!(hostile(u, 64), Error::BadUtf8 { .. }));
    let mut d = raw(0, 2);
    for _ in 0..2 {
        kv_header(&mut d, "k", 4);
        d.extend(1u32.to_le_bytes());
    }
    assert!(matches!(hostile(d, 64), Error::Duplicate { .. }));
}

#[test]
fn hostile_tensor_infos_give_named_errors() {
    let with_tensor = |dims: &[u64], ty: u32, offset: u64, pad: usize| {
        let mut b = raw(1, 0);
        tensor_info(&mut b, "t", dims, ty, offset);
        hostile(b, pad)
    };
    assert!(matches!(
        with_tensor(&[32], 99, 0, 4096),
        Error::UnknownTensorType { type_id: 99, .. }
    ));
    assert!(matches!(
        with_tensor(&[], 0, 0, 4096),
        Error::BadShape { .. }
    ));
    assert!(matches!(
        with_tensor(&[1, 1, 1, 1, 1], 0, 0, 4096),
        Error::BadShape { .. }
    ));
    // Dims whose product overflows u64.
    assert!(matches!(
        with_tensor(&[1 << 40, 1 << 40], 0, 0, 4096),
        Error::BadShape { .. }
    ));
    // A row that is not a whole number of Q4_K blocks.
    assert!(matches!(
        with_tensor(&[100, 2], 12, 0, 4096),
        Error::BadShape { .. }
    ));
    // Data beyond the end of the file, an offset that overflows, a misaligned offset.
    assert!(matches!(
        with_tensor(&[1024, 1024], 0, 0, 4096),
        Error::BadTensorOffset { .. }
    ));
    assert!(matches!(
        with_tensor(&[32], 0, u64::MAX - 8, 4096),
        Error::BadTensorOffset { .. }
    ));
    assert!(matches!(
        with_tensor(&[32], 0, 3, 4096),
        Error::BadTensorOffset { .. }
    ));
    // Two tensors sharing bytes, and the same name twice.
    let two = |second_name: &str, second_offset: u64| {
        let mut b = raw(2, 0);
        tensor_info(&mut b, "a", &[64], 0, 0);
        tensor_info(&mut b, second_name, &[64], 0, second_offset);
        hostile(b, 4096)
    };
    assert!(matches!(two("b", 128), Error::OverlappingTensors { .. }));
    assert!(matches!(two("a", 256), Error::Duplicate { .. }));
}

#[test]
fn header_too_large_is_refused_without_reading_it() {
    // A 300 MiB string value is plausible for the length check (the file is that big) but
    // exceeds the header limit: the reader must stop without fetching it.
    struct Huge;
    impl ByteSource for Huge {
        fn name(&self) -> &str {
            "huge"
        }
        fn size(&self) -> u64 {
            1 << 40
        }
        fn read_at(&self, offset: u64, len: usize) -> quantweb::source::ReadFuture<'_> {
            assert!(len <= 1 << 29, "read of {len} bytes at {offset}");
            let mut b = raw(0, 1);
            kv_header(&mut b, "k", 8);
            b.extend((300u64 << 20).to_le_bytes());
            b.resize(len.max(b.len()), b'a');
            Box::pin(std::future::ready(Ok(b
                [offset as usize..offset as usize + len]
                .to_vec())))
        }
    }
    let e = block_on(read_header(&Huge, INITIAL_WINDOW)).err().unwrap();
    assert!(matches!(e, Error::HeaderTooLarge { .. }), "{e}");
}

#[test]
fn missing_required_keys_are_named() {
    let m = open(
        GgufWriter::new()
            .kv("general.architecture", Value::String("llama".into()))
            .to_bytes(),
    )
    .unwrap();
    let e = quantweb::inspect::ModelInfo::from_model(&m).err().unwrap();
    assert!(
        matches!(&e, Error::MissingKey { key, .. } if key == "llama.block_count"),
        "{e}"
    );
    let m = open(
        GgufWriter::new()
            .kv("llama.block_count", Value::U32(1))
            .to_bytes(),
    )
    .unwrap();
    assert!(
        matches!(quantweb::inspect::ModelInfo::from_model(&m), Err(Error::MissingKey { key, .. }) if key == "general.architecture")
    );
    let m = open(
        tiny_model()
            .kv("llama.attention.head_count_kv", Value::String("3".into()))
            .to_bytes(),
    )
    .unwrap();
    assert!(matches!(
        quantweb::inspect::ModelInfo::from_model(&m),
        Err(Error::WrongValueType { .. })
    ));
}

/// The tiny model plus one IQ2_XXS matrix, a type quantweb cannot run.
fn with_iq2_xxs() -> GgufModel {
    open(
        tiny_model()
            .tensor(
                "blk.0.ffn_down.weight",
                &[256, 2],
                GgmlType::IQ2_XXS,
                vec![0; 66 * 2],
            )
            .to_bytes(),
    )
    .unwrap()
}

#[test]
fn unsupported_tensor_types_are_listed_by_name() {
    let m = with_iq2_xxs();
    let info = quantweb::inspect::ModelInfo::from_model(&m).unwrap();
    assert_eq!(info.unsupported_types.len(), 1);
    assert_eq!(info.unsupported_types[0].ty, "IQ2_XXS");
    assert_eq!(info.unsupported_types[0].tensors, ["blk.0.ffn_down.weight"]);
    let e = info.check_supported().unwrap_err().to_string();
    assert!(
        e.contains("IQ2_XXS") && e.contains("blk.0.ffn_down.weight"),
        "{e}"
    );
}

/// `check_runnable` is what the browser calls before downloading: every error a load would give
/// from the header alone, quant types first, then the tokenizer (built only after the upload
/// in a load).
#[test]
fn check_runnable_fails_on_the_header_alone() {
    use quantweb::engine::check_runnable;
    let m = with_iq2_xxs();
    let e = check_runnable(&m).unwrap_err();
    assert!(
        matches!(&e, Error::UnsupportedType { ty: GgmlType::IQ2_XXS, tensors } if tensors == "blk.0.ffn_down.weight"),
        "{e}"
    );
    let m = open(
        tiny_model()
            .kv("tokenizer.ggml.model", Value::String("t5".into()))
            .to_bytes(),
    )
    .unwrap();
    let e = check_runnable(&m).unwrap_err();
    assert!(
        matches!(&e, Error::UnsupportedTokenizer { model, .. } if model == "t5"),
        "{e}"
    );
    let m = open(
        GgufWriter::new()
            .kv("general.architecture", Value::String("mamba".into()))
            .kv("mamba.block_count", Value::U32(1))
            .kv("mamba.embedding_length", Value::U32(32))
            .kv("mamba.context_length", Value::U32(128))
            .tensor(
                "token_embd.weight",
                &[32, 8],
                GgmlType::F32,
                f32_bytes(&[0.5; 256]),
            )
            .to_bytes(),
    )
    .unwrap();
    let e = check_runnable(&m).unwrap_err();
    assert!(
        matches!(&e, Error::UnsupportedArchitecture { arch, .. } if arch == "mamba"),
        "{e}"
    );
}

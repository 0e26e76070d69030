//! Models larger than 4 GiB: offsets are u64 all the way, and loading never needs the whole
//! file (or a whole tensor) in one buffer.
//!
//! The test model is SmolLM2 with a 4 GiB + 1 MiB F32 tensor (`pad.hole`) in front of its
//! tensors, written as a sparse file: the header, then a hole, then SmolLM2's tensors, every
//! one of which starts beyond 4 GiB. On disk it takes ~100 MB (checked with the file's block
//! count), and it is removed afterwards. The hole is declared as a tensor so the file is a GGUF
//! llama.cpp would accept too (its loader requires contiguous tensor offsets).

mod common;

use quantweb::gguf::writer::{assign_offsets, encode_header};
use quantweb::gguf::{GgufModel, Layout, TensorInfo, Value, DEFAULT_ALIGNMENT};
use quantweb::inspect::ModelInfo;
use quantweb::model::{Model, Output, Want};
use quantweb::quant::GgmlType;
use quantweb::source::{open_args, ByteSource, FileSource, ReadFuture};
use std::cell::RefCell;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

const GIB: u64 = 1 << 30;
/// Bytes of the hole tensor in front of the real ones.
const HOLE: u64 = 4 * GIB + (1 << 20);

/// The sparse file and the data offset of its tensors; removed when dropped.
struct BigFile {
    path: PathBuf,
    data_offset: u64,
}

impl Drop for BigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Writes SmolLM2 behind a 4 GiB hole (see the module docs), streaming its tensors 8 MiB at a
/// time.
fn write_big(name: &str) -> Option<(BigFile, GgufModel)> {
    let paths = common::model_paths(&[common::SMOLLM2])?;
    let small = pollster::block_on(GgufModel::open(open_args(&paths).unwrap())).unwrap();
    let hole = TensorInfo {
        name: "pad.hole".into(),
        dims: vec![HOLE / 4],
        ty: GgmlType::F32,
        offset: 0,
        n_elements: HOLE / 4,
        n_bytes: HOLE,
    };
    let mut infos: Vec<TensorInfo> = std::iter::once(hole)
        .chain(small.tensors.iter().map(|t| t.info.clone()))
        .collect();
    let data_bytes = assign_offsets(&mut infos, DEFAULT_ALIGNMENT);
    let kv: Vec<(&str, &Value)> = small
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let header = encode_header(&kv, &infos, DEFAULT_ALIGNMENT);
    let big = BigFile {
        path: Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("big-{name}-{}.gguf", std::process::id())),
        data_offset: header.len() as u64,
    };
    let mut f = std::fs::File::create(&big.path).unwrap();
    f.write_all(&header).unwrap();
    for t in &infos[1..] {
        f.seek(SeekFrom::Start(big.data_offset + t.offset)).unwrap();
        let mut off = 0;
        while off < t.n_bytes {
            let len = (8 << 20).min(t.n_bytes - off);
            let data =
                pollster::block_on(small.read_tensor_range(&t.name, off, len as usize)).unwrap();
            f.write_all(&data).unwrap();
            off += len;
        }
    }
    f.set_len(big.data_offset + data_bytes).unwrap();
    Some((big, small))
}

/// Disk blocks the file really takes.
fn disk_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// Every read a model makes of a file: offset and length.
#[derive(Default)]
struct Reads(Vec<(u64, usize)>);

/// A [`FileSource`] that records its reads.
struct Recorded {
    inner: FileSource,
    reads: Rc<RefCell<Reads>>,
}

impl ByteSource for Recorded {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, offset: u64, len: usize) -> ReadFuture<'_> {
        self.reads.borrow_mut().0.push((offset, len));
        self.inner.read_at(offset, len)
    }
}

fn open_recorded(path: &Path) -> (GgufModel, Rc<RefCell<Reads>>) {
    let reads = Rc::new(RefCell::new(Reads::default()));
    let src = Recorded {
        inner: FileSource::open(path).unwrap(),
        reads: reads.clone(),
    };
    let m = pollster::block_on(GgufModel::open(vec![Box::new(src)])).unwrap();
    (m, reads)
}

/// Inspecting and reading tensors of a 4.1 GiB file whose tensors all lie beyond 4 GiB: the
/// header costs one 4 MiB read, tensor bytes equal SmolLM2's, ranges across and beyond the
/// 4 GiB line read right.
#[test]
fn tensors_beyond_4_gib_read_right() {
    let t = std::time::Instant::now();
    let Some((big, small)) = write_big("read") else {
        return;
    };
    let size = std::fs::metadata(&big.path).unwrap().len();
    let disk = disk_bytes(&big.path);
    eprintln!(
        "{}: {size} bytes, {disk} on disk, written in {:.1} s",
        big.path.display(),
        t.elapsed().as_secs_f64()
    );
    assert!(size > HOLE + small.file_bytes() / 2);
    assert!(disk < 200 << 20, "not sparse: {disk} bytes on disk");

    let (m, reads) = open_recorded(&big.path);
    assert_eq!(m.layout, Layout::Single);
    assert_eq!(
        reads.borrow().0,
        [(0, 4 << 20)],
        "the header is one 4 MiB read"
    );
    let info = ModelInfo::from_model(&m).unwrap();
    assert_eq!(info.file_bytes, size);
    assert_eq!(
        info.parameters,
        HOLE / 4 + ModelInfo::from_model(&small).unwrap().parameters
    );
    assert_eq!(m.metadata, small.metadata);

    // Every SmolLM2 tensor starts past 4 GiB and holds SmolLM2's bytes.
    for t in &small.tensors {
        let b = m.tensor(&t.info.name).unwrap();
        assert!(b.start > 4 * GIB, "{}", t.info.name);
        assert_eq!(b.info.dims, t.info.dims);
        let (a, c) = (
            pollster::block_on(small.read_tensor(&t.info.name)).unwrap(),
            pollster::block_on(m.read_tensor(&t.info.name)).unwrap(),
        );
        assert!(a == c, "{}", t.info.name);
    }
    // The hole reads as zeros: across the 4 GiB line of the file and at its end.
    let at_4gib = 4 * GIB - big.data_offset - 8;
    for off in [at_4gib, HOLE - 4096] {
        let z = pollster::block_on(m.read_tensor_range(
            "pad.hole",
            off,
            4096.min((HOLE - off) as usize),
        ))
        .unwrap();
        assert!(z.iter().all(|&b| b == 0));
    }
    let last = m.tensors.last().unwrap();
    let tail =
        pollster::block_on(m.read_tensor_range(&last.info.name, last.info.n_bytes - 7, 7)).unwrap();
    let want = pollster::block_on(small.read_tensor(&last.info.name)).unwrap();
    assert_eq!(tail, want[want.len() - 7..]);
    assert!(pollster::block_on(m.read_tensor_range("pad.hole", HOLE - 1, 2)).is_err());

    // The CLI reads the same header.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quantweb"))
        .args(["inspect", "--json"])
        .arg(&big.path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["file_bytes"].as_u64(), Some(size));
}

/// Loading the 4.1 GiB model onto the GPU reads only the header window and SmolLM2's bytes,
/// each once and never more than 8 MiB at a time (never the hole), and gives SmolLM2's logits
/// bit for bit.
#[test]
fn model_beyond_4_gib_loads_in_bounded_reads() {
    let Some((big, small)) = write_big("load") else {
        return;
    };
    let Some(gpu) = common::gpu() else { return };
    let tokens = [504u32, 40000];
    let (m, reads) = open_recorded(&big.path);
    let t = std::time::Instant::now();
    let mut model = pollster::block_on(Model::load(gpu, &m, 16)).unwrap();
    eprintln!("loaded in {:.1} s", t.elapsed().as_secs_f64());
    {
        let reads = &reads.borrow().0;
        let largest = reads.iter().map(|r| r.1).max().unwrap();
        let total: u64 = reads.iter().map(|r| r.1 as u64).sum();
        let tensor_bytes: u64 = small.tensors.iter().map(|t| t.info.n_bytes).sum();
        eprintln!(
            "{} reads, largest {largest} bytes, {total} bytes in all (SmolLM2's tensors: {tensor_bytes})",
            reads.len()
        );
        assert!(largest <= 8 << 20, "a read of {largest} bytes");
        // The header window (4 MiB from 0, past SmolLM2's 1.8 MB header), then each tensor
        // byte once.
        assert_eq!(reads[0], (0, 4 << 20));
        assert_eq!(total, tensor_bytes + (4 << 20));
        let hole = big.data_offset..big.data_offset + HOLE;
        assert!(
            reads[1..]
                .iter()
                .all(|&(o, l)| o + l as u64 <= hole.start || o >= hole.end),
            "the hole was read"
        );
    }
    let Output::AllLogits(got) = pollster::block_on(model.eval(&tokens, Want::AllLogits)).unwrap()
    else {
        unreachable!()
    };
    drop(model);

    let gpu = common::gpu().unwrap();
    let mut reference = pollster::block_on(Model::load(gpu, &small, 16)).unwrap();
    let Output::AllLogits(want) =
        pollster::block_on(reference.eval(&tokens, Want::AllLogits)).unwrap()
    else {
        unreachable!()
    };
    assert_eq!(got.len(), want.len());
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!("logit {i}: {} != {}", got[i], want[i]);
    }
}

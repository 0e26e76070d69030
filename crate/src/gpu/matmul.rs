//! Weight matrices on the GPU, still quantized: matrix × vector (decode), matrix × matrix
//! (prefill) and row lookup (token embeddings), for F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
//! Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL and IQ4_XS.
//!
//! **Layout.** WGSL reads storage as `array<u32>`, so every block body must start on a word.
//! Blocks of 20, 24, 84, 144, 136 or 176 bytes already do and are uploaded as they are. Blocks
//! of 18, 22, 34 and 110/210 bytes (Q4_0, IQ4_NL, Q5_0, Q8_0; Q3_K, Q6_K) are 2 bytes off: their
//! f16 `d` (first in the legacy blocks, last in Q3_K/Q6_K) is moved at upload into an array of
//! f16 pairs after all the bodies, and the bodies (16, 20, 32, 108, 208 bytes) are packed
//! back to back. Nothing is padded or dequantized: a buffer holds exactly the tensor's bytes
//! (plus at most 2 bytes to end on a word), so `gpu_bytes() ≤ tensor bytes + 4 × buffers`.
//! F32/F16/BF16 are seen by the shaders as "blocks" of 4 elements, so their row length must be a
//! multiple of 4.
//!
//! **Split buffers.** A matrix larger than the device's storage binding limit is split by rows
//! into several buffers, each with its own d array; every kernel is dispatched once per buffer
//! and writes its rows (the embedding lookup skips ids outside a buffer's rows).
//!
//! **Kernels** (`shaders/`): one dequantization function per type (`dequant.wgsl`, returning a
//! "unit" of 16 consecutive weights sharing their scales, 4 for plain floats), included by
//! - `matvec.wgsl` (n_tokens = 1): a workgroup of [`matvec_wg`](super::matvec_wg) threads (64
//!   on most adapters) computes 4 rows; threads split K by
//!   units, hold their slice of x in registers for the 4 rows, and reduce through workgroup
//!   memory (no subgroups). On CPU adapters (llvmpipe, SwiftShader), where a barrier is a
//!   thread switch, the ROW_PER_THREAD variant gives each invocation a whole row instead;
//! - `matmul.wgsl` (n_tokens > 1): 64 threads per 32 rows × 32 tokens tile, K in steps of 32;
//!   the W tile is dequantized once into workgroup memory, each thread accumulates 4 × 4 (on
//!   CPU adapters, ROW_PER_THREAD: one invocation per row and 32 tokens, 2.6× faster prefill
//!   on SwiftShader);
//! - `embed.wgsl`: one thread per (token, unit).
//!
//! All arithmetic is f32, in the order of `quant::dequantize`, so dequantized weights equal the
//! CPU's bit for bit and products differ from a CPU f32 matmul only by summation order.

use super::{grid, shader::defines, ActKind, Activation, Buffer, GatedAct, Gpu, MatIn, Reads, Rec};
use crate::error::{Error, Result};
use crate::quant::GgmlType;

/// Rows per matvec workgroup (`ROWS` in matvec.wgsl).
const MATVEC_ROWS: u32 = 4;
/// Rows and tokens per matmul tile (`TM`, `TN` in matmul.wgsl).
const TILE: u32 = 32;

/// Where a kernel finds one buffer of a matrix (matvec.wgsl, matmul.wgsl, embed.wgsl).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct PartParams {
    /// Rows in this buffer.
    rows: u32,
    /// cols / elements per unit.
    units_per_row: u32,
    /// First row of this buffer in the whole matrix (and in y).
    row0: u32,
    /// Word offset of the separated f16 d array.
    d_off: u32,
}

/// `Params` of mat_out.wgsl (matvec.wgsl, matmul.wgsl).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct MatParams {
    rows: u32,
    units_per_row: u32,
    row0: u32,
    d_off: u32,
    n_tokens: u32,
    /// Rows of the whole matrix: y is [n_tokens, y_stride].
    y_stride: u32,
    /// Where a split output (q, k, v) changes buffer.
    seg1: u32,
    seg2: u32,
}

/// Where a matrix product goes (mat_out.wgsl).
#[derive(Clone, Copy)]
enum MatOut<'a> {
    Y(&'a Buffer),
    AddTo(&'a Buffer),
    Split([&'a Buffer; 3], [u32; 2]),
    Gated(&'a Buffer, Activation),
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct EmbedParams {
    part: PartParams,
    /// Tokens.
    n: u32,
    scale: f32,
}

/// A weight matrix on the GPU, still quantized. GGUF dims: dims[0] = cols (input features, row
/// length), dims[1] = rows (output features).
pub struct QMatrix {
    pub ty: GgmlType,
    pub rows: u32,
    pub cols: u32,
    /// Consecutive row ranges, each in its own buffer (one unless the matrix exceeds the
    /// storage binding limit).
    parts: Vec<Part>,
}

/// Rows `row0 .. row0 + rows` in one buffer: block bodies, then (for d-separated types) the
/// f16 d array at word `d_off`.
struct Part {
    buf: Buffer,
    row0: u32,
    rows: u32,
    d_off: u32,
}

/// Where a type's blocks keep a 2-byte f16 `d` that breaks word alignment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SplitD {
    /// The block is a whole number of words: uploaded as it is.
    No,
    /// `d` is the first 2 bytes (Q4_0, Q5_0, Q8_0, IQ4_NL).
    First,
    /// `d` is the last 2 bytes (Q3_K, Q6_K).
    Last,
}

/// The upload layout of `ty`, `None` when the GPU kernels do not know it.
fn split_d(ty: GgmlType) -> Option<SplitD> {
    use GgmlType::*;
    Some(match ty {
        F32 | F16 | BF16 | Q4_1 | Q5_1 | Q2_K | Q4_K | Q5_K | IQ4_XS => SplitD::No,
        Q4_0 | Q5_0 | Q8_0 | IQ4_NL => SplitD::First,
        Q3_K | Q6_K => SplitD::Last,
        _ => return None,
    })
}

/// Whether every group of 4 words dequant.wgsl reads of `ty` (`words4`) starts on a 16-byte
/// boundary of the upload layout: block bodies of 16, 32, 144, 176 or 208 bytes, with their
/// parts at multiples of 16.
fn vec4_aligned(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, Q4_0 | Q8_0 | IQ4_NL | Q4_K | Q5_K | Q6_K)
}

/// Elements per block as the shaders see them (`BLOCK` in dequant.wgsl).
fn shader_block(ty: GgmlType) -> u64 {
    ty.block_size().max(4)
}

/// Elements per unit (`4 * UNIT_V4` in dequant.wgsl).
fn unit_elements(ty: GgmlType) -> u32 {
    if ty.block_size() == 1 {
        4
    } else {
        16
    }
}

/// `blocks` (whole ggml blocks of `ty`) in the upload layout, and the word offset of the
/// separated d array (0 when there is none).
fn repack(ty: GgmlType, blocks: &[u8]) -> (Vec<u8>, u32) {
    let split = split_d(ty).expect("repack of a supported type");
    if split == SplitD::No {
        return (blocks.to_vec(), 0);
    }
    let size = ty.type_size() as usize;
    let n = blocks.len() / size;
    let body = size - 2;
    let d_start = n * body;
    let mut out = vec![0u8; (d_start + 2 * n).next_multiple_of(4)];
    let (bodies, ds) = out.split_at_mut(d_start);
    for (i, b) in blocks.chunks_exact(size).enumerate() {
        let (d, rest) = match split {
            SplitD::First => b.split_at(2),
            _ => {
                let (rest, d) = b.split_at(body);
                (d, rest)
            }
        };
        bodies[i * body..][..body].copy_from_slice(rest);
        ds[2 * i..][..2].copy_from_slice(d);
    }
    (out, (d_start / 4) as u32)
}

impl QMatrix {
    /// Uploads the raw GGUF blocks (repacked once as the module documentation says; never a
    /// dequantized copy). Unsupported type -> [`Error::UnsupportedType`].
    pub fn upload(
        gpu: &Gpu,
        name: &str,
        ty: GgmlType,
        dims: &[u64],
        data: &[u8],
    ) -> Result<QMatrix> {
        let limit = gpu
            .limits
            .max_storage_buffer_binding_size
            .min(gpu.limits.max_buffer_size);
        Self::upload_limited(gpu, name, ty, dims, data, limit)
    }

    /// [`upload`](Self::upload) with buffers of at most `limit` bytes (tests pass a tiny one).
    fn upload_limited(
        gpu: &Gpu,
        name: &str,
        ty: GgmlType,
        dims: &[u64],
        data: &[u8],
        limit: u64,
    ) -> Result<QMatrix> {
        let m = Self::create_limited(gpu, name, ty, dims, limit)?;
        if data.len() as u64 != m.rows as u64 * m.row_bytes() {
            return Err(Error::Gpu(format!(
                "{name}: {ty} matrix {dims:?}: {} bytes of data, expected {} rows × {} bytes",
                data.len(),
                m.rows,
                m.row_bytes()
            )));
        }
        m.write_rows(gpu, 0, data)?;
        Ok(m)
    }

    /// Allocates the buffers of a matrix, to be filled by [`write_rows`](Self::write_rows):
    /// so a model streams into the GPU a few rows at a time and never holds a whole tensor.
    pub fn create(gpu: &Gpu, name: &str, ty: GgmlType, dims: &[u64]) -> Result<QMatrix> {
        let limit = gpu
            .limits
            .max_storage_buffer_binding_size
            .min(gpu.limits.max_buffer_size);
        Self::create_limited(gpu, name, ty, dims, limit)
    }

    fn create_limited(
        gpu: &Gpu,
        name: &str,
        ty: GgmlType,
        dims: &[u64],
        limit: u64,
    ) -> Result<QMatrix> {
        if split_d(ty).is_none() {
            return Err(Error::UnsupportedType {
                ty,
                tensors: name.to_string(),
            });
        }
        let bad = |reason: String| Error::Gpu(format!("{name}: {ty} matrix {dims:?}: {reason}"));
        if dims.is_empty() || dims.len() > 4 || dims[2.min(dims.len())..].iter().any(|&d| d != 1) {
            return Err(bad("not a matrix (dims beyond the second must be 1)".into()));
        }
        let (cols, rows) = (dims[0], dims.get(1).copied().unwrap_or(1));
        if cols == 0 || rows == 0 || cols > u32::MAX as u64 || rows > u32::MAX as u64 {
            return Err(bad("empty, or a dimension does not fit in 32 bits".into()));
        }
        if cols % shader_block(ty) != 0 {
            return Err(bad(format!(
                "row length {cols} is not a multiple of {}",
                shader_block(ty)
            )));
        }
        let row_bytes = cols / ty.block_size() * ty.type_size();
        // Each buffer may round up by 2 bytes (the d array) plus 2 (the word). An even number
        // of rows per buffer keeps every part's f16 d pairs whole (see write_rows).
        let mut rows_per_part = (limit.saturating_sub(4) / row_bytes).min(rows);
        if rows_per_part < rows && rows_per_part > 1 {
            rows_per_part &= !1;
        }
        if rows_per_part == 0 {
            return Err(bad(format!(
                "one row takes {row_bytes} bytes, more than a storage buffer binding may hold ({limit})"
            )));
        }
        let blocks_per_row = cols / ty.block_size();
        let parts = (0..rows.div_ceil(rows_per_part))
            .map(|i| {
                let row0 = i * rows_per_part;
                let n = rows_per_part.min(rows - row0);
                let d_off = match split_d(ty) {
                    Some(SplitD::No) => 0,
                    _ => (n * blocks_per_row * (ty.type_size() - 2) / 4) as u32,
                };
                Part {
                    buf: gpu.storage(&format!("{name} [{i}]"), n * row_bytes),
                    row0: row0 as u32,
                    rows: n as u32,
                    d_off,
                }
            })
            .collect();
        Ok(QMatrix {
            ty,
            rows: rows as u32,
            cols: cols as u32,
            parts,
        })
    }

    /// GGUF bytes of one row.
    pub fn row_bytes(&self) -> u64 {
        self.cols as u64 / self.ty.block_size() * self.ty.type_size()
    }

    /// Writes whole rows `row0..` from their GGUF bytes, repacked (see the module docs). Writes
    /// must keep the f16 d pairs whole: `row0` even, and the end even or the last row.
    pub fn write_rows(&self, gpu: &Gpu, row0: u32, data: &[u8]) -> Result<()> {
        let row_bytes = self.row_bytes();
        let n = data.len() as u64 / row_bytes;
        let blocks_per_row = self.cols as u64 / self.ty.block_size();
        let end = row0 as u64 + n;
        let misaligned = |r: u64| r % 2 == 1 && r != self.rows as u64;
        if !(data.len() as u64).is_multiple_of(row_bytes)
            || end > self.rows as u64
            || misaligned(row0 as u64)
            || misaligned(end)
        {
            return Err(Error::Gpu(format!(
                "{} matrix: cannot write {} bytes at row {row0} (rows of {row_bytes} bytes, {} rows, d pairs must stay whole)",
                self.ty,
                data.len(),
                self.rows
            )));
        }
        for part in &self.parts {
            let (p0, p1) = (part.row0 as u64, part.row0 as u64 + part.rows as u64);
            let (lo, hi) = ((row0 as u64).max(p0), end.min(p1));
            if lo >= hi {
                continue;
            }
            let chunk = &data[((lo - row0 as u64) * row_bytes) as usize
                ..((hi - row0 as u64) * row_bytes) as usize];
            let (bytes, d_start) = repack(self.ty, chunk);
            let first_block = (lo - p0) * blocks_per_row;
            match split_d(self.ty) {
                Some(SplitD::No) => {
                    gpu.write(&part.buf, first_block * self.ty.type_size(), &bytes);
                }
                _ => {
                    let body = self.ty.type_size() - 2;
                    let d_at = d_start as usize * 4;
                    gpu.write(&part.buf, first_block * body, &bytes[..d_at]);
                    gpu.write(
                        &part.buf,
                        part.d_off as u64 * 4 + first_block * 2,
                        &bytes[d_at..],
                    );
                }
            }
        }
        Ok(())
    }

    /// Bytes of the GPU buffers holding the matrix.
    pub fn gpu_bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.buf.size()).sum()
    }

    /// Buffers holding the matrix: more than one when it exceeds the binding or buffer limit.
    pub fn buffer_count(&self) -> usize {
        self.parts.len()
    }

    /// Whether a product with `n_tokens` tokens can quantize its f32 input in the kernel
    /// (matvec.wgsl QUANT_IN): one token (a decode step), a quantized activation kind, and the
    /// quantized row fits in workgroup memory beside the reduction's.
    pub fn quantizes_input(&self, gpu: &Gpu, n_tokens: u32) -> bool {
        let bytes = self.cols * 4 + self.cols / 8 + gpu.features.matvec_wg * 16;
        n_tokens == 1
            && ActKind::for_weights(self.ty) != ActKind::F32
            && bytes <= gpu.limits.max_compute_workgroup_storage_size
    }

    /// Whether the decode matvec takes ggml's integer dot products (dot4.wgsl): on devices with
    /// WGSL's packed 4x8 dot product, for the legacy 4-, 5- and 8-bit types fed the q8
    /// activations ggml pairs them with, when x's packed copy fits workgroup memory.
    fn takes_dot4(&self, gpu: &Gpu, n_tokens: u32, x: &MatIn) -> bool {
        use GgmlType::*;
        // Packed quants, an f32 scale and sum per block of 32, and the reduction's partial sums.
        let bytes = self.cols + self.cols / 4 + gpu.features.matvec_wg * 16;
        n_tokens == 1
            && gpu.features.dot4
            && matches!(self.ty, Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0)
            && x.quantize.or(x.quantized) == Some(ActKind::for_weights(self.ty))
            && bytes <= gpu.limits.max_compute_workgroup_storage_size
    }

    /// Units per row (`units_per_row` in the shaders).
    fn units_per_row(&self) -> u32 {
        self.cols / unit_elements(self.ty)
    }

    fn defines(&self, gpu: &Gpu) -> super::shader::Defines {
        defines(&[
            (&format!("TYPE_{}", self.ty.name()), "1"),
            ("WG_SIZE", &gpu.features.matvec_wg.to_string()),
            ("MATVEC_ROWS", &MATVEC_ROWS.to_string()),
            ("TILE", &TILE.to_string()),
        ])
    }

    fn part_params(&self, part: &Part) -> PartParams {
        PartParams {
            rows: part.rows,
            units_per_row: self.units_per_row(),
            row0: part.row0,
            d_off: part.d_off,
        }
    }

    /// Fails unless `buf` holds at least `len` f32 or u32 values.
    fn check_len(&self, what: &str, buf: &Buffer, len: u64) -> Result<()> {
        if buf.size() < len * 4 {
            return Err(Error::Gpu(format!(
                "{} matrix [{} x {}]: {what} buffer has {} bytes, needs {}",
                self.ty,
                self.cols,
                self.rows,
                buf.size(),
                len * 4
            )));
        }
        Ok(())
    }

    /// y[t, r] = Σ_k W[r, k] · x[t, k] for t < n_tokens. x: f32 [n_tokens, cols], y: f32
    /// [n_tokens, rows] (row-major, contiguous from offset 0). Uses a matrix×vector kernel when
    /// n_tokens == 1 (decode) and a tiled matrix×matrix kernel otherwise (prefill). With
    /// `x.delta` (Q8_1 activations, see quantize.rs) Q4_1/Q5_1 add each block's min correction.
    pub fn record_matmul(&self, rec: &mut Rec, x: MatIn, y: &Buffer, n_tokens: u32) -> Result<()> {
        self.record(rec, x, MatOut::Y(y), n_tokens)
    }

    /// [`record_matmul`](Self::record_matmul) adding the product to y (`y += W·x`): the
    /// residual add of the attention output and feed-forward down projections, in passing.
    pub fn record_matmul_add(
        &self,
        rec: &mut Rec,
        x: MatIn,
        y: &Buffer,
        n_tokens: u32,
    ) -> Result<()> {
        self.record(rec, x, MatOut::AddTo(y), n_tokens)
    }

    /// [`record_matmul`](Self::record_matmul) of a matrix made of three (q, k and v uploaded
    /// as one: rows `[0, seg[0])`, `[seg[0], seg[1])` and the rest), each product going to
    /// its own buffer `ys[i]`: f32 [n_tokens, its rows].
    pub fn record_matmul_split(
        &self,
        rec: &mut Rec,
        x: MatIn,
        ys: [&Buffer; 3],
        seg: [u32; 2],
        n_tokens: u32,
    ) -> Result<()> {
        self.record(rec, x, MatOut::Split(ys, seg), n_tokens)
    }

    /// `out[t, i] = act(gate[t, i]) · up[t, i]` for a matrix whose rows alternate gate and up
    /// ([`QMatrix::interleave`]): decoding, the matvec applies the activation as it stores;
    /// a prefill stores the products in `gu` (f32 [n_tokens, rows]) for act.wgsl.
    pub fn record_matmul_gated(
        &self,
        rec: &mut Rec,
        x: MatIn,
        gu: &Buffer,
        out: &Buffer,
        n_tokens: u32,
        act: Activation,
    ) -> Result<()> {
        if n_tokens == 1 {
            return self.record(rec, x, MatOut::Gated(out, act), 1);
        }
        self.record(rec, x, MatOut::Y(gu), n_tokens)?;
        GatedAct::record_interleaved(rec, gu, out, n_tokens * self.rows / 2, act)
    }

    fn record(&self, rec: &mut Rec, x: MatIn, out: MatOut, n_tokens: u32) -> Result<()> {
        if n_tokens == 0 {
            return Ok(());
        }
        let (n, rows) = (n_tokens as u64, self.rows as u64);
        self.check_len("x", x.x, n * self.cols as u64)?;
        let mut seg = [self.rows; 2];
        let mut ys: Vec<&Buffer> = vec![];
        match out {
            MatOut::Y(y) | MatOut::AddTo(y) => {
                self.check_len("y", y, n * rows)?;
                ys.push(y);
            }
            MatOut::Gated(y, _) => {
                self.check_len("y", y, rows / 2)?;
                ys.push(y);
            }
            MatOut::Split(bufs, s) => {
                if !(s[0] <= s[1] && s[1] <= self.rows) {
                    return Err(Error::Gpu(format!(
                        "{} matrix of {} rows: split at rows {s:?}",
                        self.ty, self.rows
                    )));
                }
                for (y, len) in bufs.iter().zip([s[0], s[1] - s[0], self.rows - s[1]]) {
                    self.check_len("y", y, n * len as u64)?;
                }
                seg = s;
                ys.extend(bufs);
            }
        }
        let delta = match x.delta {
            Some(d) if matches!(self.ty, GgmlType::Q4_1 | GgmlType::Q5_1) => {
                self.check_len("delta", d, n * self.cols as u64 / 32)?;
                Some(d)
            }
            _ => None,
        };
        if x.quantize.is_some() && !self.quantizes_input(rec.gpu, n_tokens) {
            return Err(Error::Gpu(format!(
                "{} matrix [{} x {}]: cannot quantize {n_tokens} input rows in the kernel",
                self.ty, self.cols, self.rows
            )));
        }
        let token_tiles = n_tokens.div_ceil(TILE);
        if token_tiles > rec.gpu.limits.max_compute_workgroups_per_dimension {
            return Err(Error::Gpu(format!(
                "matmul of {n_tokens} tokens at once: split the batch"
            )));
        }
        let shader = if n_tokens == 1 {
            "matvec.wgsl"
        } else {
            "matmul.wgsl"
        };
        let mut defs = self.defines(rec.gpu);
        let mut set = |k: &str, v: &str| defs.insert(k.into(), v.into());
        match out {
            MatOut::Y(_) => {}
            MatOut::AddTo(_) => {
                set("ADD_TO", "1");
            }
            MatOut::Split(..) => {
                set("SPLIT3", "1");
            }
            MatOut::Gated(_, act) => {
                set("GATED", "1");
                set(act.define(), "1");
            }
        }
        // The integer path takes the Q8_1 sums in place of the min correction.
        let dot4 = self.takes_dot4(rec.gpu, n_tokens, &x);
        if delta.is_some() {
            if !dot4 {
                set("MIN_CORRECTION", "1");
            }
            set("DELTA_AT", &(3 + ys.len()).to_string());
        }
        if let Some(kind) = x.quantize {
            set("QUANT_IN", "1");
            set("QBLOCK", &format!("{}u", kind.block()));
            if kind == ActKind::Q8_1 && !dot4 {
                set("MIN_CORRECTION", "1");
            }
        }
        if let Some(kind) = x.quantize.or(x.quantized.filter(|_| dot4)) {
            set("XS_V4", &format!("{}u", self.cols / 4));
            for (k, v) in kind.defines() {
                set(&k, &v);
            }
        }
        if dot4 {
            set("DOT4", "1");
            set("PACKED", "1");
        }
        // The weights bound a second time, as vec4s, after every other buffer.
        let vec4_loads = rec.gpu.features.vec4_loads && vec4_aligned(self.ty);
        if vec4_loads {
            let at = 3 + ys.len() + usize::from(delta.is_some());
            set("VEC4_LOADS", "1");
            set("W4_AT", &at.to_string());
        }
        let row_per_thread = rec.gpu.features.cpu;
        if row_per_thread {
            set("ROW_PER_THREAD", "1");
        } else if n_tokens == 1 && rec.gpu.features.subgroups {
            set("SUBGROUPS", "1");
        }
        let pipeline = rec.pipeline(shader, &defs)?;
        // Rows per invocation of the row-per-thread variants: a gate and up pair when gated.
        let rpt = if matches!(out, MatOut::Gated(..)) {
            2
        } else {
            1
        };
        for part in &self.parts {
            let p = rec.params(&MatParams {
                rows: part.rows,
                units_per_row: self.units_per_row(),
                row0: part.row0,
                d_off: part.d_off,
                n_tokens,
                y_stride: self.rows,
                seg1: seg[0],
                seg2: seg[1],
            });
            let per_group = match (row_per_thread, n_tokens) {
                (true, _) => rec.gpu.features.matvec_wg * rpt,
                (false, 1) => MATVEC_ROWS,
                (false, _) => TILE,
            };
            let mut groups = grid(part.rows.div_ceil(per_group));
            if n_tokens > 1 {
                groups.2 = token_tiles;
            }
            let mut entries = vec![&part.buf, x.x, ys[0], &p];
            entries.extend(&ys[1..]);
            entries.extend(delta);
            if vec4_loads {
                entries.push(&part.buf);
            }
            let reads = Reads {
                weights: part.rows as u64 * self.row_bytes(),
                act: 4 * n * self.cols as u64,
                ..Reads::default()
            };
            rec.dispatch(&pipeline, &entries, groups, reads);
        }
        Ok(())
    }

    /// out[t, :] = scale · W[ids[t], :] (dequantized row lookup, for token embeddings). ids: u32
    /// [n], out: f32 [n, cols]. Rows of ids ≥ rows are left unwritten.
    pub fn record_embed(
        &self,
        rec: &mut Rec,
        ids: &Buffer,
        out: &Buffer,
        n: u32,
        scale: f32,
    ) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.check_len("ids", ids, n as u64)?;
        self.check_len("out", out, n as u64 * self.cols as u64)?;
        let threads = n.checked_mul(self.units_per_row()).ok_or_else(|| {
            Error::Gpu(format!(
                "embedding lookup of {n} tokens at once: split the batch"
            ))
        })?;
        let pipeline = rec.pipeline("embed.wgsl", &self.defines(rec.gpu))?;
        for (i, part) in self.parts.iter().enumerate() {
            let p = rec.params(&EmbedParams {
                part: self.part_params(part),
                n,
                scale,
            });
            // n rows in all, whichever parts hold them: counted once.
            let reads = if i == 0 {
                Reads {
                    weights: n as u64 * self.row_bytes(),
                    act: 4 * n as u64,
                    ..Reads::default()
                }
            } else {
                Reads::default()
            };
            rec.dispatch(
                &pipeline,
                &[&part.buf, ids, out, &p],
                grid(threads.div_ceil(rec.gpu.features.matvec_wg)),
                reads,
            );
        }
        Ok(())
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::gpu::{nmse, test_gpu, Rec};
    use crate::quant::dequantize;

    /// Every type the kernels know.
    const TYPES: [GgmlType; 15] = {
        use GgmlType::*;
        [
            F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL,
            IQ4_XS,
        ]
    };

    /// xorshift64*: reproducible test data without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        /// Uniform in [-1, 1).
        fn f32(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        }
    }

    /// Byte offsets of the f16 fields (d, dmin, m) in a block of `ty`.
    fn f16_fields(ty: GgmlType) -> &'static [usize] {
        use GgmlType::*;
        match ty {
            Q4_0 | Q5_0 | Q8_0 | IQ4_NL | IQ4_XS => &[0],
            Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
            Q2_K => &[80, 82],
            Q3_K => &[108],
            Q6_K => &[208],
            _ => &[],
        }
    }

    /// `n` elements of `ty` as GGUF bytes: random bits with every f16 scale finite (normal or
    /// subnormal, any sign) for quantized types, values in [-2, 2) for plain ones.
    fn random_data(rng: &mut Rng, ty: GgmlType, n: usize) -> Vec<u8> {
        let floats = |rng: &mut Rng| (0..n).map(|_| 2.0 * rng.f32()).collect::<Vec<f32>>();
        match ty {
            GgmlType::F32 => bytemuck::cast_slice(&floats(rng)).to_vec(),
            GgmlType::F16 => floats(rng)
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
            GgmlType::BF16 => floats(rng)
                .iter()
                .flat_map(|&v| ((v.to_bits() >> 16) as u16).to_le_bytes())
                .collect(),
            _ => {
                let size = ty.type_size() as usize;
                let mut data: Vec<u8> = (0..n / ty.block_size() as usize * size)
                    .map(|_| rng.next() as u8)
                    .collect();
                for block in data.chunks_exact_mut(size) {
                    for &at in f16_fields(ty) {
                        if block[at + 1] & 0x7C == 0x7C {
                            block[at + 1] &= !0x40; // exponent 31 (inf, NaN) -> 15
                        }
                    }
                }
                data
            }
        }
    }

    /// y[t, r] = Σ_k W[r, k] · x[t, k] with W from `quant::dequantize`, summed in f64.
    fn reference(w: &[f32], x: &[f32], rows: usize, cols: usize, n: usize) -> Vec<f32> {
        let mut y = vec![0f32; n * rows];
        for t in 0..n {
            for r in 0..rows {
                let (wr, xt) = (&w[r * cols..][..cols], &x[t * cols..][..cols]);
                y[t * rows + r] = wr
                    .iter()
                    .zip(xt)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum::<f64>() as f32;
            }
        }
        y
    }

    /// Runs `m` on `n` random tokens, returns (GPU, reference).
    fn run_matmul(
        gpu: &Gpu,
        m: &QMatrix,
        w: &[f32],
        n: u32,
        rng: &mut Rng,
    ) -> (Vec<f32>, Vec<f32>) {
        let (rows, cols) = (m.rows as usize, m.cols as usize);
        let x: Vec<f32> = (0..n as usize * cols).map(|_| rng.f32()).collect();
        let xb = gpu.upload("x", bytemuck::cast_slice(&x));
        let yb = gpu.storage("y", n as u64 * rows as u64 * 4);
        let mut rec = Rec::new(gpu);
        m.record_matmul(&mut rec, MatIn::plain(&xb), &yb, n)
            .unwrap();
        rec.submit();
        let got = pollster::block_on(gpu.read_f32(&yb, n as usize * rows)).unwrap();
        (got, reference(w, &x, rows, cols, n as usize))
    }

    /// Embeds `ids` with `scale`; returns (GPU, expected) where expected is `scale ·` the CPU
    /// dequantized rows.
    fn run_embed(
        gpu: &Gpu,
        m: &QMatrix,
        w_rows: impl Fn(u32) -> Vec<f32>,
        ids: &[u32],
        scale: f32,
    ) -> (Vec<f32>, Vec<f32>) {
        let cols = m.cols as usize;
        let idb = gpu.upload("ids", bytemuck::cast_slice(ids));
        let out = gpu.storage("out", (ids.len() * cols * 4) as u64);
        let mut rec = Rec::new(gpu);
        m.record_embed(&mut rec, &idb, &out, ids.len() as u32, scale)
            .unwrap();
        rec.submit();
        let got = pollster::block_on(gpu.read_f32(&out, ids.len() * cols)).unwrap();
        let want = ids
            .iter()
            .flat_map(|&id| w_rows(id).into_iter().map(|v| scale * v))
            .collect();
        (got, want)
    }

    fn assert_bits_eq(got: &[f32], want: &[f32], what: &str) {
        let bad = got
            .iter()
            .zip(want)
            .position(|(a, b)| a.to_bits() != b.to_bits());
        if let Some(i) = bad {
            panic!("{what}: element {i}: GPU {} != CPU {}", got[i], want[i]);
        }
    }

    /// Column counts: several block multiples per type.
    fn col_choices(ty: GgmlType) -> [u64; 2] {
        match ty.block_size() {
            1 => [12, 100],
            32 => [64, 352],
            _ => [256, 768],
        }
    }

    #[test]
    fn matmul_every_type_against_cpu() {
        let Some(mut gpu) = test_gpu() else { return };
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        // Both matvec variants, whatever the adapter: one row per invocation (CPU adapters)
        // and the cooperative one (GPUs).
        let (cpu, sg) = (gpu.features.cpu, gpu.features.subgroups);
        eprintln!("{}: subgroups {sg}", gpu.adapter_info.name);
        for ty in TYPES {
            for (rows, cols) in [37u64, 67].into_iter().zip(col_choices(ty)) {
                let data = random_data(&mut rng, ty, (rows * cols) as usize);
                let w = dequantize(ty, &data).unwrap();
                let m = QMatrix::upload(&gpu, "w", ty, &[cols, rows], &data).unwrap();
                assert!(
                    m.gpu_bytes() <= data.len() as u64 + 4,
                    "{ty}: {} GPU bytes for {} tensor bytes",
                    m.gpu_bytes(),
                    data.len()
                );
                // The cooperative matvec with subgroupAdd where the adapter has subgroups.
                // Scalar weight loads as well as vec4 ones where the type has them.
                for (n, as_cpu, with_sg, vec4, wg) in [
                    (1, cpu, false, true, 64),
                    (1, !cpu, false, true, 64),
                    (1, false, sg, true, 64),
                    (1, cpu, false, false, 64),
                    (1, !cpu, false, false, 64),
                    // The workgroup sizes matvec_wg picks on other adapters.
                    (1, false, false, true, 128),
                    (1, false, sg, true, 256),
                    (1, true, false, true, 256),
                    (7, cpu, false, true, 64),
                    (64, cpu, false, true, 64),
                    (64, !cpu, false, true, 64),
                    (64, !cpu, false, false, 64),
                ] {
                    gpu.features.cpu = as_cpu;
                    gpu.features.subgroups = with_sg;
                    gpu.features.vec4_loads = vec4;
                    gpu.features.matvec_wg = wg;
                    let (got, want) = run_matmul(&gpu, &m, &w, n, &mut rng);
                    let e = nmse(&got, &want);
                    eprintln!(
                        "{ty:>6} rows {rows} cols {cols} n {n:>2} cpu {as_cpu} subgroups {with_sg} vec4 {vec4} wg {wg}: nmse {e:.1e}"
                    );
                    assert!(
                        e < 1e-10,
                        "{ty} rows {rows} cols {cols} n_tokens {n}: nmse {e}"
                    );
                }
            }
        }
    }

    /// The integer matvec (dot4.wgsl) is ggml's dot product: against the CPU engine's
    /// `vec_dot` of the same quantized activations, whether the kernel quantizes x itself or
    /// recovers the quants from an earlier quantization, in both matvec variants.
    #[test]
    fn dot4_matvec_is_ggmls_integer_dot() {
        use crate::cpu::{dot, QAct};
        let Some(mut gpu) = test_gpu() else { return };
        if !gpu.features.dot4 {
            eprintln!(
                "{}: no packed_4x8_integer_dot_product",
                gpu.adapter_info.name
            );
            return;
        }
        let mut rng = Rng(0xD074);
        let cpu = gpu.features.cpu;
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
        ] {
            let (rows, cols) = (37usize, 352usize);
            let data = random_data(&mut rng, ty, rows * cols);
            let m = QMatrix::upload(&gpu, "w", ty, &[cols as u64, rows as u64], &data).unwrap();
            let x: Vec<f32> = (0..cols).map(|_| rng.f32()).collect();
            let kind = ActKind::for_weights(ty);
            let mut q = QAct::new(kind);
            q.quantize(&x, 1, cols);
            let row = m.row_bytes() as usize;
            let want: Vec<f32> = (0..rows)
                .map(|r| dot(ty, &data[r * row..(r + 1) * row], q.row(0)))
                .collect();
            // What rmsnorm.wgsl / quantize.wgsl leave for the matvec: q · d, and the Q8_1 delta.
            let deq: Vec<f32> =
                q.qs.iter()
                    .enumerate()
                    .map(|(i, &v)| v as f32 * q.d[i / 32])
                    .collect();
            let delta: Vec<f32> = (0..cols / 32)
                .map(|b| {
                    let sum: i32 = q.qs[32 * b..32 * (b + 1)].iter().map(|&v| v as i32).sum();
                    q.s.get(b).map_or(0.0, |s| s - q.d[b] * sum as f32)
                })
                .collect();
            let xb = gpu.upload("x", bytemuck::cast_slice(&x));
            let deqb = gpu.upload("xq", bytemuck::cast_slice(&deq));
            let deltab = gpu.upload("delta", bytemuck::cast_slice(&delta));
            let inputs = [
                (
                    "quantized in the kernel",
                    MatIn {
                        quantize: Some(kind),
                        ..MatIn::plain(&xb)
                    },
                ),
                (
                    "quantized before",
                    MatIn {
                        x: &deqb,
                        delta: (kind == ActKind::Q8_1).then_some(&deltab),
                        quantize: None,
                        quantized: Some(kind),
                    },
                ),
            ];
            for (how, xin) in inputs {
                for (as_cpu, vec4) in [(cpu, true), (!cpu, true), (!cpu, false)] {
                    gpu.features.cpu = as_cpu;
                    gpu.features.vec4_loads = vec4;
                    let y = gpu.storage("y", rows as u64 * 4);
                    let mut rec = Rec::new(&gpu);
                    m.record_matmul(&mut rec, xin, &y, 1).unwrap();
                    rec.submit();
                    let got = pollster::block_on(gpu.read_f32(&y, rows)).unwrap();
                    let e = nmse(&got, &want);
                    eprintln!("{ty:>5} {how}, cpu variant {as_cpu}, vec4 {vec4}: nmse {e:.1e}");
                    assert!(e < 1e-12, "{ty} {how} cpu {as_cpu} vec4 {vec4}: nmse {e}");
                }
            }
        }
    }

    /// The outputs in passing (residual add, q/k/v split, gated activation) store exactly what
    /// the plain product followed by add.wgsl, a copy or act.wgsl would: both matvec variants
    /// and the matmul.
    #[test]
    fn matmul_outputs_in_passing_are_exact() {
        let Some(mut gpu) = test_gpu() else { return };
        let mut rng = Rng(21);
        let cpu = gpu.features.cpu;
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for ty in [GgmlType::Q4_1, GgmlType::Q6_K, GgmlType::F16] {
            let (rows, cols) = (38u32, col_choices(ty)[1] as u32);
            let data = random_data(&mut rng, ty, (rows * cols) as usize);
            let m = QMatrix::upload(&gpu, "w", ty, &[cols as u64, rows as u64], &data).unwrap();
            for (n, as_cpu) in [(1u32, cpu), (1, !cpu), (7, cpu), (40, !cpu)] {
                gpu.features.cpu = as_cpu;
                let gpu = &gpu;
                let read = |b: &Buffer, len: u32| {
                    pollster::block_on(gpu.read_f32(b, len as usize)).unwrap()
                };
                let x = (0..n * cols).map(|_| rng.f32()).collect::<Vec<f32>>();
                let x = gpu.upload("x", bytemuck::cast_slice(&x));
                let base = (0..n * rows).map(|_| rng.f32()).collect::<Vec<f32>>();
                let plain = gpu.storage("plain", (n * rows) as u64 * 4);
                let sum = gpu.upload("sum", bytemuck::cast_slice(&base));
                let seg = [10u32, 24];
                let lens = [seg[0], seg[1] - seg[0], rows - seg[1]];
                let parts = lens.map(|l| gpu.storage("part", (n * l) as u64 * 4));
                let gu = gpu.storage("gu", (n * rows) as u64 * 4);
                let gated = gpu.storage("gated", (n * rows / 2) as u64 * 4);
                let act = Activation::GeluTanh;
                let mut rec = Rec::new(gpu);
                let xin = MatIn::plain(&x);
                m.record_matmul(&mut rec, xin, &plain, n).unwrap();
                m.record_matmul_add(&mut rec, xin, &sum, n).unwrap();
                m.record_matmul_split(&mut rec, xin, [&parts[0], &parts[1], &parts[2]], seg, n)
                    .unwrap();
                m.record_matmul_gated(&mut rec, xin, &gu, &gated, n, act)
                    .unwrap();
                rec.submit();
                let y = read(&plain, n * rows);
                let what = format!("{ty} n {n} cpu {as_cpu}");
                let want: Vec<f32> = base.iter().zip(&y).map(|(b, y)| b + y).collect();
                assert!(bits(&read(&sum, n * rows)) == bits(&want), "{what}: add");
                for (i, (part, len)) in parts.iter().zip(lens).enumerate() {
                    let first = [0, seg[0], seg[1]][i];
                    let want: Vec<f32> = (0..n)
                        .flat_map(|t| {
                            let row = &y[(t * rows + first) as usize..][..len as usize];
                            row.to_vec()
                        })
                        .collect();
                    assert!(
                        bits(&read(part, n * len)) == bits(&want),
                        "{what}: split {i}"
                    );
                }
                // act.wgsl over the plain product, for the gated store.
                let want_gated = gpu.storage("want", (n * rows / 2) as u64 * 4);
                let mut rec = Rec::new(gpu);
                GatedAct::record_interleaved(&mut rec, &plain, &want_gated, n * rows / 2, act)
                    .unwrap();
                rec.submit();
                let (got, want) = (read(&gated, n * rows / 2), read(&want_gated, n * rows / 2));
                assert!(bits(&got) == bits(&want), "{what}: gated");
                assert!(got.iter().any(|&v| v != 0.0));
            }
        }
    }

    #[test]
    fn matmul_embed_every_type_exact() {
        let Some(gpu) = test_gpu() else { return };
        let mut rng = Rng(7);
        for ty in TYPES {
            let (rows, cols) = (29u64, col_choices(ty)[1]);
            let data = random_data(&mut rng, ty, (rows * cols) as usize);
            let w = dequantize(ty, &data).unwrap();
            let m = QMatrix::upload(&gpu, "emb", ty, &[cols, rows], &data).unwrap();
            let row = |id: u32| w[id as usize * cols as usize..][..cols as usize].to_vec();
            let ids = [0, 28, 5, 5, 17, 1];
            for scale in [1.0, 0.3] {
                let (got, want) = run_embed(&gpu, &m, row, &ids, scale);
                assert_bits_eq(&got, &want, &format!("{ty} embed scale {scale}"));
            }
        }
    }

    /// A tiny binding limit splits matrices into buffers of a few rows; results must not change.
    #[test]
    fn matmul_split_buffers() {
        let Some(gpu) = test_gpu() else { return };
        let mut rng = Rng(99);
        for (ty, cols) in [
            (GgmlType::Q6_K, 512u64),
            (GgmlType::Q8_0, 96),
            (GgmlType::Q4_K, 256),
            (GgmlType::F16, 20),
        ] {
            let rows = 45u64;
            let data = random_data(&mut rng, ty, (rows * cols) as usize);
            let w = dequantize(ty, &data).unwrap();
            let row_bytes = data.len() as u64 / rows;
            let m =
                QMatrix::upload_limited(&gpu, "split", ty, &[cols, rows], &data, 4 * row_bytes + 7)
                    .unwrap();
            assert_eq!(m.parts.len(), 12, "{ty}: 45 rows in buffers of 4");
            assert!(m.parts.iter().all(|p| p.buf.size() <= 4 * row_bytes + 7));
            assert_eq!(m.parts.last().unwrap().rows, 1);
            for n in [1, 7, 33] {
                let (got, want) = run_matmul(&gpu, &m, &w, n, &mut rng);
                let e = nmse(&got, &want);
                assert!(e < 1e-10, "{ty} split, n_tokens {n}: nmse {e}");
            }
            let row = |id: u32| w[id as usize * cols as usize..][..cols as usize].to_vec();
            let (got, want) = run_embed(&gpu, &m, row, &[44, 0, 3, 4, 43, 20], 1.0);
            assert_bits_eq(&got, &want, &format!("{ty} split embed"));
        }
        let err =
            QMatrix::upload_limited(&gpu, "huge rows", GgmlType::Q8_0, &[64, 2], &[0; 136], 40);
        assert!(
            matches!(err, Err(Error::Gpu(m)) if m.contains("more than a storage buffer binding"))
        );
    }

    /// 262 147 rows need 65 537 matvec workgroups: more than one grid dimension allows.
    #[test]
    fn matmul_workgroups_over_65535() {
        let Some(gpu) = test_gpu() else { return };
        let mut rng = Rng(3);
        let (rows, cols) = (4 * 65536 + 3, 32u64);
        let data = random_data(&mut rng, GgmlType::Q4_0, (rows * cols) as usize);
        let w = dequantize(GgmlType::Q4_0, &data).unwrap();
        let m = QMatrix::upload(&gpu, "tall", GgmlType::Q4_0, &[cols, rows], &data).unwrap();
        let (got, want) = run_matmul(&gpu, &m, &w, 1, &mut rng);
        let e = nmse(&got, &want);
        assert!(e < 1e-10, "nmse {e}");
        let row = |id: u32| w[id as usize * cols as usize..][..cols as usize].to_vec();
        let (got, want) = run_embed(&gpu, &m, row, &[rows as u32 - 1, 65536 * 4, 0], 1.0);
        assert_bits_eq(&got, &want, "tall embed");
    }

    #[test]
    fn matmul_rejects_what_it_cannot_run() {
        let Some(gpu) = test_gpu() else { return };
        let e = QMatrix::upload(&gpu, "t", GgmlType::Q8_K, &[256, 1], &[0; 292]);
        assert!(matches!(
            e,
            Err(Error::UnsupportedType {
                ty: GgmlType::Q8_K,
                ..
            })
        ));
        for (ty, dims, len) in [
            (GgmlType::Q4_0, vec![32u64, 2], 35usize), // wrong length
            (GgmlType::Q4_K, vec![128, 2], 144),       // row not whole blocks
            (GgmlType::F32, vec![6, 2], 48),           // plain rows must be multiples of 4
            (GgmlType::F32, vec![4, 2, 2], 64),        // not a matrix
        ] {
            let e = QMatrix::upload(&gpu, "t", ty, &dims, &vec![0; len]);
            assert!(matches!(e, Err(Error::Gpu(_))), "{ty} {dims:?} {len}");
        }
        let m = QMatrix::upload(&gpu, "t", GgmlType::F32, &[4, 3], &[0; 48]).unwrap();
        let small = gpu.storage("small", 8);
        let mut rec = Rec::new(&gpu);
        assert!(m
            .record_matmul(&mut rec, MatIn::plain(&small), &small, 1)
            .is_err());
    }

    /// The model of `files` in models/, or `None` (skip) when a file is missing and
    /// QUANTWEB_REQUIRE_MODELS is not 1.
    fn model(files: &[&str]) -> Option<crate::gguf::GgufModel> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
        let paths: Vec<String> = files
            .iter()
            .map(|f| dir.join(f).display().to_string())
            .collect();
        if let Some(missing) = paths.iter().find(|p| !std::path::Path::new(p).exists()) {
            if std::env::var("QUANTWEB_REQUIRE_MODELS").as_deref() == Ok("1") {
                panic!("{missing} is missing: run `cargo xtask fetch-models --all`");
            }
            eprintln!("skipping: {missing} missing (run `cargo xtask fetch-models --all`)");
            return None;
        }
        let parts = crate::source::open_args(&paths).unwrap();
        Some(pollster::block_on(crate::gguf::GgufModel::open(parts)).unwrap())
    }

    const SMOLLM2: [&str; 1] = ["SmolLM2-135M-Instruct.Q4_1.gguf"];
    const GEMMA: [&str; 4] = [
        "gemma-3-270m-q4_k_m.gguf.part00",
        "gemma-3-270m-q4_k_m.gguf.part01",
        "gemma-3-270m-q4_k_m.gguf.part02",
        "gemma-3-270m-q4_k_m.gguf.part03",
    ];

    /// Uploads tensor `name` of `m` (checking it has type `ty`); returns it with its bytes.
    fn real(gpu: &Gpu, m: &crate::gguf::GgufModel, name: &str, ty: GgmlType) -> (QMatrix, Vec<u8>) {
        let t = &m.tensor(name).unwrap().info;
        assert_eq!(t.ty, ty, "{name}");
        let data = pollster::block_on(m.read_tensor(name)).unwrap();
        let q = QMatrix::upload(gpu, name, t.ty, &t.dims, &data).unwrap();
        assert!(q.gpu_bytes() <= t.n_bytes + 4 * q.parts.len() as u64);
        (q, data)
    }

    #[test]
    fn matmul_real_tensors() {
        let Some(gpu) = test_gpu() else { return };
        let (Some(smol), Some(gemma)) = (model(&SMOLLM2), model(&GEMMA)) else {
            return;
        };
        let mut rng = Rng(11);
        use GgmlType::*;
        for (m, name, ty) in [
            (&smol, "blk.0.ffn_down.weight", Q4_1),
            (&gemma, "blk.0.attn_v.weight", Q8_0),
            (&gemma, "blk.0.attn_k.weight", Q5_0),
            (&gemma, "blk.0.attn_output.weight", Q4_K),
            (&gemma, "blk.0.ffn_down.weight", Q6_K),
        ] {
            let (q, data) = real(&gpu, m, name, ty);
            let w = dequantize(ty, &data).unwrap();
            for n in [1, 7] {
                let (got, want) = run_matmul(&gpu, &q, &w, n, &mut rng);
                let e = nmse(&got, &want);
                eprintln!("{name} {ty} [{} x {}] n {n}: nmse {e:.1e}", q.cols, q.rows);
                assert!(e < 1e-10, "{name}: n_tokens {n}: nmse {e}");
            }
        }
    }

    /// Token embeddings of both models, exact; gemma's (Q8_0, 262 144 rows, 178 MB) is larger
    /// than llvmpipe's 128 MiB binding limit and is split.
    #[test]
    fn matmul_real_embeddings() {
        let Some(gpu) = test_gpu() else { return };
        let (Some(smol), Some(gemma)) = (model(&SMOLLM2), model(&GEMMA)) else {
            return;
        };
        for (m, ty, ids) in [
            (&smol, GgmlType::Q8_0, vec![0u32, 1, 49151, 12345, 1]),
            (&gemma, GgmlType::Q8_0, vec![2, 262143, 131072, 100000, 0]),
        ] {
            let (q, data) = real(&gpu, m, "token_embd.weight", ty);
            let row_bytes = data.len() / q.rows as usize;
            let row =
                |id: u32| dequantize(ty, &data[id as usize * row_bytes..][..row_bytes]).unwrap();
            let (got, want) = run_embed(&gpu, &q, row, &ids, 1.0);
            assert_bits_eq(&got, &want, &format!("{ty} token_embd"));
            eprintln!(
                "token_embd {ty} [{} x {}]: {} buffers, {} GPU bytes for {} tensor bytes",
                q.cols,
                q.rows,
                q.parts.len(),
                q.gpu_bytes(),
                data.len()
            );
        }
    }

    /// Informational: matvec (1 token) and matmul (32 tokens) time of SmolLM2's ffn_down on
    /// this adapter, with the CPU-adapter variants and without.
    #[test]
    fn matmul_time_smollm2_ffn_down() {
        let Some(mut gpu) = test_gpu() else { return };
        let Some(smol) = model(&SMOLLM2) else { return };
        let (q4, _) = real(&gpu, &smol, "blk.0.ffn_down.weight", GgmlType::Q4_1);
        let f = vec![0.25f32; (q4.cols * q4.rows) as usize];
        let dims = [q4.cols as u64, q4.rows as u64];
        let f32m =
            QMatrix::upload(&gpu, "f32", GgmlType::F32, &dims, bytemuck::cast_slice(&f)).unwrap();
        let x = gpu.upload(
            "x",
            bytemuck::cast_slice(&vec![0.5f32; 32 * q4.cols as usize]),
        );
        let y = gpu.storage("y", 32 * q4.rows as u64 * 4);
        // Seconds per product, over 10 in one submission.
        let time = |gpu: &Gpu, q: &QMatrix, xin: MatIn, n: u32| {
            let run = |reps: u32| {
                let mut rec = Rec::new(gpu);
                for _ in 0..reps {
                    q.record_matmul(&mut rec, xin, &y, n).unwrap();
                }
                rec.submit();
                pollster::block_on(gpu.read(&y, 4)).unwrap();
            };
            run(1);
            let t = std::time::Instant::now();
            run(10);
            t.elapsed().as_secs_f64() / 10.0
        };
        let report = |gpu: &Gpu, q: &QMatrix, n: u32, what: &str, s: f64| {
            eprintln!(
                "ffn_down [{} x {}] {} × {n} tokens on {} ({what}): {:.0} µs, {:.1} GFLOP/s",
                q.cols,
                q.rows,
                q.ty,
                gpu.adapter_info.name,
                s * 1e6,
                2.0 * (q.cols * q.rows * n) as f64 / s / 1e9
            );
        };
        let dot4 = gpu.features.dot4;
        for (q, cpu) in [(&q4, true), (&q4, false), (&f32m, true), (&f32m, false)] {
            gpu.features.cpu = cpu;
            for n in [1, 32] {
                let s = time(&gpu, q, MatIn::plain(&x), n);
                report(&gpu, q, n, &format!("cpu variant {cpu}"), s);
            }
            // Decode as the model runs it: Q8_1 activations quantized in the kernel, with the
            // f32 product and with the integer one.
            if q.ty == GgmlType::Q4_1 {
                let xin = MatIn {
                    quantize: Some(ActKind::Q8_1),
                    ..MatIn::plain(&x)
                };
                for with_dot4 in [false, dot4] {
                    gpu.features.dot4 = with_dot4;
                    let s = time(&gpu, q, xin, 1);
                    report(
                        &gpu,
                        q,
                        1,
                        &format!("cpu variant {cpu}, Q8_1 in, dot4 {with_dot4}"),
                        s,
                    );
                }
            }
        }
    }

    #[test]
    fn matvec_wg_follows_the_adapter() {
        use crate::gpu::matvec_wg;
        let l = wgpu::Limits::default();
        // Unknown subgroups (the browser), lavapipe, NVIDIA, AMD, Qualcomm.
        for (sg, wg) in [(0, 64), (8, 64), (32, 64), (64, 128), (128, 256)] {
            assert_eq!(matvec_wg(&l, sg), wg, "subgroups of {sg}");
        }
        let small = wgpu::Limits {
            max_compute_invocations_per_workgroup: 96,
            ..l
        };
        assert_eq!(matvec_wg(&small, 64), 64);
    }

    #[test]
    fn repack_moves_d_out_of_the_blocks() {
        // Two Q6_K blocks: bodies back to back, then both d (last 2 bytes of each block).
        let data: Vec<u8> = (0..420).map(|i| i as u8).collect();
        let (out, d_off) = repack(GgmlType::Q6_K, &data);
        assert_eq!((out.len(), d_off), (420, 104));
        assert_eq!(out[..208], data[..208]);
        assert_eq!(out[208..416], data[210..418]);
        assert_eq!(out[416..], [data[208], data[209], data[418], data[419]]);
        // Three Q8_0 blocks: d first in ggml; the d array is padded to a word.
        let data: Vec<u8> = (0..102).map(|i| i as u8).collect();
        let (out, d_off) = repack(GgmlType::Q8_0, &data);
        assert_eq!((out.len(), d_off), (104, 24));
        assert_eq!(out[32..64], data[36..68]);
        assert_eq!(out[96..102], [0, 1, 34, 35, 68, 69]);
    }
}

//! Loading a model's weights into a backend, tensor by tensor: a few MiB of rows at a time go
//! from the source to the backend's storage, so nothing outside it ever holds a whole matrix.

use super::{Config, Layer, LoadProgress, Transformer, BATCH};
use crate::backend::{Backend, GateUp, Qkv, Shape};
use crate::error::{Error, Result};
use crate::gguf::{GgufModel, TensorInfo};
use crate::quant::{dequantize, GgmlType};
use std::cell::{Cell, RefCell};

/// Bytes of a matrix read and stored at once: what memory outside the backend holds of it.
const UPLOAD_CHUNK: u64 = 8 << 20;

/// `rows` rows of tensor `name` from row `first` (`None`: all of them).
struct Rows {
    name: String,
    first: u64,
    rows: Option<u64>,
}

impl Rows {
    fn all(name: String) -> Rows {
        Rows {
            name,
            first: 0,
            rows: None,
        }
    }

    fn range(name: &str, first: u64, rows: u64) -> Rows {
        Rows {
            name: name.to_string(),
            first,
            rows: Some(rows),
        }
    }
}

pub(super) struct Loader<'g, B, P> {
    pub backend: B,
    gguf: &'g GgufModel,
    source_name: String,
    total: u64,
    loaded: Cell<u64>,
    progress: RefCell<P>,
}

impl<'g, B: Backend, P: FnMut(LoadProgress)> Loader<'g, B, P> {
    pub fn new(backend: B, gguf: &'g GgufModel, progress: P) -> Self {
        Loader {
            backend,
            gguf,
            source_name: gguf.parts.first().map(|p| p.0.clone()).unwrap_or_default(),
            total: gguf.tensors.iter().map(|t| t.info.n_bytes).sum(),
            loaded: Cell::new(0),
            progress: RefCell::new(progress),
        }
    }

    fn tick(&self, tensor: &str, bytes: usize) {
        self.loaded.set(self.loaded.get() + bytes as u64);
        (self.progress.borrow_mut())(LoadProgress {
            loaded: self.loaded.get(),
            total: self.total,
            tensor,
        });
    }

    fn info(&self, name: &str) -> Result<TensorInfo> {
        self.gguf
            .tensor(name)
            .map(|t| t.info.clone())
            .ok_or_else(|| Error::NoSuchTensor(name.to_string()))
    }

    fn has(&self, name: &str) -> bool {
        self.gguf.tensor(name).is_some()
    }

    /// The tensor of a row range and how many rows the range has.
    fn rows_of(&self, r: &Rows) -> Result<(TensorInfo, u64)> {
        let t = self.info(&r.name)?;
        let all = t.dims.get(1).copied().unwrap_or(1);
        let rows = r.rows.unwrap_or(all);
        if r.first + rows > all {
            return Err(Error::BadShape {
                source_name: self.source_name.clone(),
                reason: format!("{} rows expected", r.first + rows),
                tensor: r.name.clone(),
                dims: t.dims,
            });
        }
        Ok((t, rows))
    }

    /// Whether `srcs` can be one matrix: one type and row length, and every range but the last
    /// an even number of rows (the GPU's QMatrix::write_rows keeps f16 d pairs whole).
    fn stackable(&self, srcs: &[Rows]) -> Result<bool> {
        let shapes = srcs
            .iter()
            .map(|r| self.rows_of(r))
            .collect::<Result<Vec<_>>>()?;
        let (t0, _) = &shapes[0];
        Ok(shapes
            .iter()
            .all(|(t, _)| t.ty == t0.ty && t.dims[0] == t0.dims[0])
            && shapes[..shapes.len() - 1].iter().all(|(_, r)| r % 2 == 0))
    }

    /// One matrix of the row ranges `srcs`, stacked, or interleaved row by row (two ranges of
    /// equal length: gate and up).
    async fn stacked(&self, srcs: Vec<Rows>, interleave: bool) -> Result<B::Matrix> {
        let shapes = srcs
            .iter()
            .map(|r| self.rows_of(r))
            .collect::<Result<Vec<_>>>()?;
        let (t0, _) = &shapes[0];
        let total: u64 = shapes.iter().map(|(_, r)| r).sum();
        let label = srcs
            .iter()
            .map(|r| match r.rows {
                None => r.name.clone(),
                Some(_) => format!("{}[{}..]", r.name, r.first),
            })
            .collect::<Vec<_>>()
            .join(" + ");
        let mut m = self.backend.matrix(&label, t0.ty, &[t0.dims[0], total])?;
        let row_bytes = t0.ty.bytes_for(t0.dims[0]).ok_or_else(|| Error::BadShape {
            source_name: self.source_name.clone(),
            reason: format!("rows are not whole {} blocks", t0.ty),
            tensor: srcs[0].name.clone(),
            dims: t0.dims.clone(),
        })?;
        let per_read = (UPLOAD_CHUNK / row_bytes).max(2) & !1;
        if interleave {
            let rows = shapes[0].1;
            let mut row = 0u64;
            while row < rows {
                let n = (per_read / 2).max(1).min(rows - row);
                let a = self.read_rows(&srcs[0], row, n, row_bytes).await?;
                let b = self.read_rows(&srcs[1], row, n, row_bytes).await?;
                let both: Vec<u8> = a
                    .chunks(row_bytes as usize)
                    .zip(b.chunks(row_bytes as usize))
                    .flat_map(|(a, b)| a.iter().chain(b).copied())
                    .collect();
                self.backend.write_rows(&mut m, 2 * row as u32, &both)?;
                self.tick(&srcs[0].name, both.len());
                row += n;
            }
        } else {
            let mut dst = 0u64;
            for (r, (_, rows)) in srcs.iter().zip(&shapes) {
                let mut row = 0u64;
                while row < *rows {
                    let n = per_read.min(rows - row);
                    let data = self.read_rows(r, row, n, row_bytes).await?;
                    self.backend.write_rows(&mut m, (dst + row) as u32, &data)?;
                    self.tick(&r.name, data.len());
                    row += n;
                }
                dst += rows;
            }
        }
        Ok(m)
    }

    /// Rows `row..row + n` of the range `r`.
    async fn read_rows(&self, r: &Rows, row: u64, n: u64, row_bytes: u64) -> Result<Vec<u8>> {
        let at = (r.first + row) * row_bytes;
        self.gguf
            .read_tensor_range(&r.name, at, (n * row_bytes) as usize)
            .await
    }

    async fn matrix(&self, name: String) -> Result<B::Matrix> {
        self.stacked(vec![Rows::all(name)], false).await
    }

    /// A tensor of f32 weights (norms, biases, rope factors), converted from whatever type it
    /// is stored in.
    async fn vector(&self, name: String) -> Result<B::Vector> {
        let t = self.info(&name)?;
        let data = self.gguf.read_tensor(&name).await?;
        self.tick(&name, data.len());
        let values = match t.ty {
            GgmlType::F32 => bytemuck::pod_collect_to_vec(&data),
            ty => dequantize(ty, &data)?,
        };
        Ok(self.backend.vector(&name, &values))
    }

    async fn optional(&self, name: String) -> Result<Option<B::Vector>> {
        if self.has(&name) {
            self.vector(name).await.map(Some)
        } else {
            Ok(None)
        }
    }

    /// q, k and v: one matrix where they share a type, phi3's fused `attn_qkv` as its ranges.
    async fn qkv(&self, c: &Config, n: impl Fn(&str) -> String) -> Result<Qkv<B::Matrix>> {
        let (q_rows, kv_rows) = (
            (c.n_head * c.head_dim) as u64,
            (c.n_head_kv * c.head_dim) as u64,
        );
        let qkv = if self.has(&n("attn_qkv.weight")) {
            let t = n("attn_qkv.weight");
            [(0, q_rows), (q_rows, kv_rows), (q_rows + kv_rows, kv_rows)]
                .map(|(first, rows)| Rows::range(&t, first, rows))
        } else {
            ["attn_q", "attn_k", "attn_v"].map(|t| Rows::all(n(&format!("{t}.weight"))))
        };
        Ok(if self.stackable(&qkv)? {
            Qkv::Fused(self.stacked(qkv.into(), false).await?)
        } else {
            let [q, k, v] = qkv;
            Qkv::Separate([
                self.stacked(vec![q], false).await?,
                self.stacked(vec![k], false).await?,
                self.stacked(vec![v], false).await?,
            ])
        })
    }

    /// gate and up: interleaved where they share a type; phi3's fused `ffn_up` as its halves.
    async fn gate_up(&self, c: &Config, n: impl Fn(&str) -> String) -> Result<GateUp<B::Matrix>> {
        let ff = c.n_ff as u64;
        let gate_up = if self.has(&n("ffn_gate.weight")) {
            [
                Rows::all(n("ffn_gate.weight")),
                Rows::all(n("ffn_up.weight")),
            ]
        } else {
            // ggml_swiglu of phi3's fused [gate; up] output: silu of the first half.
            let t = n("ffn_up.weight");
            [Rows::range(&t, 0, ff), Rows::range(&t, ff, ff)]
        };
        let same_rows = self.rows_of(&gate_up[0])?.1 == self.rows_of(&gate_up[1])?.1;
        Ok(if same_rows && self.stackable(&gate_up)? {
            GateUp::Interleaved(self.stacked(gate_up.into(), true).await?)
        } else {
            let [g, u] = gate_up;
            GateUp::Separate([
                self.stacked(vec![g], false).await?,
                self.stacked(vec![u], false).await?,
            ])
        })
    }

    async fn layer(&self, c: &Config, il: usize, n_ctx: u32) -> Result<Layer<B>> {
        let n = |s: &str| format!("blk.{il}.{s}");
        // A sliding-window layer keeps a ring of the window plus one batch.
        let cells = if c.sliding[il] {
            n_ctx.min(c.window + BATCH)
        } else {
            n_ctx
        };
        Ok(Layer {
            attn_norm: self.vector(n("attn_norm.weight")).await?,
            attn_qkv: self.qkv(c, n).await?,
            attn_q_bias: self.optional(n("attn_q.bias")).await?,
            attn_k_bias: self.optional(n("attn_k.bias")).await?,
            attn_v_bias: self.optional(n("attn_v.bias")).await?,
            attn_q_norm: self.optional(n("attn_q_norm.weight")).await?,
            attn_k_norm: self.optional(n("attn_k_norm.weight")).await?,
            attn_output: self.matrix(n("attn_output.weight")).await?,
            post_attention_norm: self.optional(n("post_attention_norm.weight")).await?,
            ffn_norm: self.vector(n("ffn_norm.weight")).await?,
            ffn_gate_up: self.gate_up(c, n).await?,
            ffn_down: self.matrix(n("ffn_down.weight")).await?,
            post_ffw_norm: self.optional(n("post_ffw_norm.weight")).await?,
            kv: self
                .backend
                .kv_cache(&n("kv"), cells, c.n_head_kv, c.head_dim),
        })
    }

    /// llama.cpp's get_rope_factors: llama3's rope_freqs; else phi3's long factors when the
    /// context is longer than the original one, its short ones otherwise.
    async fn rope_factors(&self, c: &Config, n_ctx: u32) -> Result<Option<B::Vector>> {
        if self.has("rope_freqs.weight") {
            Ok(Some(self.vector("rope_freqs.weight".into()).await?))
        } else if n_ctx > c.n_ctx_orig {
            self.optional("rope_factors_long.weight".into()).await
        } else {
            self.optional("rope_factors_short.weight".into()).await
        }
    }

    pub async fn transformer(self, c: &Config, n_ctx: u32) -> Result<Transformer<B>> {
        let mut layers = Vec::with_capacity(c.n_layer as usize);
        for il in 0..c.n_layer as usize {
            layers.push(self.layer(c, il, n_ctx).await?);
        }
        let token_embd = self.matrix("token_embd.weight".into()).await?;
        let output = match self.has("output.weight") {
            true => Some(self.matrix("output.weight".into()).await?),
            false => None,
        };
        let output_norm = self.vector("output_norm.weight".into()).await?;
        let rope_factors = self.rope_factors(c, n_ctx).await?;
        let shape = Shape {
            batch: BATCH,
            n_embd: c.n_embd,
            n_head: c.n_head,
            n_head_kv: c.n_head_kv,
            head_dim: c.head_dim,
            n_ff: c.n_ff,
            n_vocab: c.n_vocab,
        };
        let matrices: Vec<&B::Matrix> = layers
            .iter()
            .flat_map(|l| l.matrices())
            .chain([&token_embd])
            .chain(&output)
            .collect();
        let state = self.backend.state(shape, &matrices);
        Ok(Transformer {
            backend: self.backend,
            token_embd,
            output_norm,
            rope_factors,
            output,
            layers,
            state,
        })
    }
}

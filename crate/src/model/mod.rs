//! The forward pass: llama (SmolLM2, Llama, Mistral) and gemma3, on the GPU.
//!
//! Weights stay quantized ([`QMatrix`]); every buffer is allocated once for a context length and
//! a batch size; a batch of tokens is recorded into one command encoder and submitted once, and
//! only what the caller wants comes back (a token id, one row of logits, or all rows).

mod config;

pub use config::{Arch, Config, SUPPORTED_ARCHITECTURES};

use crate::error::{Error, Result};
use crate::gguf::GgufModel;
use crate::gpu::{
    ActQuant, Add, Argmax, Attention, GatedAct, Gpu, KvCache, Pos, PostNorm, QMatrix, Rec, RopeQ,
    RopeSpec,
};
use crate::inspect::ModelInfo;
use crate::quant::{dequantize, GgmlType};

/// Tokens per prefill step. Sizes the activation buffers and the sliding-window caches.
pub const BATCH: u32 = 64;

/// Bytes of a matrix read and uploaded at once while loading: what the CPU side holds of it.
const UPLOAD_CHUNK: u64 = 8 << 20;

/// One transformer block, fields named by their GGUF tensors (`blk.N.<name>`). phi3's fused
/// `attn_qkv` and `ffn_up` (gate then up) are loaded as the row ranges that are attn_q/k/v and
/// ffn_gate/up, so the forward pass is the same for every architecture.
pub struct Layer {
    pub attn_norm: wgpu::Buffer,                   // f32 [n_embd]
    pub attn_qkv: Qkv,                             // [n_embd] -> q, k, v
    pub attn_q_bias: Option<wgpu::Buffer>,         // f32 [n_head · head_dim] (qwen2)
    pub attn_k_bias: Option<wgpu::Buffer>,         // f32 [n_head_kv · head_dim] (qwen2)
    pub attn_v_bias: Option<wgpu::Buffer>,         // f32 [n_head_kv · head_dim] (qwen2)
    pub attn_q_norm: Option<wgpu::Buffer>,         // f32 [head_dim] (gemma3, qwen3)
    pub attn_k_norm: Option<wgpu::Buffer>,         // f32 [head_dim] (gemma3, qwen3)
    pub attn_output: QMatrix,                      // [n_head · head_dim] -> [n_embd]
    pub post_attention_norm: Option<wgpu::Buffer>, // f32 [n_embd] (gemma3)
    pub ffn_norm: wgpu::Buffer,                    // f32 [n_embd]
    pub ffn_gate_up: GateUp,                       // [n_embd] -> act(gate) · up [n_ff]
    pub ffn_down: QMatrix,                         // [n_ff] -> [n_embd]
    pub post_ffw_norm: Option<wgpu::Buffer>,       // f32 [n_embd] (gemma3)
    pub kv: KvCache,                               // cells × n_head_kv × head_dim, K and V
}

/// attn_q, attn_k and attn_v: one matrix of their rows stacked when they share a type (one
/// dispatch for all three; phi3's `attn_qkv` is stored so), else three.
pub enum Qkv {
    /// Rows [q; k; v]: [n_embd] -> [n_head · head_dim + 2 · n_head_kv · head_dim].
    Fused(QMatrix),
    Separate([QMatrix; 3]),
}

/// ffn_gate and ffn_up: one matrix whose rows alternate gate and up when they share a type, so
/// that a decode step's matvec applies the activation as it stores (one dispatch), else two.
pub enum GateUp {
    /// Rows gate 0, up 0, gate 1, up 1, …: [n_embd] -> [2 · n_ff].
    Interleaved(QMatrix),
    Separate([QMatrix; 2]),
}

impl Qkv {
    fn matrices(&self) -> Vec<&QMatrix> {
        match self {
            Qkv::Fused(m) => vec![m],
            Qkv::Separate(m) => m.iter().collect(),
        }
    }
}

impl GateUp {
    fn matrices(&self) -> Vec<&QMatrix> {
        match self {
            GateUp::Interleaved(m) => vec![m],
            GateUp::Separate(m) => m.iter().collect(),
        }
    }
}

impl Layer {
    fn matrices(&self) -> Vec<&QMatrix> {
        let mut m = self.attn_qkv.matrices();
        m.push(&self.attn_output);
        m.extend(self.ffn_gate_up.matrices());
        m.push(&self.ffn_down);
        m
    }
}

/// `rows` rows of tensor `name` from row `first` (`None`: all of them), for the loader.
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

/// Activations for one batch, allocated once.
struct RunState {
    ids: wgpu::Buffer,    // u32 [BATCH]
    x: wgpu::Buffer,      // f32 [BATCH, n_embd]   the residual stream
    xb: wgpu::Buffer,     // f32 [BATCH, n_embd]   normed input of a sublayer
    o: wgpu::Buffer,      // f32 [BATCH, n_embd]   output of a sublayer
    q: wgpu::Buffer,      // f32 [BATCH, n_head, head_dim]
    k: wgpu::Buffer,      // f32 [BATCH, n_head_kv, head_dim]
    v: wgpu::Buffer,      // f32 [BATCH, n_head_kv, head_dim]
    att: wgpu::Buffer,    // f32 [BATCH, n_head, head_dim]
    gate: wgpu::Buffer,   // f32 [BATCH, n_ff]       the gated activation (down's input)
    up: wgpu::Buffer,     // f32 [BATCH, 2 · n_ff]   up, or interleaved gate and up products
    last: wgpu::Buffer,   // f32 [n_embd]          the normed last position
    logits: wgpu::Buffer, // f32 [n_vocab]
    token: wgpu::Buffer,  // u32 [1]               argmax of logits
    /// The batch's first position, read by RoPE, the KV store and attention.
    pos: Pos,
    /// f32 [BATCH, max(n_embd, n_ff, n_head · head_dim)] per activation kind: matmul inputs
    /// quantized as llama.cpp's CPU backend does (see gpu/quantize.rs).
    act: ActQuant,
    /// f32 [BATCH, n_vocab], only for scoring every position.
    all_logits: Option<wgpu::Buffer>,
}

/// Where [`Model::load_with_progress`] is: tensor bytes read and uploaded so far, of all.
#[derive(Clone, Copy, Debug)]
pub struct LoadProgress<'a> {
    pub loaded: u64,
    pub total: u64,
    /// The tensor just uploaded.
    pub tensor: &'a str,
}

/// What a call to [`Model::eval`] returns for its last token(s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// The greedy next token (4 bytes read back).
    Argmax,
    /// The logits of the last position.
    Logits,
    /// The logits of every position evaluated.
    AllLogits,
}

#[derive(Debug, PartialEq)]
pub enum Output {
    Token(u32),
    Logits(Vec<f32>),
    /// Row-major [n_tokens, n_vocab].
    AllLogits(Vec<f32>),
}

pub struct Model {
    pub config: Config,
    pub gpu: Gpu,
    pub token_embd: QMatrix,       // [n_vocab rows of n_embd]
    pub output_norm: wgpu::Buffer, // f32 [n_embd]
    /// Divisors of the rotation frequencies (llama3, phi3), f32 [n_rot / 2].
    pub rope_factors: Option<wgpu::Buffer>,
    /// `None` when tied to `token_embd`.
    pub output: Option<QMatrix>, // [n_embd] -> [n_vocab]
    pub layers: Vec<Layer>,
    /// Context length the KV caches hold.
    pub n_ctx: u32,
    /// Tokens evaluated so far (the position of the next one).
    pub pos: u32,
    state: RunState,
}

impl Model {
    /// Uploads the weights of `gguf` and allocates a KV cache of `n_ctx` tokens (capped at the
    /// trained context).
    pub async fn load(gpu: Gpu, gguf: &GgufModel, n_ctx: u32) -> Result<Model> {
        Self::load_with_progress(gpu, gguf, n_ctx, |_| {}).await
    }

    /// [`Model::load`], reporting after each tensor. Tensors are read one at a time and
    /// uploaded at once, so memory outside the GPU never holds more than one of them.
    pub async fn load_with_progress(
        gpu: Gpu,
        gguf: &GgufModel,
        n_ctx: u32,
        progress: impl FnMut(LoadProgress),
    ) -> Result<Model> {
        let info = ModelInfo::from_model(gguf)?;
        info.check_supported()?;
        let config = Config::from_info(&info)?;
        let n_ctx = n_ctx.clamp(1, config.n_ctx_train);
        let c = &config;

        let total = gguf.tensors.iter().map(|t| t.info.n_bytes).sum();
        let loaded = std::cell::Cell::new(0u64);
        let progress = std::cell::RefCell::new(progress);
        let tick = |name: &str, bytes: usize| {
            loaded.set(loaded.get() + bytes as u64);
            (progress.borrow_mut())(LoadProgress {
                loaded: loaded.get(),
                total,
                tensor: name,
            });
        };
        let info_of = |name: &str| {
            gguf.tensor(name)
                .map(|t| t.info.clone())
                .ok_or_else(|| Error::NoSuchTensor(name.to_string()))
        };
        let read = |name: String| {
            let tick = &tick;
            async move {
                let data = gguf.read_tensor(&name).await?;
                tick(&name, data.len());
                Ok::<_, Error>(data)
            }
        };
        // Matrices stream in: a few MiB of rows at a time go from the source to the GPU. One
        // matrix may stack row ranges of several tensors (q, k and v), or interleave two row
        // by row (gate and up), when they share a type and row length.
        let source_name = &info.parts[0].name;
        let rows_of = |r: &Rows| {
            let t = info_of(&r.name)?;
            let all = t.dims.get(1).copied().unwrap_or(1);
            let rows = r.rows.unwrap_or(all);
            if r.first + rows > all {
                return Err(Error::BadShape {
                    source_name: source_name.clone(),
                    reason: format!("{} rows expected", r.first + rows),
                    tensor: r.name.clone(),
                    dims: t.dims,
                });
            }
            Ok((t, rows))
        };
        // Whether `srcs` can be one matrix: one type and row length, and every range but the
        // last an even number of rows (QMatrix::write_rows keeps f16 d pairs whole).
        let stackable = |srcs: &[Rows]| -> Result<bool> {
            let shapes = srcs.iter().map(rows_of).collect::<Result<Vec<_>>>()?;
            let (t0, _) = &shapes[0];
            Ok(shapes
                .iter()
                .all(|(t, _)| t.ty == t0.ty && t.dims[0] == t0.dims[0])
                && shapes[..shapes.len() - 1].iter().all(|(_, r)| r % 2 == 0))
        };
        let stacked = |srcs: Vec<Rows>, interleave: bool| {
            let (gpu, tick, rows_of) = (&gpu, &tick, &rows_of);
            async move {
                let shapes = srcs.iter().map(rows_of).collect::<Result<Vec<_>>>()?;
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
                let m = QMatrix::create(gpu, &label, t0.ty, &[t0.dims[0], total])?;
                let row_bytes = m.row_bytes();
                let per_read = (UPLOAD_CHUNK / row_bytes).max(2) & !1;
                if interleave {
                    let rows = shapes[0].1;
                    let mut row = 0u64;
                    while row < rows {
                        let n = (per_read / 2).max(1).min(rows - row);
                        let mut halves = vec![];
                        for r in &srcs {
                            let at = (r.first + row) * row_bytes;
                            halves.push(
                                gguf.read_tensor_range(&r.name, at, (n * row_bytes) as usize)
                                    .await?,
                            );
                        }
                        let (a, b) = (&halves[0], &halves[1]);
                        let both: Vec<u8> = a
                            .chunks(row_bytes as usize)
                            .zip(b.chunks(row_bytes as usize))
                            .flat_map(|(a, b)| a.iter().chain(b).copied())
                            .collect();
                        m.write_rows(gpu, 2 * row as u32, &both)?;
                        tick(&srcs[0].name, both.len());
                        row += n;
                    }
                } else {
                    let mut dst = 0u64;
                    for (r, (_, rows)) in srcs.iter().zip(&shapes) {
                        let mut row = 0u64;
                        while row < *rows {
                            let n = per_read.min(rows - row);
                            let at = (r.first + row) * row_bytes;
                            let data = gguf
                                .read_tensor_range(&r.name, at, (n * row_bytes) as usize)
                                .await?;
                            m.write_rows(gpu, (dst + row) as u32, &data)?;
                            tick(&r.name, data.len());
                            row += n;
                        }
                        dst += rows;
                    }
                }
                Ok::<_, Error>(m)
            }
        };
        let matrix_rows = |name: String, first: u64, rows: Option<u64>| {
            stacked(vec![Rows { name, first, rows }], false)
        };
        let matrix = |name: String| matrix_rows(name, 0, None);
        let vector = |name: String| {
            let (gpu, read, info_of) = (&gpu, &read, &info_of);
            async move {
                let t = info_of(&name)?;
                let data = read(name.clone()).await?;
                let values = match t.ty {
                    GgmlType::F32 => data,
                    ty => bytemuck::cast_slice(&dequantize(ty, &data)?).to_vec(),
                };
                Ok::<_, Error>(gpu.upload(&name, &values))
            }
        };
        let optional = |name: String| {
            let present = gguf.tensor(&name).is_some();
            let v = vector(name);
            async move {
                if present {
                    v.await.map(Some)
                } else {
                    Ok(None)
                }
            }
        };

        let mut layers = Vec::with_capacity(c.n_layer as usize);
        for il in 0..c.n_layer as usize {
            let n = |s: &str| format!("blk.{il}.{s}");
            let cells = if c.sliding[il] {
                n_ctx.min(c.window + BATCH)
            } else {
                n_ctx
            };
            let (q_rows, kv_rows) = (
                (c.n_head * c.head_dim) as u64,
                (c.n_head_kv * c.head_dim) as u64,
            );
            let qkv = if gguf.tensor(&n("attn_qkv.weight")).is_some() {
                let t = n("attn_qkv.weight");
                [(0, q_rows), (q_rows, kv_rows), (q_rows + kv_rows, kv_rows)]
                    .map(|(first, rows)| Rows::range(&t, first, rows))
            } else {
                ["attn_q", "attn_k", "attn_v"].map(|t| Rows::all(n(&format!("{t}.weight"))))
            };
            let attn_qkv = if stackable(&qkv)? {
                Qkv::Fused(stacked(qkv.into(), false).await?)
            } else {
                let [q, k, v] = qkv;
                Qkv::Separate([
                    stacked(vec![q], false).await?,
                    stacked(vec![k], false).await?,
                    stacked(vec![v], false).await?,
                ])
            };
            let attn_norm = vector(n("attn_norm.weight")).await?;
            let ff = c.n_ff as u64;
            let gate_up = if gguf.tensor(&n("ffn_gate.weight")).is_some() {
                [
                    Rows::all(n("ffn_gate.weight")),
                    Rows::all(n("ffn_up.weight")),
                ]
            } else {
                // ggml_swiglu of phi3's fused [gate; up] output: silu of the first half.
                let t = n("ffn_up.weight");
                [Rows::range(&t, 0, ff), Rows::range(&t, ff, ff)]
            };
            let same_rows = rows_of(&gate_up[0])?.1 == rows_of(&gate_up[1])?.1;
            let ffn_gate_up = if same_rows && stackable(&gate_up)? {
                GateUp::Interleaved(stacked(gate_up.into(), true).await?)
            } else {
                let [g, u] = gate_up;
                GateUp::Separate([
                    stacked(vec![g], false).await?,
                    stacked(vec![u], false).await?,
                ])
            };
            layers.push(Layer {
                attn_norm,
                attn_qkv,
                attn_q_bias: optional(n("attn_q.bias")).await?,
                attn_k_bias: optional(n("attn_k.bias")).await?,
                attn_v_bias: optional(n("attn_v.bias")).await?,
                attn_q_norm: optional(n("attn_q_norm.weight")).await?,
                attn_k_norm: optional(n("attn_k_norm.weight")).await?,
                attn_output: matrix(n("attn_output.weight")).await?,
                post_attention_norm: optional(n("post_attention_norm.weight")).await?,
                ffn_norm: vector(n("ffn_norm.weight")).await?,
                ffn_gate_up,
                ffn_down: matrix(n("ffn_down.weight")).await?,
                post_ffw_norm: optional(n("post_ffw_norm.weight")).await?,
                kv: KvCache::new(&gpu, &n("kv"), cells, c.n_head_kv, c.head_dim),
            });
        }
        let token_embd = matrix("token_embd.weight".into()).await?;
        let output = match gguf.tensor("output.weight") {
            Some(_) => Some(matrix("output.weight".into()).await?),
            None => None,
        };
        let output_norm = vector("output_norm.weight".into()).await?;
        // llama.cpp's get_rope_factors: llama3's rope_freqs; else phi3's long factors when the
        // context is longer than the original one, its short ones otherwise.
        let rope_factors = if gguf.tensor("rope_freqs.weight").is_some() {
            Some(vector("rope_freqs.weight".into()).await?)
        } else if n_ctx > c.n_ctx_orig {
            optional("rope_factors_long.weight".into()).await?
        } else {
            optional("rope_factors_short.weight".into()).await?
        };

        let f32s = |label: &str, n: u32| gpu.storage(label, n as u64 * 4);
        let b = BATCH;
        let widest = c.n_embd.max(c.n_ff).max(c.n_head * c.head_dim);
        let matrices = layers
            .iter()
            .flat_map(|l| l.matrices())
            .chain([&token_embd])
            .chain(&output);
        let act = ActQuant::new(&gpu, matrices, (b * widest) as u64);
        let state = RunState {
            ids: f32s("ids", b),
            x: f32s("x", b * c.n_embd),
            xb: f32s("xb", b * c.n_embd),
            o: f32s("o", b * c.n_embd),
            q: f32s("q", b * c.n_head * c.head_dim),
            k: f32s("k", b * c.n_head_kv * c.head_dim),
            v: f32s("v", b * c.n_head_kv * c.head_dim),
            att: f32s("att", b * c.n_head * c.head_dim),
            gate: f32s("gate", b * c.n_ff),
            up: f32s("up", b * 2 * c.n_ff),
            last: f32s("last", c.n_embd),
            logits: f32s("logits", c.n_vocab),
            token: f32s("token", 1),
            pos: Pos::new(&gpu, 0),
            act,
            all_logits: None,
        };
        Ok(Model {
            config,
            gpu,
            token_embd,
            output_norm,
            rope_factors,
            output,
            layers,
            n_ctx,
            pos: 0,
            state,
        })
    }

    /// Forgets the conversation: the next token is at position 0.
    pub fn reset(&mut self) {
        self.pos = 0;
    }

    /// Moves the next position back to `pos`, keeping the K/V of positions before it (a shared
    /// prompt prefix). False, changing nothing, when `pos` is ahead or a sliding-window ring has
    /// already overwritten keys that position `pos` attends to.
    pub fn rewind(&mut self, pos: u32) -> bool {
        if pos > self.pos {
            return false;
        }
        let c = &self.config;
        let intact = self.layers.iter().enumerate().all(|(il, l)| {
            // Cell q % cells last held position q for q ≥ self.pos − cells.
            let oldest_needed =
                (pos + 1).saturating_sub(if c.sliding[il] { c.window } else { pos + 1 });
            pos == 0 || oldest_needed >= self.pos.saturating_sub(l.kv.cells)
        });
        if intact {
            self.pos = pos;
        }
        intact
    }

    /// Evaluates `tokens` at the current position, in batches, and returns `want` for them.
    pub async fn eval(&mut self, tokens: &[u32], want: Want) -> Result<Output> {
        self.eval_in_batches(tokens, want, BATCH).await
    }

    /// [`Model::eval`] with at most `batch` (≤ [`BATCH`]) tokens per forward pass. The batch
    /// size picks attention numerics as llama.cpp's CPU backend does (see gpu/attention.rs):
    /// batches under 64 compute as its decode steps do.
    pub async fn eval_in_batches(
        &mut self,
        tokens: &[u32],
        want: Want,
        batch: u32,
    ) -> Result<Output> {
        if batch == 0 || batch > BATCH {
            return Err(Error::BadOption {
                name: "batch",
                value: batch.to_string(),
                reason: "between 1 and 64 tokens per forward pass",
            });
        }
        if tokens.is_empty() {
            return Err(Error::BadOption {
                name: "tokens",
                value: "[]".into(),
                reason: "nothing to evaluate",
            });
        }
        self.gpu.check_lost()?;
        let needed = self.pos as u64 + tokens.len() as u64;
        if needed > self.n_ctx as u64 {
            return Err(Error::ContextFull {
                n_ctx: self.n_ctx,
                needed,
            });
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t >= self.config.n_vocab) {
            return Err(Error::TokenOutOfRange {
                id: bad,
                n_vocab: self.config.n_vocab as usize,
            });
        }
        if want == Want::AllLogits && self.state.all_logits.is_none() {
            self.state.all_logits = Some(
                self.gpu
                    .storage("all_logits", BATCH as u64 * self.config.n_vocab as u64 * 4),
            );
        }
        let mut all = Vec::new();
        let chunks: Vec<&[u32]> = tokens.chunks(batch as usize).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let last_chunk = i + 1 == chunks.len();
            let out = self
                .eval_batch(
                    chunk,
                    if last_chunk || want == Want::AllLogits {
                        Some(want)
                    } else {
                        None
                    },
                )
                .await?;
            match out {
                Some(Output::AllLogits(rows)) => all.extend(rows),
                Some(o) if last_chunk => return Ok(o),
                _ => {}
            }
        }
        Ok(Output::AllLogits(all))
    }

    /// One batch of at most BATCH tokens: one compute pass and one submission, which also
    /// copies back what `want` asks for.
    async fn eval_batch(&mut self, tokens: &[u32], want: Option<Want>) -> Result<Option<Output>> {
        let (c, s, gpu) = (&self.config, &self.state, &self.gpu);
        let n = tokens.len() as u32;
        s.pos.set(gpu, self.pos);
        gpu.write(&s.ids, 0, bytemuck::cast_slice(tokens));
        let mut rec = Rec::new(gpu);
        self.record_batch(&mut rec, n, want)?;
        let f32s = |bytes: Vec<u8>| bytemuck::cast_slice::<u8, f32>(&bytes).to_vec();
        let result = match want {
            None => {
                rec.submit();
                None
            }
            Some(Want::AllLogits) => {
                let all = s.all_logits.as_ref().expect("allocated in eval");
                let bytes = rec.submit_and_read(all, (n * c.n_vocab) as u64 * 4).await?;
                Some(Output::AllLogits(f32s(bytes)))
            }
            Some(Want::Argmax) => {
                let id = rec.submit_and_read(&s.token, 4).await?;
                Some(Output::Token(u32::from_le_bytes([
                    id[0], id[1], id[2], id[3],
                ])))
            }
            Some(Want::Logits) => {
                let bytes = rec.submit_and_read(&s.logits, c.n_vocab as u64 * 4).await?;
                Some(Output::Logits(f32s(bytes)))
            }
        };
        self.pos += n;
        Ok(result)
    }

    /// Compiles every kernel a prefill and a decode step use (recording one of each without
    /// running it), so the first answer does not wait for shader compilation.
    pub fn compile(&self) -> Result<()> {
        for n in [1, 2.min(self.n_ctx)] {
            self.record_batch(&mut Rec::new(&self.gpu), n, Some(Want::Argmax))?;
        }
        Ok(())
    }

    /// Records the forward pass of `n` tokens (ids in `state.ids`, positions from `state.pos`)
    /// and the projection `want` asks for.
    fn record_batch(&self, rec: &mut Rec, n: u32, want: Option<Want>) -> Result<()> {
        let (c, s) = (&self.config, &self.state);
        let (d, eps) = (c.n_embd, c.rms_eps);

        self.token_embd
            .record_embed(rec, &s.ids, &s.x, n, c.embed_scale)?;
        // A gemma3 post-norm whose residual add the next norm does.
        let mut post = None;
        for (il, l) in self.layers.iter().enumerate() {
            post = self.record_attention(rec, il, l, n, post)?;
            post = self.record_feed_forward(rec, l, n, post)?;
        }

        let output = self.output.as_ref().unwrap_or(&self.token_embd);
        match want {
            None => {}
            Some(Want::AllLogits) => {
                let all = s.all_logits.as_ref().expect("allocated in eval");
                let xb = s.act.record_norm(
                    rec,
                    &s.x,
                    0,
                    &self.output_norm,
                    &s.xb,
                    n,
                    d,
                    eps,
                    &[output],
                    post,
                )?;
                output.record_matmul(rec, xb.for_matrix(output)?, all, n)?;
            }
            Some(w) => {
                // Only the last position is normed and projected to the vocabulary.
                let last = s.act.record_norm(
                    rec,
                    &s.x,
                    n - 1,
                    &self.output_norm,
                    &s.last,
                    1,
                    d,
                    eps,
                    &[output],
                    post,
                )?;
                output.record_matmul(rec, last.for_matrix(output)?, &s.logits, 1)?;
                if w == Want::Argmax {
                    Argmax::record(rec, &s.logits, c.n_vocab, &s.token)?;
                }
            }
        }
        Ok(())
    }

    /// x += attention(norm(x)) for the `n` tokens of a batch, in layer `il`, after a pending
    /// post-norm `post` of the sublayer before; returns this one's, if any (see
    /// [`record_residual`](Self::record_residual)).
    fn record_attention<'a>(
        &'a self,
        rec: &mut Rec,
        il: usize,
        l: &'a Layer,
        n: u32,
        post: Option<PostNorm<'a>>,
    ) -> Result<Option<PostNorm<'a>>> {
        let (c, s) = (&self.config, &self.state);
        let (d, hd, eps) = (c.n_embd, c.head_dim, c.rms_eps);
        let (q_rows, kv_rows) = (c.n_head * hd, c.n_head_kv * hd);
        let matrices = l.attn_qkv.matrices();
        let xb = s.act.record_norm(
            rec,
            &s.x,
            0,
            &l.attn_norm,
            &s.xb,
            n,
            d,
            eps,
            &matrices,
            post,
        )?;
        match &l.attn_qkv {
            Qkv::Fused(m) => {
                let seg = [q_rows, q_rows + kv_rows];
                m.record_matmul_split(rec, xb.for_matrix(m)?, [&s.q, &s.k, &s.v], seg, n)?
            }
            Qkv::Separate(m) => {
                for (m, y) in m.iter().zip([&s.q, &s.k, &s.v]) {
                    m.record_matmul(rec, xb.for_matrix(m)?, y, n)?;
                }
            }
        }
        // Biases (qwen2) and q/k norms (qwen3, gemma3) ride with RoPE in the KV store; a model
        // with only some of the three biases adds them on its own.
        let biases = match (&l.attn_q_bias, &l.attn_k_bias, &l.attn_v_bias) {
            (Some(bq), Some(bk), Some(bv)) => Some([bq, bk, bv]),
            _ => {
                for (bias, y, rows) in [
                    (&l.attn_q_bias, &s.q, q_rows),
                    (&l.attn_k_bias, &s.k, kv_rows),
                    (&l.attn_v_bias, &s.v, kv_rows),
                ] {
                    if let Some(b) = bias {
                        Add::record_bias(rec, y, b, n, rows)?;
                    }
                }
                None
            }
        };
        let norms = match (&l.attn_q_norm, &l.attn_k_norm) {
            (Some(qn), Some(kn)) => Some(([qn, kn], eps)),
            _ => None,
        };
        let (base, freq_scale) = c.rope_for_layer(il);
        let rope = RopeSpec {
            n_rot: c.n_rot,
            base,
            freq_scale,
            attn_factor: c.rope_attn_factor,
            mode: c.rope_mode,
            freq_factors: self.rope_factors.as_ref(),
        };
        let rope_q = RopeQ {
            q: &s.q,
            n_head: c.n_head,
            q_scale: c.q_scale,
            spec: &rope,
            norms,
            biases,
        };
        l.kv.record_store(rec, &s.k, &s.v, n, &s.pos, Some(rope_q))?;
        let window = if c.sliding[il] { c.window } else { 0 };
        Attention::record(
            rec,
            &s.q,
            &l.kv,
            &s.att,
            n,
            &s.pos,
            c.n_head,
            c.attn_scale,
            window,
        )?;
        let att = s.act.record(rec, &s.att, n, q_rows, &[&l.attn_output])?;
        self.record_residual(rec, &l.attn_output, att, l.post_attention_norm.as_ref(), n)
    }

    /// x += ffn(norm(x)): down(act(gate(x)) · up(x)); `post` as in `record_attention`.
    fn record_feed_forward<'a>(
        &'a self,
        rec: &mut Rec,
        l: &'a Layer,
        n: u32,
        post: Option<PostNorm<'a>>,
    ) -> Result<Option<PostNorm<'a>>> {
        let (c, s) = (&self.config, &self.state);
        let matrices = l.ffn_gate_up.matrices();
        let (d, eps) = (c.n_embd, c.rms_eps);
        let xb = s
            .act
            .record_norm(rec, &s.x, 0, &l.ffn_norm, &s.xb, n, d, eps, &matrices, post)?;
        match &l.ffn_gate_up {
            GateUp::Interleaved(m) => {
                m.record_matmul_gated(rec, xb.for_matrix(m)?, &s.up, &s.gate, n, c.activation)?
            }
            GateUp::Separate([gate, up]) => {
                gate.record_matmul(rec, xb.for_matrix(gate)?, &s.gate, n)?;
                up.record_matmul(rec, xb.for_matrix(up)?, &s.up, n)?;
                GatedAct::record(rec, &s.gate, &s.up, n * c.n_ff, c.activation)?;
            }
        }
        let g = s.act.record(rec, &s.gate, n, c.n_ff, &[&l.ffn_down])?;
        self.record_residual(rec, &l.ffn_down, g, l.post_ffw_norm.as_ref(), n)
    }

    /// x += m · input, the sublayer's output projection and residual add in one dispatch. With
    /// gemma3's post-norm, x += norm(m · input) instead: the product goes to `o` and the norm
    /// and add are left to the next norm's dispatch (returned).
    fn record_residual<'a>(
        &'a self,
        rec: &mut Rec,
        m: &QMatrix,
        input: crate::gpu::ActInputs,
        post_norm: Option<&'a wgpu::Buffer>,
        n: u32,
    ) -> Result<Option<PostNorm<'a>>> {
        let s = &self.state;
        let input = input.for_matrix(m)?;
        match post_norm {
            None => {
                m.record_matmul_add(rec, input, &s.x, n)?;
                Ok(None)
            }
            Some(w) => {
                m.record_matmul(rec, input, &s.o, n)?;
                Ok(Some(PostNorm { o: &s.o, w }))
            }
        }
    }

    /// GPU bytes held by the KV caches.
    pub fn kv_bytes(&self) -> u64 {
        self.layers
            .iter()
            .map(|l| l.kv.k.size() + l.kv.v.size())
            .sum()
    }

    /// GPU bytes held by the weights (for the memory report).
    pub fn weight_bytes(&self) -> u64 {
        self.layers
            .iter()
            .flat_map(|l| l.matrices())
            .map(|m| m.gpu_bytes())
            .sum::<u64>()
            + self.token_embd.gpu_bytes()
            + self.output.as_ref().map_or(0, |o| o.gpu_bytes())
    }
}

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
    ActQuant, Add, Argmax, Attention, GatedAct, Gpu, KvCache, Pos, QMatrix, RmsNorm, Rope,
    RopeSpec, Scale,
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
    pub attn_q: QMatrix,                           // [n_embd] -> [n_head · head_dim]
    pub attn_k: QMatrix,                           // [n_embd] -> [n_head_kv · head_dim]
    pub attn_v: QMatrix,                           // [n_embd] -> [n_head_kv · head_dim]
    pub attn_q_bias: Option<wgpu::Buffer>,         // f32 [n_head · head_dim] (qwen2)
    pub attn_k_bias: Option<wgpu::Buffer>,         // f32 [n_head_kv · head_dim] (qwen2)
    pub attn_v_bias: Option<wgpu::Buffer>,         // f32 [n_head_kv · head_dim] (qwen2)
    pub attn_q_norm: Option<wgpu::Buffer>,         // f32 [head_dim] (gemma3, qwen3)
    pub attn_k_norm: Option<wgpu::Buffer>,         // f32 [head_dim] (gemma3, qwen3)
    pub attn_output: QMatrix,                      // [n_head · head_dim] -> [n_embd]
    pub post_attention_norm: Option<wgpu::Buffer>, // f32 [n_embd] (gemma3)
    pub ffn_norm: wgpu::Buffer,                    // f32 [n_embd]
    pub ffn_gate: QMatrix,                         // [n_embd] -> [n_ff]
    pub ffn_up: QMatrix,                           // [n_embd] -> [n_ff]
    pub ffn_down: QMatrix,                         // [n_ff] -> [n_embd]
    pub post_ffw_norm: Option<wgpu::Buffer>,       // f32 [n_embd] (gemma3)
    pub kv: KvCache,                               // cells × n_head_kv × head_dim, K and V
}

impl Layer {
    fn matrices(&self) -> [&QMatrix; 7] {
        [
            &self.attn_q,
            &self.attn_k,
            &self.attn_v,
            &self.attn_output,
            &self.ffn_gate,
            &self.ffn_up,
            &self.ffn_down,
        ]
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
    gate: wgpu::Buffer,   // f32 [BATCH, n_ff]
    up: wgpu::Buffer,     // f32 [BATCH, n_ff]
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
        // Matrices stream in: a few MiB of rows at a time go from the source to the GPU. A
        // fused tensor (phi3's attn_qkv, gate+up) becomes one matrix per row range.
        let source_name = &info.parts[0].name;
        let matrix_rows = |name: String, first: u64, rows: Option<u64>| {
            let (gpu, tick, info_of) = (&gpu, &tick, &info_of);
            async move {
                let t = info_of(&name)?;
                let all = t.dims.get(1).copied().unwrap_or(1);
                let rows = rows.unwrap_or(all);
                if first + rows > all {
                    return Err(Error::BadShape {
                        source_name: source_name.clone(),
                        reason: format!("{} rows expected", first + rows),
                        tensor: name,
                        dims: t.dims,
                    });
                }
                let label = if rows == all {
                    name.clone()
                } else {
                    format!("{name}[{first}..]")
                };
                let m = QMatrix::create(gpu, &label, t.ty, &[t.dims[0], rows])?;
                let row_bytes = m.row_bytes();
                let rows_per_read = ((UPLOAD_CHUNK / row_bytes).max(2) & !1).min(rows);
                let mut row = 0u64;
                while row < rows {
                    let n = rows_per_read.min(rows - row);
                    let data = gguf
                        .read_tensor_range(
                            &name,
                            (first + row) * row_bytes,
                            (n * row_bytes) as usize,
                        )
                        .await?;
                    m.write_rows(gpu, row as u32, &data)?;
                    tick(&name, data.len());
                    row += n;
                }
                Ok::<_, Error>(m)
            }
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
            let [attn_q, attn_k, attn_v] = if gguf.tensor(&n("attn_qkv.weight")).is_some() {
                let qkv = n("attn_qkv.weight");
                [
                    matrix_rows(qkv.clone(), 0, Some(q_rows)).await?,
                    matrix_rows(qkv.clone(), q_rows, Some(kv_rows)).await?,
                    matrix_rows(qkv, q_rows + kv_rows, Some(kv_rows)).await?,
                ]
            } else {
                [
                    matrix(n("attn_q.weight")).await?,
                    matrix(n("attn_k.weight")).await?,
                    matrix(n("attn_v.weight")).await?,
                ]
            };
            let attn_norm = vector(n("attn_norm.weight")).await?;
            let ff = c.n_ff as u64;
            let [ffn_gate, ffn_up] = if gguf.tensor(&n("ffn_gate.weight")).is_some() {
                [
                    matrix(n("ffn_gate.weight")).await?,
                    matrix(n("ffn_up.weight")).await?,
                ]
            } else {
                // ggml_swiglu of the fused [gate; up] output: silu of the first half.
                [
                    matrix_rows(n("ffn_up.weight"), 0, Some(ff)).await?,
                    matrix_rows(n("ffn_up.weight"), ff, Some(ff)).await?,
                ]
            };
            layers.push(Layer {
                attn_norm,
                attn_q,
                attn_k,
                attn_v,
                attn_q_bias: optional(n("attn_q.bias")).await?,
                attn_k_bias: optional(n("attn_k.bias")).await?,
                attn_v_bias: optional(n("attn_v.bias")).await?,
                attn_q_norm: optional(n("attn_q_norm.weight")).await?,
                attn_k_norm: optional(n("attn_k_norm.weight")).await?,
                attn_output: matrix(n("attn_output.weight")).await?,
                post_attention_norm: optional(n("post_attention_norm.weight")).await?,
                ffn_norm: vector(n("ffn_norm.weight")).await?,
                ffn_gate,
                ffn_up,
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
            up: f32s("up", b * c.n_ff),
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

    /// One batch of at most BATCH tokens, recorded into one command buffer.
    async fn eval_batch(&mut self, tokens: &[u32], want: Option<Want>) -> Result<Option<Output>> {
        let (c, s, gpu) = (&self.config, &self.state, &self.gpu);
        let n = tokens.len() as u32;
        s.pos.set(gpu, self.pos);
        gpu.queue
            .write_buffer(&s.ids, 0, bytemuck::cast_slice(tokens));
        let mut enc = gpu.encoder();
        self.record_batch(&mut enc, n, want)?;
        gpu.queue.submit([enc.finish()]);
        let result = match want {
            None => None,
            Some(Want::AllLogits) => {
                let all = s.all_logits.as_ref().expect("allocated in eval");
                Some(Output::AllLogits(
                    gpu.read_f32(all, (n * c.n_vocab) as usize).await?,
                ))
            }
            Some(Want::Argmax) => {
                let id = gpu.read(&s.token, 4).await?;
                Some(Output::Token(u32::from_le_bytes([
                    id[0], id[1], id[2], id[3],
                ])))
            }
            Some(Want::Logits) => Some(Output::Logits(
                gpu.read_f32(&s.logits, c.n_vocab as usize).await?,
            )),
        };
        self.pos += n;
        Ok(result)
    }

    /// Compiles every kernel a prefill and a decode step use (recording one of each without
    /// running it), so the first answer does not wait for shader compilation.
    pub fn compile(&self) -> Result<()> {
        for n in [1, 2.min(self.n_ctx)] {
            let mut enc = self.gpu.encoder();
            self.record_batch(&mut enc, n, Some(Want::Argmax))?;
        }
        Ok(())
    }

    /// Records the forward pass of `n` tokens (ids in `state.ids`, positions from `state.pos`)
    /// and the projection `want` asks for.
    fn record_batch(&self, e: &mut wgpu::CommandEncoder, n: u32, want: Option<Want>) -> Result<()> {
        let (c, s, gpu) = (&self.config, &self.state, &self.gpu);
        let (d, hd, eps) = (c.n_embd, c.head_dim, c.rms_eps);

        self.token_embd
            .record_embed(gpu, e, &s.ids, &s.x, n, c.embed_scale)?;
        for (il, l) in self.layers.iter().enumerate() {
            // Attention.
            RmsNorm::record(gpu, e, &s.x, &l.attn_norm, &s.xb, n, d, eps)?;
            let xb = s
                .act
                .record(gpu, e, &s.xb, n, d, &[&l.attn_q, &l.attn_k, &l.attn_v])?;
            l.attn_q
                .record_matmul(gpu, e, xb.for_matrix(&l.attn_q)?, &s.q, n)?;
            l.attn_k
                .record_matmul(gpu, e, xb.for_matrix(&l.attn_k)?, &s.k, n)?;
            l.attn_v
                .record_matmul(gpu, e, xb.for_matrix(&l.attn_v)?, &s.v, n)?;
            for (bias, y, heads) in [
                (&l.attn_q_bias, &s.q, c.n_head),
                (&l.attn_k_bias, &s.k, c.n_head_kv),
                (&l.attn_v_bias, &s.v, c.n_head_kv),
            ] {
                if let Some(b) = bias {
                    Add::record_bias(gpu, e, y, b, n, heads * hd)?;
                }
            }
            if let (Some(qn), Some(kn)) = (&l.attn_q_norm, &l.attn_k_norm) {
                RmsNorm::record_in_place(gpu, e, &s.q, qn, n * c.n_head, hd, eps)?;
                RmsNorm::record_in_place(gpu, e, &s.k, kn, n * c.n_head_kv, hd, eps)?;
            }
            let (base, freq_scale) = c.rope_for_layer(il);
            let rope = RopeSpec {
                n_rot: c.n_rot,
                base,
                freq_scale,
                attn_factor: c.rope_attn_factor,
                mode: c.rope_mode,
                freq_factors: self.rope_factors.as_ref(),
            };
            Rope::record(gpu, e, &s.q, n, c.n_head, hd, &s.pos, &rope)?;
            Rope::record(gpu, e, &s.k, n, c.n_head_kv, hd, &s.pos, &rope)?;
            if c.q_scale != 1.0 {
                Scale::record(gpu, e, &s.q, n * c.n_head * hd, c.q_scale)?;
            }
            l.kv.record_store(gpu, e, &s.k, &s.v, n, &s.pos)?;
            let window = if c.sliding[il] { c.window } else { 0 };
            Attention::record(
                gpu,
                e,
                &s.q,
                &l.kv,
                &s.att,
                n,
                &s.pos,
                c.n_head,
                c.attn_scale,
                window,
            )?;
            let att = s
                .act
                .record(gpu, e, &s.att, n, c.n_head * hd, &[&l.attn_output])?;
            l.attn_output
                .record_matmul(gpu, e, att.for_matrix(&l.attn_output)?, &s.o, n)?;
            if let Some(pn) = &l.post_attention_norm {
                RmsNorm::record_in_place(gpu, e, &s.o, pn, n, d, eps)?;
            }
            Add::record(gpu, e, &s.x, &s.o, n * d)?;

            // Feed-forward.
            RmsNorm::record(gpu, e, &s.x, &l.ffn_norm, &s.xb, n, d, eps)?;
            let xb = s
                .act
                .record(gpu, e, &s.xb, n, d, &[&l.ffn_gate, &l.ffn_up])?;
            l.ffn_gate
                .record_matmul(gpu, e, xb.for_matrix(&l.ffn_gate)?, &s.gate, n)?;
            l.ffn_up
                .record_matmul(gpu, e, xb.for_matrix(&l.ffn_up)?, &s.up, n)?;
            GatedAct::record(gpu, e, &s.gate, &s.up, n * c.n_ff, c.activation)?;
            let g = s.act.record(gpu, e, &s.gate, n, c.n_ff, &[&l.ffn_down])?;
            l.ffn_down
                .record_matmul(gpu, e, g.for_matrix(&l.ffn_down)?, &s.o, n)?;
            if let Some(pn) = &l.post_ffw_norm {
                RmsNorm::record_in_place(gpu, e, &s.o, pn, n, d, eps)?;
            }
            Add::record(gpu, e, &s.x, &s.o, n * d)?;
        }

        let output = self.output.as_ref().unwrap_or(&self.token_embd);
        match want {
            None => {}
            Some(Want::AllLogits) => {
                let all = s.all_logits.as_ref().expect("allocated in eval");
                RmsNorm::record(gpu, e, &s.x, &self.output_norm, &s.xb, n, d, eps)?;
                let xb = s.act.record(gpu, e, &s.xb, n, d, &[output])?;
                output.record_matmul(gpu, e, xb.for_matrix(output)?, all, n)?;
            }
            Some(w) => {
                // Only the last position is normed and projected to the vocabulary.
                e.copy_buffer_to_buffer(&s.x, ((n - 1) * d * 4) as u64, &s.last, 0, d as u64 * 4);
                RmsNorm::record_in_place(gpu, e, &s.last, &self.output_norm, 1, d, eps)?;
                let last = s.act.record(gpu, e, &s.last, 1, d, &[output])?;
                output.record_matmul(gpu, e, last.for_matrix(output)?, &s.logits, 1)?;
                if w == Want::Argmax {
                    Argmax::record(gpu, e, &s.logits, c.n_vocab, &s.token)?;
                }
            }
        }
        Ok(())
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

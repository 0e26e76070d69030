//! A model: its hyperparameters and its weights in one of the engines (the GPU's or the
//! CPU's), with the position of the next token. The forward pass is written once
//! (forward.rs) over the backend interface (crate::backend); loading is load.rs.
//!
//! Every buffer is allocated once for a context length and a batch size; a batch of tokens is
//! one forward pass (on the GPU: one command encoder, submitted once), and only what the
//! caller wants comes back (a token id, one row of logits, or all rows).

mod config;
mod forward;
mod load;

pub use crate::backend::{Output, Want};
pub use config::{Arch, Config, SUPPORTED_ARCHITECTURES};

use crate::backend::{Backend, GateUp, KvCells, Matrix, Pass, Qkv};
use crate::cpu::Cpu;
use crate::error::{Error, Result};
use crate::gguf::GgufModel;
use crate::gpu::{Counts, Gpu};
use crate::inspect::ModelInfo;

/// Tokens per prefill step. Sizes the activation buffers and the sliding-window caches.
pub const BATCH: u32 = 64;

/// One transformer block, fields named by their GGUF tensors (`blk.N.<name>`). phi3's fused
/// `attn_qkv` and `ffn_up` (gate then up) are loaded as the row ranges that are attn_q/k/v and
/// ffn_gate/up, so the forward pass is the same for every architecture.
pub struct Layer<B: Backend> {
    pub attn_norm: B::Vector,                   // f32 [n_embd]
    pub attn_qkv: Qkv<B::Matrix>,               // [n_embd] -> q, k, v
    pub attn_q_bias: Option<B::Vector>,         // f32 [n_head · head_dim] (qwen2)
    pub attn_k_bias: Option<B::Vector>,         // f32 [n_head_kv · head_dim] (qwen2)
    pub attn_v_bias: Option<B::Vector>,         // f32 [n_head_kv · head_dim] (qwen2)
    pub attn_q_norm: Option<B::Vector>,         // f32 [head_dim] (gemma3, qwen3)
    pub attn_k_norm: Option<B::Vector>,         // f32 [head_dim] (gemma3, qwen3)
    pub attn_output: B::Matrix,                 // [n_head · head_dim] -> [n_embd]
    pub post_attention_norm: Option<B::Vector>, // f32 [n_embd] (gemma3)
    pub ffn_norm: B::Vector,                    // f32 [n_embd]
    pub ffn_gate_up: GateUp<B::Matrix>,         // [n_embd] -> act(gate) · up [n_ff]
    pub ffn_down: B::Matrix,                    // [n_ff] -> [n_embd]
    pub post_ffw_norm: Option<B::Vector>,       // f32 [n_embd] (gemma3)
    pub kv: B::Kv,                              // cells × n_head_kv × head_dim, K and V
}

impl<B: Backend> Layer<B> {
    fn matrices(&self) -> Vec<&B::Matrix> {
        let mut m = self.attn_qkv.matrices();
        m.push(&self.attn_output);
        m.extend(self.ffn_gate_up.matrices());
        m.push(&self.ffn_down);
        m
    }
}

/// The weights of a model in one backend, and its activations.
pub struct Transformer<B: Backend> {
    pub backend: B,
    pub token_embd: B::Matrix,  // [n_vocab rows of n_embd]
    pub output_norm: B::Vector, // f32 [n_embd]
    /// Divisors of the rotation frequencies (llama3, phi3), f32 [n_rot / 2].
    pub rope_factors: Option<B::Vector>,
    /// `None` when tied to `token_embd`.
    pub output: Option<B::Matrix>, // [n_embd] -> [n_vocab]
    pub layers: Vec<Layer<B>>,
    state: B::State,
}

impl<B: Backend> Transformer<B> {
    /// One batch of at most BATCH tokens at position `pos`: on the GPU one compute pass and
    /// one submission, which also copies back what `want` asks for.
    async fn eval_batch(
        &self,
        c: &Config,
        tokens: &[u32],
        pos: u32,
        want: Option<Want>,
    ) -> Result<Option<Output>> {
        let mut pass = self.backend.pass(&self.state, tokens, pos);
        self.forward(c, &mut pass, want)?;
        pass.finish(want).await
    }

    fn weight_bytes(&self) -> u64 {
        self.layers
            .iter()
            .flat_map(|l| l.matrices())
            .chain([&self.token_embd])
            .chain(&self.output)
            .map(|m| m.bytes())
            .sum()
    }
}

/// The engine a model runs on.
pub enum Net {
    Gpu(Box<Transformer<Gpu>>),
    Cpu(Box<Transformer<Cpu>>),
}

impl From<Transformer<Gpu>> for Net {
    fn from(t: Transformer<Gpu>) -> Net {
        Net::Gpu(Box::new(t))
    }
}

impl From<Transformer<Cpu>> for Net {
    fn from(t: Transformer<Cpu>) -> Net {
        Net::Cpu(Box::new(t))
    }
}

/// `$body` with `$t` bound to the transformer of either engine.
macro_rules! each {
    ($net:expr, $t:ident => $body:expr) => {
        match $net {
            Net::Gpu($t) => $body,
            Net::Cpu($t) => $body,
        }
    };
}

/// Where [`Model::load_with_progress`] is: tensor bytes read and stored so far, of all.
#[derive(Clone, Copy, Debug)]
pub struct LoadProgress<'a> {
    pub loaded: u64,
    pub total: u64,
    /// The tensor just stored.
    pub tensor: &'a str,
}

pub struct Model {
    pub config: Config,
    pub net: Net,
    /// Context length the KV caches hold.
    pub n_ctx: u32,
    /// Tokens evaluated so far (the position of the next one).
    pub pos: u32,
}

impl Model {
    /// Loads the weights of `gguf` into `backend` (a [`Gpu`] or a [`Cpu`]) and allocates a KV
    /// cache of `n_ctx` tokens (capped at the trained context).
    pub async fn load<B: Backend>(backend: B, gguf: &GgufModel, n_ctx: u32) -> Result<Model>
    where
        Net: From<Transformer<B>>,
    {
        Self::load_with_progress(backend, gguf, n_ctx, |_| {}).await
    }

    /// [`Model::load`], reporting after each stored piece of a tensor. Tensors are read a few
    /// MiB at a time and stored at once, so memory outside the backend never holds a whole one.
    pub async fn load_with_progress<B: Backend>(
        backend: B,
        gguf: &GgufModel,
        n_ctx: u32,
        progress: impl FnMut(LoadProgress),
    ) -> Result<Model>
    where
        Net: From<Transformer<B>>,
    {
        let info = ModelInfo::from_model(gguf)?;
        info.check_supported()?;
        let config = Config::from_info(&info)?;
        let n_ctx = n_ctx.clamp(1, config.n_ctx_train);
        let loader = load::Loader::new(backend, gguf, progress);
        let net = loader.transformer(&config, n_ctx).await?.into();
        Ok(Model {
            config,
            net,
            n_ctx,
            pos: 0,
        })
    }

    /// The GPU this model runs on, if it does.
    pub fn gpu(&self) -> Option<&Gpu> {
        match &self.net {
            Net::Gpu(t) => Some(&t.backend),
            Net::Cpu(_) => None,
        }
    }

    /// The CPU engine this model runs on, if it does.
    pub fn cpu(&self) -> Option<&Cpu> {
        match &self.net {
            Net::Cpu(t) => Some(&t.backend),
            Net::Gpu(_) => None,
        }
    }

    /// "webgpu" or "cpu".
    pub fn backend_name(&self) -> &'static str {
        match &self.net {
            Net::Gpu(_) => "webgpu",
            Net::Cpu(_) => "cpu",
        }
    }

    /// What the GPU has recorded so far (zero on the CPU); callers take differences.
    pub fn counts(&self) -> Counts {
        each!(&self.net, t => t.backend.counts())
    }

    /// KV cells per layer.
    fn cells(&self) -> Vec<u32> {
        each!(&self.net, t => t.layers.iter().map(|l| l.kv.cells()).collect())
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
        let cells = self.cells();
        let intact = cells.iter().enumerate().all(|(il, &cells)| {
            // Cell q % cells last held position q for q ≥ self.pos − cells.
            let oldest_needed =
                (pos + 1).saturating_sub(if c.sliding[il] { c.window } else { pos + 1 });
            pos == 0 || oldest_needed >= self.pos.saturating_sub(cells)
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
        each!(&self.net, t => t.backend.check_lost())?;
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
        if want == Want::AllLogits {
            each!(&mut self.net, t => t.backend.reserve_all_logits(&mut t.state));
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

    async fn eval_batch(&mut self, tokens: &[u32], want: Option<Want>) -> Result<Option<Output>> {
        let (c, pos) = (&self.config, self.pos);
        let out = each!(&self.net, t => t.eval_batch(c, tokens, pos, want).await)?;
        self.pos += tokens.len() as u32;
        Ok(out)
    }

    /// Compiles every GPU kernel a prefill and a decode step use (recording one of each
    /// without running it), so the first answer does not wait for shader compilation.
    pub fn compile(&self) -> Result<()> {
        if let Net::Gpu(t) = &self.net {
            for n in [1, 2.min(self.n_ctx)] {
                let ids = vec![0; n as usize];
                let mut pass = t.backend.pass(&t.state, &ids, 0);
                t.forward(&self.config, &mut pass, Some(Want::Argmax))?;
            }
        }
        Ok(())
    }

    /// Bytes held by the KV caches.
    pub fn kv_bytes(&self) -> u64 {
        each!(&self.net, t => t.layers.iter().map(|l| l.kv.bytes()).sum())
    }

    /// Bytes held by the weights (for the memory report).
    pub fn weight_bytes(&self) -> u64 {
        each!(&self.net, t => t.weight_bytes())
    }
}

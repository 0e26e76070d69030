//! The interface the forward pass (model/forward.rs) is written against, once, and that each
//! engine implements: the GPU one (`gpu/`, wgpu kernels recorded into one submission) and the
//! CPU one (`cpu/`, SIMD integer dot products on a thread pool).
//!
//! A backend owns the weights' storage ([`Backend::Matrix`], [`Backend::Vector`]), the KV caches
//! and a batch's activations. A [`Pass`] is the forward pass of one batch: the handful of fused
//! steps a layer needs, each reading and writing the backend's activations (x, the residual
//! stream; xb, a sublayer's normed input; q, k, v; att; gate). Fusion lives behind this line: a
//! fused GPU kernel and its CPU twin implement the same step, so the forward pass does not
//! change when a kernel does.

use crate::error::Result;
use crate::gpu::Counts;
use crate::quant::GgmlType;

/// Which dimensions of a head rotate together. A silent mistake here garbles every token
/// without any error, so the model must pick this from its architecture (llama.cpp's
/// `llama_model_rope_type`), never guess it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeMode {
    /// Adjacent pairs (2i, 2i+1): llama, mistral, SmolLM2 (ggml mode 0; the GGUF converter
    /// already permuted their Q/K weights into this order).
    Normal,
    /// Halves (i, i + n_rot/2): qwen2/3, gemma3, phi3 (ggml mode 2, `GGML_ROPE_TYPE_NEOX`).
    Neox,
}

/// The gate activation of the feed-forward block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `x / (1 + exp(-x))`, ggml's `ggml_silu_f32`.
    Silu,
    /// `0.5·x·(1 + tanh(sqrt(2/π)·x·(1 + 0.044715·x²)))` as llama.cpp's CPU backend computes
    /// it (`GGML_GELU_FP16`): for −10 < x < 10, x rounded to f16, ggml's f32 formula, the
    /// result rounded to f16 (its f16 lookup table); 0 below, x above.
    GeluTanh,
}

/// The form of the activations that multiply weights of some type: ggml never multiplies a
/// quantized weight by an f32 activation, it first converts the activation row to the weight
/// type's `vec_dot_type` and takes integer dot products. Both engines do the same, so that
/// their outputs track llama.cpp's (ARCHITECTURE.md, "Matching llama.cpp").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(non_camel_case_types)] // ggml's names
pub enum ActKind {
    F32,
    F16,
    BF16,
    Q8_0,
    Q8_1,
    Q8_K,
}

impl ActKind {
    /// ggml's `vec_dot_type` for weights of `ty` (ggml-cpu `type_traits_cpu`).
    pub fn for_weights(ty: GgmlType) -> ActKind {
        use GgmlType::*;
        match ty {
            F16 => ActKind::F16,
            BF16 => ActKind::BF16,
            Q4_0 | Q5_0 | Q8_0 | IQ4_NL => ActKind::Q8_0,
            Q4_1 | Q5_1 => ActKind::Q8_1,
            Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | IQ4_XS => ActKind::Q8_K,
            _ => ActKind::F32,
        }
    }

    /// Elements per quantization block.
    pub fn block(self) -> u32 {
        match self {
            ActKind::Q8_0 | ActKind::Q8_1 => 32,
            ActKind::Q8_K => 256,
            _ => 4,
        }
    }
}

/// ggml-cpu's `GGML_FA_TILE_Q`: its flash attention takes the f32 tiled path from this many
/// query rows in a batch, the f16-accumulating one below it. Both engines follow it.
pub const GGML_FA_TILE_Q: u32 = 64;

/// What a batch's forward pass ends with for its last token(s).
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

/// attn_q, attn_k and attn_v: one matrix of their rows stacked when they share a type (one
/// product for all three; phi3's `attn_qkv` is stored so), else three.
pub enum Qkv<M> {
    /// Rows [q; k; v]: [n_embd] -> [n_head · head_dim + 2 · n_head_kv · head_dim].
    Fused(M),
    Separate([M; 3]),
}

/// ffn_gate and ffn_up: one matrix whose rows alternate gate and up when they share a type, so
/// that a decode step applies the activation as it stores (one product), else two.
pub enum GateUp<M> {
    /// Rows gate 0, up 0, gate 1, up 1, …: [n_embd] -> [2 · n_ff].
    Interleaved(M),
    Separate([M; 2]),
}

impl<M> Qkv<M> {
    pub fn matrices(&self) -> Vec<&M> {
        match self {
            Qkv::Fused(m) => vec![m],
            Qkv::Separate(m) => m.iter().collect(),
        }
    }
}

impl<M> GateUp<M> {
    pub fn matrices(&self) -> Vec<&M> {
        match self {
            GateUp::Interleaved(m) => vec![m],
            GateUp::Separate(m) => m.iter().collect(),
        }
    }
}

/// The sizes a batch's activations are allocated for, once.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Tokens per forward pass at most.
    pub batch: u32,
    pub n_embd: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    pub head_dim: u32,
    pub n_ff: u32,
    pub n_vocab: u32,
}

/// How a layer rotates q and k, and what happens to them first; the whole step runs as one
/// (the GPU's KV store kernel does it in one dispatch).
pub struct Rope<'a, V> {
    /// Rotated dimensions per head (even, ≤ head_dim); the rest stay.
    pub n_rot: u32,
    pub base: f32,
    pub freq_scale: f32,
    /// Multiplies cos and sin (ggml's `mscale`; phi3 LongRoPE's `rope.scaling.attn_factor`).
    pub attn_factor: f32,
    pub mode: RopeMode,
    /// f32 [n_rot / 2] divisors of the frequencies (llama3 `rope_freqs`, phi3 rope factors).
    pub freq_factors: Option<&'a V>,
    /// q is multiplied by this after the rotation (gemma3, phi3; 1 elsewhere).
    pub q_scale: f32,
    /// Biases added to q, k and v first (qwen2).
    pub biases: [Option<&'a V>; 3],
    /// Per-head RMSNorm weights of q and k, f32 [head_dim] each, applied before the rotation
    /// (qwen3, gemma3), with this eps.
    pub norms: Option<([&'a V; 2], f32)>,
}

/// The attention of one layer over its cache.
#[derive(Clone, Copy, Debug)]
pub struct Attend {
    pub n_head: u32,
    pub scale: f32,
    /// Keys further back than this are masked (sliding-window layers); 0: none.
    pub window: u32,
}

/// Which activation a sublayer's output projection reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// The attention output, f32 [n, n_head · head_dim].
    Att,
    /// The gated feed-forward activation, f32 [n, n_ff].
    Gate,
}

/// A matrix of quantized weights, as a backend holds it.
pub trait Matrix {
    fn ty(&self) -> GgmlType;
    /// Bytes held (for the memory report).
    fn bytes(&self) -> u64;
}

/// One layer's K/V cache: position p lives in cell `p % cells` (a ring for sliding-window
/// layers).
pub trait KvCells {
    fn cells(&self) -> u32;
    /// Bytes held (for the memory report).
    fn bytes(&self) -> u64;
}

pub trait Backend: Sized {
    /// f32 weights of a norm, a bias or rope factors.
    type Vector;
    type Matrix: Matrix;
    type Kv: KvCells;
    /// A batch's activations, allocated once.
    type State;
    type Pass<'a>: Pass<'a, Self>
    where
        Self: 'a;

    /// A matrix of `dims` = [cols, rows] weights of `ty`, filled by [`Backend::write_rows`].
    fn matrix(&self, label: &str, ty: GgmlType, dims: &[u64]) -> Result<Self::Matrix>;
    /// Stores rows `row0..` of `m` from their ggml bytes.
    fn write_rows(&self, m: &mut Self::Matrix, row0: u32, data: &[u8]) -> Result<()>;
    fn vector(&self, label: &str, values: &[f32]) -> Self::Vector;
    fn kv_cache(&self, label: &str, cells: u32, n_kv: u32, head_dim: u32) -> Self::Kv;
    /// Activations for batches of `shape`, fed to `matrices` (their types decide the quantized
    /// forms kept).
    fn state(&self, shape: Shape, matrices: &[&Self::Matrix]) -> Self::State;
    /// Makes room for [`Want::AllLogits`] (only scoring needs it).
    fn reserve_all_logits(&self, state: &mut Self::State);
    /// The forward pass of `ids` at positions `pos..`.
    fn pass<'a>(&'a self, state: &'a Self::State, ids: &[u32], pos: u32) -> Self::Pass<'a>;
    /// Fails when the device is gone (lost GPU); the CPU is always there.
    fn check_lost(&self) -> Result<()>;
    /// What has been recorded so far (GPU dispatches, bytes; zero on the CPU).
    fn counts(&self) -> Counts;
}

/// The steps of one batch's forward pass, in the order model/forward.rs calls them. `n` tokens
/// at positions `pos..`, both given when the pass was made.
#[allow(async_fn_in_trait)] // used with concrete types only
pub trait Pass<'a, B: Backend + 'a> {
    /// x = scale · table[ids].
    fn embed(&mut self, table: &'a B::Matrix, scale: f32) -> Result<()>;
    /// xb = rmsnorm(x) · w, in the form `for_matrices` take it. `post`: a gemma3 post-norm left
    /// pending by [`Pass::project`], applied first: x += rmsnorm(o) · post.
    fn norm(
        &mut self,
        w: &'a B::Vector,
        eps: f32,
        post: Option<&'a B::Vector>,
        for_matrices: &[&'a B::Matrix],
    ) -> Result<()>;
    /// q, k, v = the projections of xb.
    fn qkv(&mut self, m: &'a Qkv<B::Matrix>) -> Result<()>;
    /// Biases, q/k norms, RoPE of q and k, and k, v into the cache.
    fn rope_store(&mut self, kv: &'a B::Kv, rope: &Rope<'a, B::Vector>) -> Result<()>;
    /// att = softmax(q · Kᵀ · scale) · V over the cache (causal, GQA, sliding window).
    fn attention(&mut self, kv: &'a B::Kv, a: Attend) -> Result<()>;
    /// gate = act(gate(xb)) · up(xb).
    fn gate_up(&mut self, m: &'a GateUp<B::Matrix>, act: Activation) -> Result<()>;
    /// x += m · from; with a post-norm (gemma3), o = m · from instead, the norm and add being
    /// left to the next [`Pass::norm`] or [`Pass::head`]. Returns whether it left them.
    fn project(&mut self, from: Act, m: &'a B::Matrix, post: Option<&'a B::Vector>)
        -> Result<bool>;
    /// logits = output · rmsnorm(x) · w, of every position (`AllLogits`) or the last; with
    /// `Argmax`, also the greedy token.
    fn head(
        &mut self,
        w: &'a B::Vector,
        eps: f32,
        post: Option<&'a B::Vector>,
        output: &'a B::Matrix,
        want: Want,
    ) -> Result<()>;
    /// Runs what was recorded and returns what `want` asks for.
    async fn finish(self, want: Option<Want>) -> Result<Option<Output>>;
}

//! Hyperparameters of a supported architecture, read from GGUF metadata with llama.cpp's
//! defaults and per-architecture rules.

use crate::backend::{Activation, RopeMode};
use crate::error::{Error, Result};
use crate::inspect::ModelInfo;

pub const SUPPORTED_ARCHITECTURES: &[&str] = &["llama", "gemma3", "qwen2", "qwen3", "phi3"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// Llama 1–3, Mistral, SmolLM2, TinyLlama.
    Llama,
    Gemma3,
    /// q/k/v biases.
    Qwen2,
    /// q/k norms.
    Qwen3,
    /// Fused attn_qkv and gate+up; long/short rope factors.
    Phi3,
}

impl Arch {
    /// The architecture of a `general.architecture` value.
    pub fn from_name(name: &str) -> Result<Arch> {
        Ok(match name {
            "llama" => Arch::Llama,
            "gemma3" => Arch::Gemma3,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            "phi3" => Arch::Phi3,
            other => {
                return Err(Error::UnsupportedArchitecture {
                    arch: other.into(),
                    supported: SUPPORTED_ARCHITECTURES.join(", "),
                })
            }
        })
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub arch: Arch,
    pub n_layer: u32,
    pub n_embd: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    /// Key and value length per head (equal for the supported architectures).
    pub head_dim: u32,
    pub n_ff: u32,
    pub n_vocab: u32,
    pub n_ctx_train: u32,
    /// The context the model was pretrained with before rope scaling (phi3 picks its long rope
    /// factors beyond it).
    pub n_ctx_orig: u32,
    pub rms_eps: f32,
    pub rope_mode: RopeMode,
    /// Rotated dimensions per head.
    pub n_rot: u32,
    pub rope_base: f32,
    pub rope_freq_scale: f32,
    /// Multiplies RoPE's cos and sin (phi3 LongRoPE: `rope.scaling.attn_factor`).
    pub rope_attn_factor: f32,
    /// gemma3's local (sliding-window) layers rotate with their own base.
    pub rope_base_local: f32,
    /// 0 when the model has no sliding window.
    pub window: u32,
    /// Per layer: attends only over the window.
    pub sliding: Vec<bool>,
    /// Multiplies the token embeddings (gemma: √n_embd).
    pub embed_scale: f32,
    /// Multiplies Q after RoPE (llama.cpp's `ggml_scale` of Qcur: gemma3, phi3); 1 for none.
    pub q_scale: f32,
    /// Multiplies q·k.
    pub attn_scale: f32,
    pub activation: Activation,
}

impl Config {
    pub fn from_info(info: &ModelInfo) -> Result<Self> {
        let arch = Arch::from_name(&info.architecture)?;
        let hp = &info.hparams;
        let meta = |k: &str| info.metadata.get(format!("{}.{k}", info.architecture));
        let meta_f32 = |k: &str| meta(k).and_then(|v| v.as_f64()).map(|v| v as f32);
        let n_head_kv = hp.kv_heads[0];
        if hp.kv_heads.iter().any(|&k| k != n_head_kv)
            || n_head_kv == 0
            || !hp.heads.is_multiple_of(n_head_kv)
        {
            return Err(Error::BadValue {
                source_name: info.parts[0].name.clone(),
                key: format!("{}.attention.head_count_kv", info.architecture),
                reason: format!(
                    "{:?} kv heads for {} heads: must be one value dividing the head count",
                    hp.kv_heads, hp.heads
                ),
            });
        }
        if hp.key_length != hp.value_length {
            return Err(Error::BadValue {
                source_name: info.parts[0].name.clone(),
                key: format!("{}.attention.value_length", info.architecture),
                reason: format!(
                    "key length {} ≠ value length {}: not supported yet",
                    hp.key_length, hp.value_length
                ),
            });
        }
        let head_dim = hp.key_length;
        let scaling = meta_f32("rope.scaling.factor").filter(|&f| {
            f > 0.0 && meta("rope.scaling.type").and_then(|t| t.as_str()) != Some("none")
        });
        let window = hp.sliding_window.unwrap_or(0);
        Ok(Config {
            arch,
            n_layer: hp.layers,
            n_embd: hp.embedding_length,
            n_head: hp.heads,
            n_head_kv,
            head_dim,
            n_ff: hp.feed_forward_length.unwrap_or(4 * hp.embedding_length),
            n_vocab: hp.vocab_size as u32,
            n_ctx_train: hp.context_length,
            n_ctx_orig: meta("rope.scaling.original_context_length")
                .and_then(|v| v.as_u64())
                .map_or(hp.context_length, |n| n as u32),
            rms_eps: meta_f32("attention.layer_norm_rms_epsilon").unwrap_or(1e-6),
            // llama.cpp's llama_model_rope_type.
            rope_mode: match arch {
                Arch::Llama => RopeMode::Normal,
                Arch::Gemma3 | Arch::Qwen2 | Arch::Qwen3 | Arch::Phi3 => RopeMode::Neox,
            },
            n_rot: meta("rope.dimension_count")
                .and_then(|v| v.as_u64())
                .map_or(head_dim, |n| n as u32),
            rope_base: hp.rope_freq_base.map_or(10_000.0, |b| b as f32),
            rope_freq_scale: scaling.map_or(1.0, |f| 1.0 / f),
            rope_attn_factor: meta_f32("rope.scaling.attn_factor").unwrap_or(1.0),
            rope_base_local: 10_000.0,
            window,
            sliding: (0..hp.layers)
                .map(|il| window > 0 && hp.sliding_window_layers.contains(&il))
                .collect(),
            embed_scale: match arch {
                Arch::Gemma3 => (hp.embedding_length as f32).sqrt(),
                _ => 1.0,
            },
            // llama.cpp scales gemma3's and phi3's Q before attention (gemma3 27B, of 62 layers,
            // by n_embd / n_head), the others' q·k inside it.
            q_scale: match arch {
                Arch::Gemma3 if hp.layers == 62 => {
                    1.0 / ((hp.embedding_length / hp.heads) as f32).sqrt()
                }
                Arch::Gemma3 | Arch::Phi3 => 1.0 / (head_dim as f32).sqrt(),
                _ => 1.0,
            },
            attn_scale: match arch {
                Arch::Gemma3 | Arch::Phi3 => 1.0,
                _ => 1.0 / (head_dim as f32).sqrt(),
            },
            activation: match arch {
                Arch::Gemma3 => Activation::GeluTanh,
                _ => Activation::Silu,
            },
        })
    }

    /// Rope base and frequency scale of layer `il`.
    pub fn rope_for_layer(&self, il: usize) -> (f32, f32) {
        match self.arch {
            Arch::Gemma3 if self.sliding[il] => (self.rope_base_local, 1.0),
            _ => (self.rope_base, self.rope_freq_scale),
        }
    }
}

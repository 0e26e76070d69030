//! The forward pass, once for every backend: llama2.c's `forward()` over the steps of
//! [`Pass`]. Each step is one fused kernel on the GPU and one multithreaded loop on the CPU.

use super::{Config, Layer, Transformer};
use crate::backend::{Act, Attend, Backend, Pass, Rope, Want};
use crate::error::Result;

impl<B: Backend> Transformer<B> {
    /// The forward pass of a batch in `p`, ending with the projection `want` asks for (none for
    /// a batch whose outputs nobody reads).
    pub(super) fn forward<'a>(
        &'a self,
        c: &Config,
        p: &mut B::Pass<'a>,
        want: Option<Want>,
    ) -> Result<()> {
        p.embed(&self.token_embd, c.embed_scale)?;
        // A gemma3 post-norm whose norm and residual add the next norm does.
        let mut post = None;
        for (il, l) in self.layers.iter().enumerate() {
            post = self.attention(c, p, il, l, post)?;
            post = self.feed_forward(c, p, l, post)?;
        }
        if let Some(want) = want {
            let output = self.output.as_ref().unwrap_or(&self.token_embd);
            p.head(&self.output_norm, c.rms_eps, post, output, want)?;
        }
        Ok(())
    }

    /// x += attention(norm(x)) in layer `il`; returns the post-norm it leaves pending, if any.
    fn attention<'a>(
        &'a self,
        c: &Config,
        p: &mut B::Pass<'a>,
        il: usize,
        l: &'a Layer<B>,
        post: Option<&'a B::Vector>,
    ) -> Result<Option<&'a B::Vector>> {
        p.norm(&l.attn_norm, c.rms_eps, post, &l.attn_qkv.matrices())?;
        p.qkv(&l.attn_qkv)?;
        let (base, freq_scale) = c.rope_for_layer(il);
        let norms = match (&l.attn_q_norm, &l.attn_k_norm) {
            (Some(qn), Some(kn)) => Some(([qn, kn], c.rms_eps)),
            _ => None,
        };
        let rope = Rope {
            n_rot: c.n_rot,
            base,
            freq_scale,
            attn_factor: c.rope_attn_factor,
            mode: c.rope_mode,
            freq_factors: self.rope_factors.as_ref(),
            q_scale: c.q_scale,
            biases: [&l.attn_q_bias, &l.attn_k_bias, &l.attn_v_bias].map(|b| b.as_ref()),
            norms,
        };
        p.rope_store(&l.kv, &rope)?;
        let window = if c.sliding[il] { c.window } else { 0 };
        p.attention(
            &l.kv,
            Attend {
                n_head: c.n_head,
                scale: c.attn_scale,
                window,
            },
        )?;
        let post = l.post_attention_norm.as_ref();
        Ok(p.project(Act::Att, &l.attn_output, post)?
            .then_some(post)
            .flatten())
    }

    /// x += down(act(gate(norm(x))) · up(norm(x))); returns the post-norm it leaves pending.
    fn feed_forward<'a>(
        &self,
        c: &Config,
        p: &mut B::Pass<'a>,
        l: &'a Layer<B>,
        post: Option<&'a B::Vector>,
    ) -> Result<Option<&'a B::Vector>> {
        p.norm(&l.ffn_norm, c.rms_eps, post, &l.ffn_gate_up.matrices())?;
        p.gate_up(&l.ffn_gate_up, c.activation)?;
        let post = l.post_ffw_norm.as_ref();
        Ok(p.project(Act::Gate, &l.ffn_down, post)?
            .then_some(post)
            .flatten())
    }
}

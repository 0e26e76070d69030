//! The CPU engine behind the backend interface: each step of the forward pass runs as it is
//! called, over activations allocated once.

use super::act::{gated, gated_interleaved};
use super::attention::attention;
use super::quantize::QAct;
use super::rmsnorm::rmsnorm;
use super::rope::{rope_store, CpuKv};
use super::{Cpu, CpuMatrix};
use crate::backend::{
    Act, ActKind, Activation, Attend, Backend, GateUp, Matrix, Output, Pass, Qkv, Rope, Shape, Want,
};
use crate::error::Result;
use crate::gpu::Counts;
use crate::quant::{dequantize, GgmlType};
use std::cell::{RefCell, RefMut};

/// Activations for one batch, allocated once (f32 unless said otherwise).
pub struct Acts {
    shape: Shape,
    x: Vec<f32>,    // [batch, n_embd]   the residual stream
    xb: Vec<f32>,   // [batch, n_embd]   normed input of a sublayer
    o: Vec<f32>,    // [batch, n_embd]   a sublayer's output (gemma3's post-norm input)
    q: Vec<f32>,    // [batch, n_head, head_dim]
    k: Vec<f32>,    // [batch, n_head_kv, head_dim]
    v: Vec<f32>,    // [batch, n_head_kv, head_dim]
    att: Vec<f32>,  // [batch, n_head, head_dim]
    gate: Vec<f32>, // [batch, n_ff]     the gated activation (down's input)
    /// [batch, max(2 · n_ff, q + k + v rows)]: fused products before they are split.
    wide: Vec<f32>,
    logits: Vec<f32>, // [batch, n_vocab] with AllLogits, else [n_vocab]
    /// xb quantized, one per kind its matrices need; then the input of an output projection.
    xq: Vec<QAct>,
    yq: Vec<QAct>,
}

pub struct CpuState(RefCell<Acts>);

impl Acts {
    fn quantized(all: &mut [QAct], kind: ActKind) -> &mut QAct {
        all.iter_mut()
            .find(|q| q.kind == kind)
            .expect("kinds allocated in state()")
    }
}

impl Matrix for CpuMatrix {
    fn ty(&self) -> GgmlType {
        self.ty
    }

    fn bytes(&self) -> u64 {
        self.data.len() as u64
    }
}

impl Backend for Cpu {
    type Vector = Vec<f32>;
    type Matrix = CpuMatrix;
    type Kv = CpuKv;
    type State = CpuState;
    type Pass<'a> = CpuPass<'a>;

    fn matrix(&self, label: &str, ty: GgmlType, dims: &[u64]) -> Result<CpuMatrix> {
        CpuMatrix::new(label, ty, dims)
    }

    fn write_rows(&self, m: &mut CpuMatrix, row0: u32, data: &[u8]) -> Result<()> {
        m.write_rows(row0 as usize, data)
    }

    fn vector(&self, _label: &str, values: &[f32]) -> Vec<f32> {
        values.to_vec()
    }

    fn kv_cache(&self, _label: &str, cells: u32, n_kv: u32, head_dim: u32) -> CpuKv {
        CpuKv::new(cells, n_kv, head_dim)
    }

    fn state(&self, s: Shape, matrices: &[&CpuMatrix]) -> CpuState {
        let f32s = |n: u32| vec![0f32; (s.batch * n) as usize];
        let mut kinds: Vec<ActKind> = matrices
            .iter()
            .map(|m| ActKind::for_weights(m.ty))
            .collect();
        kinds.sort();
        kinds.dedup();
        let qkv = (s.n_head + 2 * s.n_head_kv) * s.head_dim;
        CpuState(RefCell::new(Acts {
            shape: s,
            x: f32s(s.n_embd),
            xb: f32s(s.n_embd),
            o: f32s(s.n_embd),
            q: f32s(s.n_head * s.head_dim),
            k: f32s(s.n_head_kv * s.head_dim),
            v: f32s(s.n_head_kv * s.head_dim),
            att: f32s(s.n_head * s.head_dim),
            gate: f32s(s.n_ff),
            wide: f32s(qkv.max(2 * s.n_ff)),
            logits: vec![0.0; s.n_vocab as usize],
            xq: kinds.iter().map(|&k| QAct::new(k)).collect(),
            yq: kinds.iter().map(|&k| QAct::new(k)).collect(),
        }))
    }

    fn reserve_all_logits(&self, state: &mut CpuState) {
        let a = state.0.get_mut();
        a.logits
            .resize((a.shape.batch * a.shape.n_vocab) as usize, 0.0);
    }

    fn pass<'a>(&'a self, state: &'a CpuState, ids: &[u32], pos: u32) -> CpuPass<'a> {
        CpuPass {
            cpu: self,
            a: state.0.borrow_mut(),
            ids: ids.to_vec(),
            pos,
            token: None,
        }
    }

    fn check_lost(&self) -> Result<()> {
        Ok(())
    }

    fn counts(&self) -> Counts {
        Counts::default()
    }
}

pub struct CpuPass<'a> {
    cpu: &'a Cpu,
    a: RefMut<'a, Acts>,
    ids: Vec<u32>,
    pos: u32,
    /// The greedy token, once the head has run with `Want::Argmax`.
    token: Option<u32>,
}

impl CpuPass<'_> {
    fn n(&self) -> usize {
        self.ids.len()
    }
}

/// Index of the largest value, the first of equals (as the GPU's argmax and ggml's).
fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

impl<'a> Pass<'a, Cpu> for CpuPass<'a> {
    fn embed(&mut self, table: &'a CpuMatrix, scale: f32) -> Result<()> {
        let d = table.cols;
        for (t, &id) in self.ids.iter().enumerate() {
            let row = dequantize(table.ty, table.row(id as usize))?;
            for (x, v) in self.a.x[t * d..(t + 1) * d].iter_mut().zip(row) {
                *x = v * scale;
            }
        }
        Ok(())
    }

    fn norm(
        &mut self,
        w: &'a Vec<f32>,
        eps: f32,
        post: Option<&'a Vec<f32>>,
        for_matrices: &[&'a CpuMatrix],
    ) -> Result<()> {
        let (n, a) = (self.n(), &mut *self.a);
        let d = a.shape.n_embd as usize;
        for t in 0..n {
            let x = &mut a.x[t * d..(t + 1) * d];
            if let Some(pw) = post {
                let o = &mut a.o[t * d..(t + 1) * d];
                super::rmsnorm::rmsnorm_in_place(o, pw, eps);
                x.iter_mut().zip(o.iter()).for_each(|(x, o)| *x += o);
            }
            rmsnorm(x, w, eps, &mut a.xb[t * d..(t + 1) * d]);
        }
        let mut kinds: Vec<ActKind> = for_matrices
            .iter()
            .map(|m| ActKind::for_weights(m.ty))
            .collect();
        kinds.dedup();
        for kind in kinds {
            Acts::quantized(&mut a.xq, kind).quantize(&a.xb, n, d);
        }
        Ok(())
    }

    fn qkv(&mut self, m: &'a Qkv<CpuMatrix>) -> Result<()> {
        let (n, cpu, a) = (self.n(), self.cpu, &mut *self.a);
        let s = a.shape;
        let (qr, kr) = (
            (s.n_head * s.head_dim) as usize,
            (s.n_head_kv * s.head_dim) as usize,
        );
        match m {
            Qkv::Fused(m) => {
                let input = Acts::quantized(&mut a.xq, ActKind::for_weights(m.ty));
                m.matmul(cpu, input, &mut a.wide);
                let rows = qr + 2 * kr;
                for t in 0..n {
                    let y = &a.wide[t * rows..(t + 1) * rows];
                    a.q[t * qr..(t + 1) * qr].copy_from_slice(&y[..qr]);
                    a.k[t * kr..(t + 1) * kr].copy_from_slice(&y[qr..qr + kr]);
                    a.v[t * kr..(t + 1) * kr].copy_from_slice(&y[qr + kr..]);
                }
            }
            Qkv::Separate([mq, mk, mv]) => {
                for (m, y) in [(mq, &mut a.q), (mk, &mut a.k), (mv, &mut a.v)] {
                    let input = Acts::quantized(&mut a.xq, ActKind::for_weights(m.ty));
                    m.matmul(cpu, input, y);
                }
            }
        }
        Ok(())
    }

    fn rope_store(&mut self, kv: &'a CpuKv, rope: &Rope<'a, Vec<f32>>) -> Result<()> {
        let (n, a) = (self.n(), &mut *self.a);
        let n_head = a.shape.n_head as usize;
        rope_store(kv, rope, &mut a.q, &mut a.k, &mut a.v, n, n_head, self.pos);
        Ok(())
    }

    fn attention(&mut self, kv: &'a CpuKv, at: Attend) -> Result<()> {
        let (n, a) = (self.n(), &mut *self.a);
        attention(self.cpu, kv, at, &a.q, &mut a.att, n, self.pos);
        Ok(())
    }

    fn gate_up(&mut self, m: &'a GateUp<CpuMatrix>, act: Activation) -> Result<()> {
        let (n, cpu, a) = (self.n(), self.cpu, &mut *self.a);
        let ff = a.shape.n_ff as usize;
        match m {
            GateUp::Interleaved(m) => {
                let input = Acts::quantized(&mut a.xq, ActKind::for_weights(m.ty));
                m.matmul(cpu, input, &mut a.wide);
                gated_interleaved(cpu, act, &a.wide[..2 * n * ff], &mut a.gate[..n * ff], ff);
            }
            GateUp::Separate([g, u]) => {
                let input = Acts::quantized(&mut a.xq, ActKind::for_weights(g.ty));
                g.matmul(cpu, input, &mut a.gate);
                let input = Acts::quantized(&mut a.xq, ActKind::for_weights(u.ty));
                u.matmul(cpu, input, &mut a.wide);
                gated(cpu, act, &mut a.gate[..n * ff], &a.wide[..n * ff], ff);
            }
        }
        Ok(())
    }

    fn project(&mut self, from: Act, m: &'a CpuMatrix, post: Option<&'a Vec<f32>>) -> Result<bool> {
        let (n, cpu, a) = (self.n(), self.cpu, &mut *self.a);
        let src = match from {
            Act::Att => &a.att,
            Act::Gate => &a.gate,
        };
        let input = Acts::quantized(&mut a.yq, ActKind::for_weights(m.ty));
        input.quantize(src, n, m.cols);
        let d = a.shape.n_embd as usize;
        m.matmul(cpu, input, &mut a.o);
        if post.is_none() {
            for (x, o) in a.x[..n * d].iter_mut().zip(&a.o) {
                *x += o;
            }
        }
        Ok(post.is_some())
    }

    fn head(
        &mut self,
        w: &'a Vec<f32>,
        eps: f32,
        post: Option<&'a Vec<f32>>,
        output: &'a CpuMatrix,
        want: Want,
    ) -> Result<()> {
        let n = self.n();
        // Only the last position is normed and projected, unless every one is wanted.
        let first = if want == Want::AllLogits { 0 } else { n - 1 };
        let a = &mut *self.a;
        let d = a.shape.n_embd as usize;
        if let Some(pw) = post {
            for t in first..n {
                let o = &mut a.o[t * d..(t + 1) * d];
                super::rmsnorm::rmsnorm_in_place(o, pw, eps);
                a.x[t * d..(t + 1) * d]
                    .iter_mut()
                    .zip(o.iter())
                    .for_each(|(x, o)| *x += o);
            }
        }
        for t in first..n {
            let (x, xb) = (
                &a.x[t * d..(t + 1) * d],
                &mut a.xb[(t - first) * d..(t - first + 1) * d],
            );
            rmsnorm(x, w, eps, xb);
        }
        let input = Acts::quantized(&mut a.yq, ActKind::for_weights(output.ty));
        input.quantize(&a.xb, n - first, d);
        output.matmul(self.cpu, input, &mut a.logits);
        if want == Want::Argmax {
            self.token = Some(argmax(&a.logits[..a.shape.n_vocab as usize]));
        }
        Ok(())
    }

    async fn finish(self, want: Option<Want>) -> Result<Option<Output>> {
        #[cfg(target_arch = "wasm32")]
        if let Some(pause) = &self.cpu.yield_hook {
            pause().await;
        }
        let (n, n_vocab) = (self.n(), self.a.shape.n_vocab as usize);
        Ok(match want {
            None => None,
            Some(Want::Argmax) => Some(Output::Token(self.token.expect("head ran"))),
            Some(Want::Logits) => Some(Output::Logits(self.a.logits[..n_vocab].to_vec())),
            Some(Want::AllLogits) => Some(Output::AllLogits(self.a.logits[..n * n_vocab].to_vec())),
        })
    }
}

//! The GPU engine behind the backend interface: a batch's forward pass recorded into one
//! compute pass of one command encoder ([`Rec`]), submitted once by [`Pass::finish`].

use super::{
    ActInputs, ActQuant, Add, Argmax, Attention, Buffer, Counts, GatedAct, Gpu, KvCache, Pos,
    PostNorm, QMatrix, Rec, RopeQ, RopeSpec,
};
use crate::backend::{
    Act, Activation, Attend, Backend, GateUp, KvCells, Matrix, Output, Pass, Qkv, Rope, Shape, Want,
};
use crate::error::Result;
use crate::quant::GgmlType;

/// Activations for one batch, allocated once.
pub struct RunState {
    shape: Shape,
    ids: Buffer,    // u32 [batch]
    x: Buffer,      // f32 [batch, n_embd]   the residual stream
    xb: Buffer,     // f32 [batch, n_embd]   normed input of a sublayer
    o: Buffer,      // f32 [batch, n_embd]   output of a sublayer
    q: Buffer,      // f32 [batch, n_head, head_dim]
    k: Buffer,      // f32 [batch, n_head_kv, head_dim]
    v: Buffer,      // f32 [batch, n_head_kv, head_dim]
    att: Buffer,    // f32 [batch, n_head, head_dim]
    gate: Buffer,   // f32 [batch, n_ff]       the gated activation (down's input)
    up: Buffer,     // f32 [batch, 2 · n_ff]   up, or interleaved gate and up products
    last: Buffer,   // f32 [n_embd]          the normed last position
    logits: Buffer, // f32 [n_vocab]
    token: Buffer,  // u32 [1]               argmax of logits
    /// The batch's first position, read by RoPE, the KV store and attention.
    pos: Pos,
    /// Matmul inputs quantized as llama.cpp's CPU backend does (see gpu/quantize.rs).
    act: ActQuant,
    /// f32 [batch, n_vocab], only for scoring every position.
    all_logits: Option<Buffer>,
}

impl Matrix for QMatrix {
    fn ty(&self) -> GgmlType {
        self.ty
    }

    fn bytes(&self) -> u64 {
        self.gpu_bytes()
    }
}

impl KvCells for KvCache {
    fn cells(&self) -> u32 {
        self.cells
    }

    fn bytes(&self) -> u64 {
        self.k.size() + self.v.size()
    }
}

impl Backend for Gpu {
    type Vector = Buffer;
    type Matrix = QMatrix;
    type Kv = KvCache;
    type State = RunState;
    type Pass<'a> = GpuPass<'a>;

    fn matrix(&self, label: &str, ty: GgmlType, dims: &[u64]) -> Result<QMatrix> {
        QMatrix::create(self, label, ty, dims)
    }

    fn write_rows(&self, m: &mut QMatrix, row0: u32, data: &[u8]) -> Result<()> {
        m.write_rows(self, row0, data)
    }

    fn vector(&self, label: &str, values: &[f32]) -> Buffer {
        self.upload(label, bytemuck::cast_slice(values))
    }

    fn kv_cache(&self, label: &str, cells: u32, n_kv: u32, head_dim: u32) -> KvCache {
        KvCache::new(self, label, cells, n_kv, head_dim)
    }

    fn state(&self, s: Shape, matrices: &[&QMatrix]) -> RunState {
        let f32s = |label: &str, n: u32| self.storage(label, n as u64 * 4);
        let b = s.batch;
        let widest = s.n_embd.max(s.n_ff).max(s.n_head * s.head_dim);
        RunState {
            shape: s,
            ids: f32s("ids", b),
            x: f32s("x", b * s.n_embd),
            xb: f32s("xb", b * s.n_embd),
            o: f32s("o", b * s.n_embd),
            q: f32s("q", b * s.n_head * s.head_dim),
            k: f32s("k", b * s.n_head_kv * s.head_dim),
            v: f32s("v", b * s.n_head_kv * s.head_dim),
            att: f32s("att", b * s.n_head * s.head_dim),
            gate: f32s("gate", b * s.n_ff),
            up: f32s("up", b * 2 * s.n_ff),
            last: f32s("last", s.n_embd),
            logits: f32s("logits", s.n_vocab),
            token: f32s("token", 1),
            pos: Pos::new(self, 0),
            act: ActQuant::new(self, matrices.iter().copied(), (b * widest) as u64),
            all_logits: None,
        }
    }

    fn reserve_all_logits(&self, state: &mut RunState) {
        if state.all_logits.is_none() {
            let bytes = state.shape.batch as u64 * state.shape.n_vocab as u64 * 4;
            state.all_logits = Some(self.storage("all_logits", bytes));
        }
    }

    fn pass<'a>(&'a self, s: &'a RunState, ids: &[u32], pos: u32) -> GpuPass<'a> {
        s.pos.set(self, pos);
        self.write(&s.ids, 0, bytemuck::cast_slice(ids));
        GpuPass {
            rec: Rec::new(self),
            s,
            n: ids.len() as u32,
            xb: None,
        }
    }

    fn check_lost(&self) -> Result<()> {
        Gpu::check_lost(self)
    }

    fn counts(&self) -> Counts {
        Gpu::counts(self)
    }
}

pub struct GpuPass<'a> {
    rec: Rec<'a>,
    s: &'a RunState,
    n: u32,
    /// The last norm's output, in the forms its matrices take.
    xb: Option<ActInputs<'a>>,
}

impl<'a> GpuPass<'a> {
    fn normed(&self) -> &ActInputs<'a> {
        self.xb
            .as_ref()
            .expect("the forward pass norms before it projects")
    }

    fn post(&self, w: Option<&'a Buffer>) -> Option<PostNorm<'a>> {
        w.map(|w| PostNorm { o: &self.s.o, w })
    }
}

impl<'a> Pass<'a, Gpu> for GpuPass<'a> {
    fn embed(&mut self, table: &'a QMatrix, scale: f32) -> Result<()> {
        let s = self.s;
        table.record_embed(&mut self.rec, &s.ids, &s.x, self.n, scale)
    }

    fn norm(
        &mut self,
        w: &'a Buffer,
        eps: f32,
        post: Option<&'a Buffer>,
        for_matrices: &[&'a QMatrix],
    ) -> Result<()> {
        let (s, d) = (self.s, self.s.shape.n_embd);
        let post = self.post(post);
        let xb = s.act.record_norm(
            &mut self.rec,
            &s.x,
            0,
            w,
            &s.xb,
            self.n,
            d,
            eps,
            for_matrices,
            post,
        )?;
        self.xb = Some(xb);
        Ok(())
    }

    fn qkv(&mut self, m: &'a Qkv<QMatrix>) -> Result<()> {
        let (s, n) = (self.s, self.n);
        let q_rows = s.shape.n_head * s.shape.head_dim;
        let kv_rows = s.shape.n_head_kv * s.shape.head_dim;
        let xb = self.normed();
        match m {
            Qkv::Fused(m) => {
                let input = xb.for_matrix(m)?;
                let seg = [q_rows, q_rows + kv_rows];
                m.record_matmul_split(&mut self.rec, input, [&s.q, &s.k, &s.v], seg, n)
            }
            Qkv::Separate(ms) => {
                let inputs = ms
                    .iter()
                    .map(|m| xb.for_matrix(m))
                    .collect::<Result<Vec<_>>>()?;
                for ((m, input), y) in ms.iter().zip(inputs).zip([&s.q, &s.k, &s.v]) {
                    m.record_matmul(&mut self.rec, input, y, n)?;
                }
                Ok(())
            }
        }
    }

    fn rope_store(&mut self, kv: &'a KvCache, r: &Rope<'a, Buffer>) -> Result<()> {
        let (s, n) = (self.s, self.n);
        let (q_rows, kv_rows) = (
            s.shape.n_head * s.shape.head_dim,
            s.shape.n_head_kv * s.shape.head_dim,
        );
        // The store kernel adds all three biases (qwen2); a model with only some of them adds
        // them on its own.
        let biases = match r.biases {
            [Some(bq), Some(bk), Some(bv)] => Some([bq, bk, bv]),
            partial => {
                for (bias, y, rows) in [
                    (partial[0], &s.q, q_rows),
                    (partial[1], &s.k, kv_rows),
                    (partial[2], &s.v, kv_rows),
                ] {
                    if let Some(b) = bias {
                        Add::record_bias(&mut self.rec, y, b, n, rows)?;
                    }
                }
                None
            }
        };
        let spec = RopeSpec {
            n_rot: r.n_rot,
            base: r.base,
            freq_scale: r.freq_scale,
            attn_factor: r.attn_factor,
            mode: r.mode,
            freq_factors: r.freq_factors,
        };
        let rope_q = RopeQ {
            q: &s.q,
            n_head: s.shape.n_head,
            q_scale: r.q_scale,
            spec: &spec,
            norms: r.norms,
            biases,
        };
        kv.record_store(&mut self.rec, &s.k, &s.v, n, &s.pos, Some(rope_q))
    }

    fn attention(&mut self, kv: &'a KvCache, a: Attend) -> Result<()> {
        let s = self.s;
        Attention::record(
            &mut self.rec,
            &s.q,
            kv,
            &s.att,
            self.n,
            &s.pos,
            a.n_head,
            a.scale,
            a.window,
        )
    }

    fn gate_up(&mut self, m: &'a GateUp<QMatrix>, act: Activation) -> Result<()> {
        let (s, n) = (self.s, self.n);
        let xb = self.normed();
        match m {
            GateUp::Interleaved(m) => {
                let input = xb.for_matrix(m)?;
                m.record_matmul_gated(&mut self.rec, input, &s.up, &s.gate, n, act)
            }
            GateUp::Separate([gate, up]) => {
                let (gi, ui) = (xb.for_matrix(gate)?, xb.for_matrix(up)?);
                gate.record_matmul(&mut self.rec, gi, &s.gate, n)?;
                up.record_matmul(&mut self.rec, ui, &s.up, n)?;
                GatedAct::record(&mut self.rec, &s.gate, &s.up, n * s.shape.n_ff, act)
            }
        }
    }

    fn project(&mut self, from: Act, m: &'a QMatrix, post: Option<&'a Buffer>) -> Result<bool> {
        let (s, n) = (self.s, self.n);
        let (x, cols) = match from {
            Act::Att => (&s.att, s.shape.n_head * s.shape.head_dim),
            Act::Gate => (&s.gate, s.shape.n_ff),
        };
        let input = s.act.record(&mut self.rec, x, n, cols, &[m])?;
        let input = input.for_matrix(m)?;
        match post {
            None => m.record_matmul_add(&mut self.rec, input, &s.x, n)?,
            Some(_) => m.record_matmul(&mut self.rec, input, &s.o, n)?,
        }
        Ok(post.is_some())
    }

    fn head(
        &mut self,
        w: &'a Buffer,
        eps: f32,
        post: Option<&'a Buffer>,
        output: &'a QMatrix,
        want: Want,
    ) -> Result<()> {
        let (s, n, d) = (self.s, self.n, self.s.shape.n_embd);
        let post = self.post(post);
        let rec = &mut self.rec;
        match want {
            Want::AllLogits => {
                let all = s.all_logits.as_ref().expect("reserved in eval");
                let xb = s
                    .act
                    .record_norm(rec, &s.x, 0, w, &s.xb, n, d, eps, &[output], post)?;
                output.record_matmul(rec, xb.for_matrix(output)?, all, n)
            }
            Want::Argmax | Want::Logits => {
                // Only the last position is normed and projected to the vocabulary.
                let last =
                    s.act
                        .record_norm(rec, &s.x, n - 1, w, &s.last, 1, d, eps, &[output], post)?;
                output.record_matmul(rec, last.for_matrix(output)?, &s.logits, 1)?;
                if want == Want::Argmax {
                    Argmax::record(rec, &s.logits, s.shape.n_vocab, &s.token)?;
                }
                Ok(())
            }
        }
    }

    async fn finish(self, want: Option<Want>) -> Result<Option<Output>> {
        let (s, n, rec) = (self.s, self.n, self.rec);
        let n_vocab = s.shape.n_vocab as u64;
        let f32s = |bytes: Vec<u8>| bytemuck::pod_collect_to_vec::<u8, f32>(&bytes);
        Ok(match want {
            None => {
                rec.submit();
                None
            }
            Some(Want::AllLogits) => {
                let all = s.all_logits.as_ref().expect("reserved in eval");
                let bytes = rec.submit_and_read(all, n as u64 * n_vocab * 4).await?;
                Some(Output::AllLogits(f32s(bytes)))
            }
            Some(Want::Argmax) => {
                let id = rec.submit_and_read(&s.token, 4).await?;
                Some(Output::Token(u32::from_le_bytes([
                    id[0], id[1], id[2], id[3],
                ])))
            }
            Some(Want::Logits) => {
                let bytes = rec.submit_and_read(&s.logits, n_vocab * 4).await?;
                Some(Output::Logits(f32s(bytes)))
            }
        })
    }
}

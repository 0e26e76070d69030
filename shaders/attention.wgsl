// Causal attention over the f16 KV cache with an online softmax, one workgroup per (token, head):
//   out[t, h, :] = Σ_j softmax_j(scale · q[t, h, :] · K[j, h / group, :]) · V[j, h / group, :]
// over positions j ≤ p = pos0 + t, and p − j < window when window > 0 (llama.cpp masks a key
// when p − j ≥ window). Position j lives in cell j % cells. Keys go in tiles of WG_SIZE: each
// thread scores one key of the tile, then every thread folds the tile into the running max m,
// sum l and its own slice of the output accumulator (words tid, tid + WG_SIZE, …), so no
// context-sized buffer exists anywhere. The cache holds f16 pairs in u32 words (unpack2x16float
// needs no shader-f16).
//
// Two numerics, as llama.cpp's CPU flash attention has two (ggml-cpu ops.cpp):
// - default (its tiled path, batches of ≥ 64 queries): f32 throughout, a running max per tile;
// - F16_ACC (its `one_chunk` path: decode and batches under 64): q rounded to f16, and keys
//   folded one at a time in order with a per-key max, the output accumulator rounded to f16
//   after every scale and multiply-add (ggml_vec_scale_f16 / ggml_vec_mad_f16).
// Both finish with out = acc · (1 / l) as ggml does.
struct Params {
    n_tokens: u32, n_head: u32, n_kv: u32, cells: u32,
    window: u32, scale: f32, group: u32,
}
// The batch's first position (crate::gpu::Pos), rewritten before each batch.
struct Pos { pos0: u32 }

const HW: u32 = HEAD_DIM / 2u;                     // u32 words per head row
const NW: u32 = (HW + WG_SIZE - 1u) / WG_SIZE;     // accumulator words per thread

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<u32>;
@group(0) @binding(2) var<storage, read> v: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;
@group(0) @binding(5) var<uniform> start: Pos;

#include "f16.wgsl"

var<workgroup> qs: array<vec2<f32>, HW>;
var<workgroup> scores: array<f32, WG_SIZE>;

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let item = wid.x + wid.y * nwg.x; // t · n_head + h
    if (item >= p.n_tokens * p.n_head) {
        return; // uniform: the whole workgroup leaves
    }
    let t = item / p.n_head;
    let kv_off = (item % p.n_head) / p.group * HW;
    let pos = start.pos0 + t;
    var lo = 0u;
    if (p.window > 0u && pos >= p.window) {
        lo = pos + 1u - p.window;
    }
    let n_keys = pos + 1u - lo;
    let row_words = p.n_kv * HW;
    let scale = p.scale;

    let q_base = item * HEAD_DIM;
    for (var w = tid; w < HW; w += WG_SIZE) {
        qs[w] = vec2<f32>(q[q_base + 2u * w], q[q_base + 2u * w + 1u]);
#ifdef F16_ACC
        qs[w] = round_f16x2(qs[w]);
#endif
    }
    workgroupBarrier();

    var m = 0.0;
    var l = 0.0;
    var acc: array<vec2<f32>, NW>;
    for (var start = 0u; start < n_keys; start += WG_SIZE) {
        let cnt = min(WG_SIZE, n_keys - start);
        if (tid < cnt) {
            let kb = ((lo + start + tid) % p.cells) * row_words + kv_off;
            var dot = 0.0;
            for (var w = 0u; w < HW; w++) {
                let kk = unpack2x16float(k[kb + w]);
                let qq = qs[w];
                dot += kk.x * qq.x + kk.y * qq.y;
            }
            scores[tid] = dot * scale;
        }
        workgroupBarrier();

#ifdef F16_ACC
        for (var j = 0u; j < cnt; j++) {
            let sj = scores[j];
            var ms = 1.0;
            var vs = 1.0;
            if (start + j == 0u) {
                m = sj; // first key: acc and l are still 0
            } else if (sj > m) {
                ms = exp(m - sj);
                m = sj;
                for (var a = 0u; a < NW; a++) {
                    acc[a] = round_f16x2(acc[a] * ms);
                }
            } else {
                vs = exp(sj - m);
            }
            l = l * ms + vs;
            let vb = ((lo + start + j) % p.cells) * row_words + kv_off;
            for (var a = 0u; a < NW; a++) {
                let w = tid + a * WG_SIZE;
                if (w < HW) {
                    acc[a] = round_f16x2(fma(unpack2x16float(v[vb + w]), vec2<f32>(vs), acc[a]));
                }
            }
        }
#else
        var m_new = scores[0];
        for (var j = 1u; j < cnt; j++) {
            m_new = max(m_new, scores[j]);
        }
        var alpha = 0.0; // first tile: l and acc are still 0
        if (start > 0u) {
            m_new = max(m_new, m);
            alpha = exp(m - m_new);
        }
        l *= alpha;
        for (var a = 0u; a < NW; a++) {
            acc[a] *= alpha;
        }
        for (var j = 0u; j < cnt; j++) {
            let pj = exp(scores[j] - m_new);
            l += pj;
            let vb = ((lo + start + j) % p.cells) * row_words + kv_off;
            for (var a = 0u; a < NW; a++) {
                let w = tid + a * WG_SIZE;
                if (w < HW) {
                    acc[a] += pj * unpack2x16float(v[vb + w]);
                }
            }
        }
        m = m_new;
#endif
        workgroupBarrier(); // scores is rewritten by the next tile
    }

    // l ≥ 1: the maximal key contributes exp(0).
    for (var a = 0u; a < NW; a++) {
        let w = tid + a * WG_SIZE;
        if (w < HW) {
            let r = acc[a] * (1.0 / l);
            out[q_base + 2u * w] = r.x;
            out[q_base + 2u * w + 1u] = r.y;
        }
    }
}

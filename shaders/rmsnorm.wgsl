// RMSNorm of rows: out[r, :] = x[r, :] · (1 / sqrt(mean(x[r, :]²) + eps)) · w[:], one workgroup
// per row, reading x from row x_row0 on. IN_PLACE writes the result over x (a buffer cannot be
// bound twice for writing). Operation order as ggml: scale = 1/sqrt(mean + eps), then (x·scale)·w.
// QUANT (with a KIND_* and QBLOCK, its block size) then quantizes the normed row into xq (and
// delta) as quantize.wgsl would, in the same dispatch: quant_act.wgsl, reading `out` back.
// RESIDUAL first adds gemma3's post-normed sublayer output to x and writes x back:
// x += (o · (1 / sqrt(mean(o²) + eps))) · w_post, the same operations as rmsnorm in place on o
// then add.wgsl; o and w_post are bound at RES_AT and RES_AT + 1.
struct Params { rows: u32, d: u32, eps: f32, x_row0: u32 }

#ifdef IN_PLACE
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;
#else
#ifdef RESIDUAL
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(RES_AT) var<storage, read> o: array<f32>;
@group(0) @binding(RES_AT_1) var<storage, read> w_post: array<f32>;
#else
@group(0) @binding(0) var<storage, read> x: array<f32>;
#endif
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;
#endif
#ifdef QUANT
@group(0) @binding(4) var<storage, read_write> xq: array<f32>;
fn act_in(i: u32) -> f32 { return out[i]; }
fn act_out(i: u32, v: f32) { xq[i] = v; }
#ifdef KIND_Q8_1
@group(0) @binding(5) var<storage, read_write> delta: array<f32>;
fn act_delta(b: u32, v: f32) { delta[b] = v; }
#endif
#include "quant_act.wgsl"
#endif

#include "reduce.wgsl"

// 1 / sqrt(mean + eps) of a row whose squares this thread summed into `sum`.
fn inv_rms(tid: u32, sum: f32) -> f32 {
    let mean = reduce_sum(tid, sum) / f32(p.d);
    return 1.0 / sqrt(mean + p.eps);
}

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) {
        return; // uniform: the whole workgroup leaves
    }
    let base = (p.x_row0 + row) * p.d;
    let out_base = row * p.d;
#ifdef RESIDUAL
    var sum_o = 0.0;
    for (var i = tid; i < p.d; i += WG_SIZE) {
        let v = o[base + i];
        sum_o += v * v;
    }
    let scale_o = inv_rms(tid, sum_o);
    // Each thread sums below exactly the elements of x it writes here: no barrier needed.
    for (var i = tid; i < p.d; i += WG_SIZE) {
        let post = (o[base + i] * scale_o) * w_post[i];
        x[base + i] = x[base + i] + post;
    }
#endif
    var sum = 0.0;
    for (var i = tid; i < p.d; i += WG_SIZE) {
        let v = x[base + i];
        sum += v * v;
    }
    let scale = inv_rms(tid, sum);
    // Each thread rewrites only the elements it read itself, so IN_PLACE needs no extra barrier.
    for (var i = tid; i < p.d; i += WG_SIZE) {
#ifdef IN_PLACE
        x[base + i] = (x[base + i] * scale) * w[i];
#else
        out[out_base + i] = (x[base + i] * scale) * w[i];
#endif
    }
#ifdef QUANT
    // The row's blocks read elements other threads wrote.
    storageBarrier();
    let blocks = p.d / QBLOCK;
    for (var j = tid; j < blocks; j += WG_SIZE) {
        quantize_block(row * blocks + j);
    }
#endif
}

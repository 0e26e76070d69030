// Prefill matrix × matrix: y[t, row0 + r] = Σ_k W[r, k] · x[t, k] for the rows r < p.rows of one
// buffer of a QMatrix and the tokens t < p.n_tokens, stored by mat_out.wgsl. Each workgroup of 64 threads (8 × 8)
// computes a tile of 32 rows × 32 tokens, walking K in steps of 32: the W tile is dequantized
// once into workgroup memory (one unit per thread for quantized types), the x tile copied
// beside it, then each thread accumulates 4 rows × 4 tokens (strided by 8) in f32.
#include "dequant.wgsl"
#include "mat_out.wgsl"

@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
#ifdef MIN_CORRECTION
// f32 [n_tokens, units_per_row / UNITS_PER_BLOCK]: per block of x, what its min term lacks
// (quantize.wgsl). Only for 32-element blocks (Q4_1, Q5_1): one block per K step.
@group(0) @binding(DELTA_AT) var<storage, read> delta: array<f32>;
#ifndef ROW_PER_THREAD
var<workgroup> mins: array<f32, TM>;
var<workgroup> deltas: array<f32, TN>;
#endif
#endif

const TM: u32 = TILE;          // rows per tile
const TN: u32 = TILE;          // tokens per tile
const TK4: u32 = 8u;           // vec4s of K per step (32 elements)
const UNITS_PER_STEP: u32 = TK4 / UNIT_V4;
const UNITS_PER_BLOCK: u32 = BLOCK / (4u * UNIT_V4);

#ifdef ROW_PER_THREAD
// CPU adapters (see matvec.wgsl): one invocation computes one row for the TN tokens of its
// tile, dequantizing each unit once, with no shared memory and no barrier.
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    d_off = p.d_off;
    let r = gid.x + gid.y * nwg.x * 64u;
    if (r >= p.rows) {
        return;
    }
    let t0 = gid.z * TN;
    let nt = min(TN, p.n_tokens - t0);
    let cols4 = p.units_per_row * UNIT_V4;
    var acc: array<f32, TN>;
    for (var u = 0u; u < p.units_per_row; u++) {
        let unit = r * p.units_per_row + u;
        let wv = dequant_unit(unit / UNITS_PER_BLOCK, unit % UNITS_PER_BLOCK);
        for (var t = 0u; t < nt; t++) {
            let xb = (t0 + t) * cols4 + u * UNIT_V4;
            var s = 0.0;
            for (var i = 0u; i < UNIT_V4; i++) {
                s += dot(wv[i], x[xb + i]);
            }
#ifdef MIN_CORRECTION
            if (u % UNITS_PER_BLOCK == 0u) {
                s += block_min(unit / UNITS_PER_BLOCK)
                    * delta[(t0 + t) * (p.units_per_row / UNITS_PER_BLOCK) + u / UNITS_PER_BLOCK];
            }
#endif
            acc[t] += s;
        }
    }
    for (var t = 0u; t < nt; t++) {
        store(t0 + t, p.row0 + r, acc[t]);
    }
}
#else
var<workgroup> ws: array<vec4<f32>, TM * TK4>;   // [row][k4]
var<workgroup> xs: array<vec4<f32>, TN * TK4>;   // [token][k4]

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) lid: u32,
        @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    d_off = p.d_off;
    let tile_r = (wid.x + wid.y * nwg.x) * TM;
    if (tile_r >= p.rows) {
        return;
    }
    let tile_t = wid.z * TN;
    let cols4 = p.units_per_row * UNIT_V4;
    let tr = lid / 8u;
    let tt = lid % 8u;
    var acc: array<vec4<f32>, 4>;   // acc[i][j]: row tr + 8i, token tt + 8j
    for (var k4 = 0u; k4 < cols4; k4 += TK4) {
        let u0 = k4 / UNIT_V4;
        for (var idx = lid; idx < TM * UNITS_PER_STEP; idx += 64u) {
            let rr = idx / UNITS_PER_STEP;
            let uk = idx % UNITS_PER_STEP;
            var wv: array<vec4<f32>, UNIT_V4>;
            if (u0 + uk < p.units_per_row) {
                // Rows past the end repeat the last row; their sums are not written.
                let unit = min(tile_r + rr, p.rows - 1u) * p.units_per_row + u0 + uk;
                wv = dequant_unit(unit / UNITS_PER_BLOCK, unit % UNITS_PER_BLOCK);
            }
            for (var i = 0u; i < UNIT_V4; i++) {
                ws[rr * TK4 + uk * UNIT_V4 + i] = wv[i];
            }
        }
        for (var idx = lid; idx < TN * TK4; idx += 64u) {
            let t = tile_t + idx / TK4;
            let kk = k4 + idx % TK4;
            var v = vec4<f32>(0.0);
            if (t < p.n_tokens && kk < cols4) {
                v = x[t * cols4 + kk];
            }
            xs[idx] = v;
        }
#ifdef MIN_CORRECTION
        let blocks_per_row = p.units_per_row / UNITS_PER_BLOCK;
        let kb = k4 / TK4;
        if (lid < TM) {
            mins[lid] = block_min(min(tile_r + lid, p.rows - 1u) * blocks_per_row + kb);
        } else {
            let t = tile_t + lid - TM;
            var dl = 0.0;
            if (t < p.n_tokens) {
                dl = delta[t * blocks_per_row + kb];
            }
            deltas[lid - TM] = dl;
        }
#endif
        workgroupBarrier();
        for (var kk = 0u; kk < TK4; kk++) {
            var wr: array<vec4<f32>, 4>;
            for (var i = 0u; i < 4u; i++) {
                wr[i] = ws[(tr + 8u * i) * TK4 + kk];
            }
            for (var j = 0u; j < 4u; j++) {
                let xv = xs[(tt + 8u * j) * TK4 + kk];
                for (var i = 0u; i < 4u; i++) {
                    acc[i][j] += dot(wr[i], xv);
                }
            }
        }
#ifdef MIN_CORRECTION
        for (var i = 0u; i < 4u; i++) {
            for (var j = 0u; j < 4u; j++) {
                acc[i][j] += mins[tr + 8u * i] * deltas[tt + 8u * j];
            }
        }
#endif
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let r = tile_r + tr + 8u * i;
        for (var j = 0u; j < 4u; j++) {
            let t = tile_t + tt + 8u * j;
            if (r < p.rows && t < p.n_tokens) {
                store(t, p.row0 + r, acc[i][j]);
            }
        }
    }
}
#endif

// Decode matrix × vector: y[row0 + r] = Σ_k W[r, k] · x[k] for the rows r < p.rows of one buffer
// of a QMatrix, stored by mat_out.wgsl (plain, ADD_TO or SPLIT3). One workgroup computes ROWS
// consecutive rows: its WG_SIZE threads split K by units (see dequant.wgsl), each thread loads
// its slice of x once and reuses it for all ROWS rows, then a shared-memory tree reduction sums
// the partial dots. f32 throughout.
// GATED: the rows alternate gate and up (the model's interleaved ffn_gate/ffn_up); each pair
// becomes one output act(gate) · up (act_fn.wgsl) at index row / 2.
// QUANT_IN (with a KIND_* and QBLOCK): x is f32 and each workgroup first quantizes all of it
// into workgroup memory as quantize.wgsl would (quant_act.wgsl), then multiplies that: the
// activation quantization of a decode step without a dispatch of its own. XS_V4 = cols / 4.
// SUBGROUPS (devices with the `subgroups` feature): the partial dots are summed with
// subgroupAdd, then across subgroups in workgroup memory, instead of a tree of barriers; a
// different summation order from the f32 path's, as any GPU's would be. Native only: Naga takes
// the built-ins without the `enable subgroups;` directive (which it refuses), and wgpu's WebGPU
// backend does not offer the feature.
// DOT4 (devices with `packed_4x8_integer_dot_product`; Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 weights):
// integer dot products against q8 activations instead of f32 ones (dot4.wgsl).
#include "dequant.wgsl"
#include "mat_out.wgsl"

@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
#ifdef DOT4
#include "dot4.wgsl"
#else
#ifdef QUANT_IN
var<workgroup> xs: array<vec4<f32>, XS_V4>;
fn act_in(i: u32) -> f32 { return x[i / 4u][i % 4u]; }
fn act_out(i: u32, v: f32) { xs[i / 4u][i % 4u] = v; }
#ifdef KIND_Q8_1
// Per block of x, what its min term lacks (see quant_act.wgsl).
var<workgroup> ds: array<f32, XS_V4 / 8u>;
fn act_delta(b: u32, v: f32) { ds[b] = v; }
fn delta_at(b: u32) -> f32 { return ds[b]; }
#endif
#include "quant_act.wgsl"
fn x_at(i: u32) -> vec4<f32> { return xs[i]; }

// Every invocation takes part, before any leaves: the barrier needs uniform control flow.
fn load_x(lid: u32) {
    let blocks = p.units_per_row * UNIT_V4 * 4u / QBLOCK;
    for (var b = lid; b < blocks; b += WG_SIZE) {
        quantize_block(b);
    }
    workgroupBarrier();
}
#else
fn x_at(i: u32) -> vec4<f32> { return x[i]; }
fn load_x(lid: u32) {}
#ifdef MIN_CORRECTION
// f32 [units_per_row / UNITS_PER_BLOCK]: per block of x, what its min term lacks (quantize.wgsl).
@group(0) @binding(DELTA_AT) var<storage, read> delta: array<f32>;
fn delta_at(b: u32) -> f32 { return delta[b]; }
#endif
#endif

const UNITS_PER_BLOCK: u32 = BLOCK / (4u * UNIT_V4);

// Row r's weights of unit u times that unit's slice of x.
fn unit_dot(r: u32, u: u32, xv: array<vec4<f32>, UNIT_V4>) -> f32 {
    let unit = r * p.units_per_row + u;
    let wv = dequant_unit(unit / UNITS_PER_BLOCK, unit % UNITS_PER_BLOCK);
    var s = 0.0;
    for (var i = 0u; i < UNIT_V4; i++) {
        s += dot(wv[i], xv[i]);
    }
#ifdef MIN_CORRECTION
    if (u % UNITS_PER_BLOCK == 0u) {
        s += block_min(unit / UNITS_PER_BLOCK) * delta_at(u / UNITS_PER_BLOCK);
    }
#endif
    return s;
}

fn x_unit(u: u32) -> array<vec4<f32>, UNIT_V4> {
    var xv: array<vec4<f32>, UNIT_V4>;
    for (var i = 0u; i < UNIT_V4; i++) {
        xv[i] = x_at(u * UNIT_V4 + i);
    }
    return xv;
}
#endif
#ifdef GATED
#include "act_fn.wgsl"
#endif

#ifdef GATED
const RPT: u32 = 2u;
#else
const RPT: u32 = 1u;
#endif

#ifdef ROW_PER_THREAD
// CPU adapters (llvmpipe, SwiftShader) run a workgroup's invocations as SIMD lanes of one CPU
// thread, and every barrier costs a context switch: there one invocation computes a whole row
// (GATED: a gate and up pair), with no shared memory and no barrier.
@compute @workgroup_size(WG_SIZE)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(local_invocation_index) lid: u32,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    d_off = p.d_off;
    load_x(lid);
    let r = (gid.x + gid.y * nwg.x * WG_SIZE) * RPT;
    if (r >= p.rows) {
        return;
    }
    var acc: array<f32, RPT>;
    for (var u = 0u; u < p.units_per_row; u++) {
        let xv = x_unit(u);
        for (var k = 0u; k < RPT; k++) {
            acc[k] += unit_dot(r + k, u, xv);
        }
    }
#ifdef GATED
    store(0u, (p.row0 + r) / 2u, act(acc[0]) * acc[1]);
#else
    store(0u, p.row0 + r, acc[0]);
#endif
}
#else
const ROWS: u32 = MATVEC_ROWS;
var<workgroup> partial: array<vec4<f32>, WG_SIZE>;

#ifdef SUBGROUPS
@compute @workgroup_size(WG_SIZE)
fn main(@builtin(local_invocation_index) lid: u32,
        @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(subgroup_invocation_id) sg_lid: u32,
        @builtin(subgroup_size) sg_size: u32) {
#else
@compute @workgroup_size(WG_SIZE)
fn main(@builtin(local_invocation_index) lid: u32,
        @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
#endif
    d_off = p.d_off;
    let r0 = (wid.x + wid.y * nwg.x) * ROWS;
    if (r0 >= p.rows) {
        return;
    }
    load_x(lid);
    var acc = vec4<f32>(0.0);
    for (var u = lid; u < p.units_per_row; u += WG_SIZE) {
        let xv = x_unit(u);
        for (var rr = 0u; rr < ROWS; rr++) {
            // Rows past the end recompute the last row; their sums are not written.
            acc[rr] += unit_dot(min(r0 + rr, p.rows - 1u), u, xv);
        }
    }
#ifdef SUBGROUPS
    let sg_sum = subgroupAdd(acc);
    if (sg_lid == 0u) {
        partial[lid / sg_size] = sg_sum;
    }
    workgroupBarrier();
    if (lid == 0u) {
        for (var i = 1u; i < (WG_SIZE + sg_size - 1u) / sg_size; i++) {
            partial[0] += partial[i];
        }
    }
    workgroupBarrier();
#else
    partial[lid] = acc;
    workgroupBarrier();
    for (var stride = WG_SIZE / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
#endif
#ifdef GATED
    if (lid < ROWS / 2u && r0 + 2u * lid < p.rows) {
        let g = partial[0][2u * lid];
        let u = partial[0][2u * lid + 1u];
        store(0u, (p.row0 + r0) / 2u + lid, act(g) * u);
    }
#else
    if (lid < ROWS && r0 + lid < p.rows) {
        store(0u, p.row0 + r0 + lid, partial[0][lid]);
    }
#endif
}
#endif

// Decode matrix × vector: y[row0 + r] = Σ_k W[r, k] · x[k] for the rows r < p.rows of one buffer
// of a QMatrix. One workgroup computes ROWS consecutive rows: its WG_SIZE threads split K by
// units (see dequant.wgsl), each thread loads its slice of x once and reuses it for all ROWS
// rows, then a shared-memory tree reduction sums the partial dots. f32 throughout.
#include "dequant.wgsl"

struct Params {
    rows: u32,            // rows in this buffer
    units_per_row: u32,   // cols / (4 * UNIT_V4)
    row0: u32,            // first row of this buffer in the whole matrix (and in y)
    d_off: u32,           // word offset of the separated f16 d array
}

@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;
#ifdef MIN_CORRECTION
// f32 [units_per_row / UNITS_PER_BLOCK]: per block of x, what its min term lacks (quantize.wgsl).
@group(0) @binding(4) var<storage, read> delta: array<f32>;
#endif

const UNITS_PER_BLOCK: u32 = BLOCK / (4u * UNIT_V4);

#ifdef ROW_PER_THREAD
// CPU adapters (llvmpipe, SwiftShader) run a workgroup's invocations as SIMD lanes of one CPU
// thread, and every barrier costs a context switch: there one invocation computes a whole row,
// with no shared memory and no barrier, and WG_SIZE rows make a workgroup.
@compute @workgroup_size(WG_SIZE)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    d_off = p.d_off;
    let r = gid.x + gid.y * nwg.x * WG_SIZE;
    if (r >= p.rows) {
        return;
    }
    var acc = 0.0;
    for (var u = 0u; u < p.units_per_row; u++) {
        let unit = r * p.units_per_row + u;
        let wv = dequant_unit(unit / UNITS_PER_BLOCK, unit % UNITS_PER_BLOCK);
        var s = 0.0;
        for (var i = 0u; i < UNIT_V4; i++) {
            s += dot(wv[i], x[u * UNIT_V4 + i]);
        }
#ifdef MIN_CORRECTION
        if (u % UNITS_PER_BLOCK == 0u) {
            s += block_min(unit / UNITS_PER_BLOCK) * delta[u / UNITS_PER_BLOCK];
        }
#endif
        acc += s;
    }
    y[p.row0 + r] = acc;
}
#else
const ROWS: u32 = 4u;
var<workgroup> partial: array<vec4<f32>, WG_SIZE>;

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(local_invocation_index) lid: u32,
        @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    d_off = p.d_off;
    let r0 = (wid.x + wid.y * nwg.x) * ROWS;
    if (r0 >= p.rows) {
        return;
    }
    var acc = vec4<f32>(0.0);
    for (var u = lid; u < p.units_per_row; u += WG_SIZE) {
        var xv: array<vec4<f32>, UNIT_V4>;
        for (var i = 0u; i < UNIT_V4; i++) {
            xv[i] = x[u * UNIT_V4 + i];
        }
        for (var rr = 0u; rr < ROWS; rr++) {
            // Rows past the end recompute the last row; their sums are not written.
            let unit = min(r0 + rr, p.rows - 1u) * p.units_per_row + u;
            let wv = dequant_unit(unit / UNITS_PER_BLOCK, unit % UNITS_PER_BLOCK);
            var s = 0.0;
            for (var i = 0u; i < UNIT_V4; i++) {
                s += dot(wv[i], xv[i]);
            }
#ifdef MIN_CORRECTION
            if (u % UNITS_PER_BLOCK == 0u) {
                s += block_min(unit / UNITS_PER_BLOCK) * delta[u / UNITS_PER_BLOCK];
            }
#endif
            acc[rr] += s;
        }
    }
    partial[lid] = acc;
    workgroupBarrier();
    for (var stride = WG_SIZE / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid < ROWS && r0 + lid < p.rows) {
        y[p.row0 + r0 + lid] = partial[0][lid];
    }
}
#endif

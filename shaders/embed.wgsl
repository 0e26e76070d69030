// Embedding lookup: out[t, :] = scale · W[ids[t], :] for the tokens whose id falls in the rows
// of this buffer of a QMatrix ([row0, row0 + rows)); the other buffers' dispatches write the
// rest. One thread per (token, unit); ids beyond the matrix write nothing.
#include "dequant.wgsl"

struct Params {
    rows: u32,
    units_per_row: u32,
    row0: u32,
    d_off: u32,
    n: u32,          // tokens
    scale: f32,
}

@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(3) var<uniform> p: Params;

const UNITS_PER_BLOCK: u32 = BLOCK / (4u * UNIT_V4);

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    d_off = p.d_off;
    let g = gid.x + gid.y * nwg.x * WG_SIZE;
    let t = g / p.units_per_row;
    let u = g % p.units_per_row;
    if (t >= p.n) {
        return;
    }
    let id = ids[t];
    if (id < p.row0 || id - p.row0 >= p.rows) {
        return;
    }
    let unit = (id - p.row0) * p.units_per_row + u;
    let wv = dequant_unit(unit / UNITS_PER_BLOCK, unit % UNITS_PER_BLOCK);
    let scale = p.scale;
    for (var i = 0u; i < UNIT_V4; i++) {
        out[(t * p.units_per_row + u) * UNIT_V4 + i] = scale * wv[i];
    }
}

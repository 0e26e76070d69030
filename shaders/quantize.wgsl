// Activation quantization of x into xq (and delta for Q8_1), one thread per block: see
// quant_act.wgsl for the kinds and ggml's rules. Used where no other kernel quantizes in passing
// (rmsnorm.wgsl with QUANT does it for normed inputs).

struct Params {
    n_blocks: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> xq: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;
#ifdef KIND_Q8_1
@group(0) @binding(3) var<storage, read_write> delta: array<f32>;
fn act_delta(b: u32, v: f32) { delta[b] = v; }
#endif

fn act_in(i: u32) -> f32 { return x[i]; }
fn act_out(i: u32, v: f32) { xq[i] = v; }

#include "quant_act.wgsl"

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = gid.x + gid.y * nwg.x * 64u;
    if (b < p.n_blocks) {
        quantize_block(b);
    }
}

// Gated activation of the feed-forward block (act_fn.wgsl has the activations):
// - in place on gate: gate[i] = act(gate[i]) · up[i] for i < n (gate and up separate matrices);
// - INTERLEAVED: out[i] = act(gu[2i]) · gu[2i + 1], the output of one matrix whose rows
//   alternate gate and up (the prefill; matvec.wgsl's GATED does it in passing when decoding).
struct Params { n: u32 }

#ifdef INTERLEAVED
@group(0) @binding(0) var<storage, read> gu: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
#else
@group(0) @binding(0) var<storage, read_write> gate: array<f32>;
@group(0) @binding(1) var<storage, read> up: array<f32>;
#endif
@group(0) @binding(2) var<uniform> p: Params;

#include "act_fn.wgsl"

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG_SIZE;
    if (i < p.n) {
#ifdef INTERLEAVED
        out[i] = act(gu[2u * i]) * gu[2u * i + 1u];
#else
        gate[i] = act(gate[i]) * up[i];
#endif
    }
}

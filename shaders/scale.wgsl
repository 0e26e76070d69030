// x[i] *= s for i < n: llama.cpp's ggml_scale of Q after RoPE (gemma3, phi3), which rounds
// differently from scaling q·k when s is not a power of two (Phi-3.5's head size 96).
struct Params { n: u32, s: u32 }

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<uniform> p: Params;

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG_SIZE;
    if (i < p.n) {
        x[i] = x[i] * bitcast<f32>(p.s);
    }
}

// x[i] += y[i % m] for i < n: a residual add (m = n) or a bias added to every token (m = width).
struct Params { n: u32, m: u32 }

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    // 2-D grid so n may exceed 65535 workgroups × WG_SIZE.
    let i = gid.x + gid.y * nwg.x * WG_SIZE;
    if (i < p.n) {
        x[i] = x[i] + y[i % p.m];
    }
}

// out[0] = the index of the largest of x[0..n], the first one on ties (llama.cpp's greedy
// sampler keeps the first maximum). NaNs are never chosen; all-NaN gives 0. One workgroup:
// each thread scans a strided slice in increasing order, then a tree reduction that prefers
// the larger value, then the smaller index.
struct Params { n: u32 }

const NONE: u32 = 0xffffffffu;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
@group(0) @binding(2) var<uniform> p: Params;

var<workgroup> best_v: array<f32, WG_SIZE>;
var<workgroup> best_i: array<u32, WG_SIZE>;

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(local_invocation_index) tid: u32) {
    var bv = 0.0;
    var bi = NONE;
    for (var i = tid; i < p.n; i += WG_SIZE) {
        let v = x[i];
        // Strictly greater: a later equal value never replaces an earlier one. v == v is false
        // only for NaN.
        if (v == v && (bi == NONE || v > bv)) {
            bv = v;
            bi = i;
        }
    }
    best_v[tid] = bv;
    best_i[tid] = bi;
    workgroupBarrier();
    for (var s = WG_SIZE / 2u; s > 0u; s >>= 1u) {
        if (tid < s) {
            let ov = best_v[tid + s];
            let oi = best_i[tid + s];
            let mv = best_v[tid];
            let mi = best_i[tid];
            if (oi != NONE && (mi == NONE || ov > mv || (ov == mv && oi < mi))) {
                best_v[tid] = ov;
                best_i[tid] = oi;
            }
        }
        workgroupBarrier();
    }
    if (tid == 0u) {
        out[0] = select(best_i[0], 0u, best_i[0] == NONE);
    }
}

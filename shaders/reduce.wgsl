// A workgroup's sum as a tree over WG_SIZE partial sums, each thread's value first. The rounding
// of an RMSNorm depends on this order (rmsnorm.wgsl, and kv_store.wgsl's per-head norms match
// it bit for bit), so it has one home.
var<workgroup> partial: array<f32, WG_SIZE>;

fn reduce_sum(tid: u32, v: f32) -> f32 {
    partial[tid] = v;
    workgroupBarrier();
    for (var s = WG_SIZE / 2u; s > 0u; s >>= 1u) {
        if (tid < s) {
            partial[tid] += partial[tid + s];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier(); // before partial is used again
    return total;
}

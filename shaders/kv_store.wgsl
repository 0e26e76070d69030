// Stores k, v: f32 [n_tokens, row] (row = n_kv · head_dim) into the f16 KV cache of one layer:
// cells of row/2 u32 words, two f16 per word (low half = even element). Position pos0 + t goes
// to cell (pos0 + t) % cells. One thread per word, converting both K and V.
//
// The f32 → f16 conversion is written out with integer operations, rounding to nearest even
// like ggml's (F16C / the `half` crate): pack2x16float may round either way by the WGSL spec.
struct Params { row_words: u32, n_tokens: u32, pos0: u32, cells: u32 }

@group(0) @binding(0) var<storage, read> k_in: array<u32>; // f32 bits
@group(0) @binding(1) var<storage, read> v_in: array<u32>;
@group(0) @binding(2) var<storage, read_write> k_cache: array<u32>;
@group(0) @binding(3) var<storage, read_write> v_cache: array<u32>;
@group(0) @binding(4) var<uniform> p: Params;

fn f16_bits(f: u32) -> u32 {
    let sign = (f >> 16u) & 0x8000u;
    let a = f & 0x7fffffffu;
    if (a >= 0x7f800000u) { // inf stays inf, NaN stays a (quiet) NaN
        return sign | 0x7c00u | select(0u, 0x200u, a > 0x7f800000u);
    }
    if (a >= 0x477ff000u) { // ≥ 65520: rounds past the largest f16 (65504)
        return sign | 0x7c00u;
    }
    if (a < 0x38800000u) { // below 2^-14: an f16 subnormal, in units of 2^-24
        if (a <= 0x33000000u) { // ≤ 2^-25: zero (2^-25 itself ties to the even 0)
            return sign;
        }
        let m = (a & 0x7fffffu) | 0x800000u;
        let shift = 126u - (a >> 23u); // 14..24
        var h = m >> shift;
        let rest = m & ((1u << shift) - 1u);
        let tie = 1u << (shift - 1u);
        if (rest > tie || (rest == tie && (h & 1u) == 1u)) {
            h += 1u;
        }
        return sign | h;
    }
    var h = (((a >> 23u) - 112u) << 10u) | ((a >> 13u) & 0x3ffu);
    let rest = a & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u) == 1u)) {
        h += 1u; // a carry into the exponent is still the right value
    }
    return sign | h;
}

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG_SIZE;
    if (idx >= p.n_tokens * p.row_words) {
        return;
    }
    let t = idx / p.row_words;
    let w = idx % p.row_words;
    let dst = ((p.pos0 + t) % p.cells) * p.row_words + w;
    k_cache[dst] = f16_bits(k_in[2u * idx]) | (f16_bits(k_in[2u * idx + 1u]) << 16u);
    v_cache[dst] = f16_bits(v_in[2u * idx]) | (f16_bits(v_in[2u * idx + 1u]) << 16u);
}

// f32 → f16 rounding to nearest even without shader-f16, written out with integer operations
// exactly as x86 F16C (`_cvtss_sh`, ggml's conversion) and the `half` crate do it: WGSL leaves
// pack2x16float's rounding to the implementation, so it is not used where results must match
// ggml bit for bit.

// The f16 bits of the f32 with bits `f`.
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

// v rounded to the nearest f16, as an f32 (unpacking an f16 is exact).
fn round_f16(v: f32) -> f32 {
    return unpack2x16float(f16_bits(bitcast<u32>(v))).x;
}

fn round_f16x2(v: vec2<f32>) -> vec2<f32> {
    return unpack2x16float(f16_bits(bitcast<u32>(v.x)) | (f16_bits(bitcast<u32>(v.y)) << 16u));
}

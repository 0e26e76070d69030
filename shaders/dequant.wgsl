// The weight matrix of a QMatrix and the one dequantization function of each type, included by
// matvec.wgsl, matmul.wgsl and embed.wgsl. The type is chosen by one define: TYPE_F32, TYPE_F16,
// TYPE_BF16, TYPE_Q4_0, … (see crate/src/gpu/matmul.rs).
//
// Layout (repacked once at upload, see matmul.rs): a buffer holds whole rows of blocks. Each
// block keeps its ggml bytes in ggml order ("body"), except that types whose block size is not a
// multiple of 4 bytes (Q4_0, Q5_0, Q8_0, IQ4_NL: f16 d first; Q3_K, Q6_K: f16 d last) have that
// d moved out into an array of f16 pairs after all the bodies, at word `d_off`. So every body
// starts on a word, and the buffer holds exactly the tensor's bytes.
//
// Each type defines:
//   BLOCK       elements per block (4 for F32/F16/BF16: a "block" of 4 plain elements);
//   BODY_WORDS  u32 words per block body;
//   UNIT_V4     vec4s per unit: a unit is 4 * UNIT_V4 consecutive elements of one block that
//               share their scales (16 for quantized types, 4 for plain ones);
//   dequant_unit(b, u) -> array<vec4<f32>, UNIT_V4>: elements [4*UNIT_V4*u, 4*UNIT_V4*(u+1)) of
//               block b (blocks counted from the start of the buffer, row-major).
// Q4_1 and Q5_1 also define block_min(b), their `m`, for MIN_CORRECTION (see quantize.wgsl).
// Arithmetic follows crate/src/quant/dequant.rs: every product of an f16 scale, a sub-block
// scale and a quant is exact in f32, so only a final `± min` rounds and results match the CPU
// bit for bit.

@group(0) @binding(0) var<storage, read> w: array<u32>;

// Word index of the separated f16 d array; set by the kernel from its params before any
// dequant_unit call.
var<private> d_off: u32;

// Words k..k+3 of the buffer. With VEC4_LOADS (set only for the types whose every call has k a
// multiple of 4: Q4_0, Q8_0, IQ4_NL, Q4_K, Q5_K, Q6_K, whose body parts are whole vec4s) the
// kernel binds the same buffer a second time as vec4s, and this is one 16-byte load.
#ifdef VEC4_LOADS
@group(0) @binding(W4_AT) var<storage, read> w4: array<vec4<u32>>;
fn words4(k: u32) -> vec4<u32> {
    return w4[k / 4u];
}
#else
fn words4(k: u32) -> vec4<u32> {
    return vec4<u32>(w[k], w[k + 1u], w[k + 2u], w[k + 3u]);
}
#endif

// The separated f16 scale of block b.
fn block_d(b: u32) -> f32 {
    return unpack2x16float(w[d_off + b / 2u])[b % 2u];
}

// The four bytes of `word`, each shifted right by `sh` and masked: 4-, 2- or 1-bit fields
// packed ggml-style, one weight per byte lane.
fn lanes(word: u32, sh: u32, mask: u32) -> vec4<u32> {
    return (vec4<u32>(word) >> (vec4<u32>(0u, 8u, 16u, 24u) + vec4<u32>(sh))) & vec4<u32>(mask);
}

// The four bytes of `word` as signed 8-bit values.
fn lanes_i8(word: u32) -> vec4<f32> {
    return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(word) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}

// Byte k of the block body that starts at word `base`.
fn body_byte(base: u32, k: u32) -> u32 {
    return (w[base + k / 4u] >> (8u * (k % 4u))) & 0xFFu;
}

// The 6-bit scale (x) and min (y) of sub-block j of Q4_K/Q5_K, whose 12 packed scale bytes
// start at body byte 4: ggml `get_scale_min_k4`.
fn scale_min_k4(base: u32, j: u32) -> vec2<u32> {
    if (j < 4u) {
        return vec2<u32>(body_byte(base, 4u + j) & 63u, body_byte(base, 8u + j) & 63u);
    }
    let a = body_byte(base, 8u + j);
    return vec2<u32>((a & 0xFu) | ((body_byte(base, j) >> 6u) << 4u),
                     (a >> 4u) | ((body_byte(base, 4u + j) >> 6u) << 4u));
}

// ggml `kvalues_iq4nl`, the 16 levels of IQ4_NL and IQ4_XS.
const KVALUES = array<f32, 16>(-127.0, -104.0, -83.0, -65.0, -49.0, -35.0, -22.0, -10.0,
                               1.0, 13.0, 25.0, 38.0, 53.0, 69.0, 89.0, 113.0);

fn kvalues(q: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(KVALUES[q.x], KVALUES[q.y], KVALUES[q.z], KVALUES[q.w]);
}

#ifdef TYPE_F32
const BLOCK: u32 = 4u;
const BODY_WORDS: u32 = 4u;
const UNIT_V4: u32 = 1u;
fn dequant_unit(b: u32, u: u32) -> array<vec4<f32>, UNIT_V4> {
    let i = 4u * b;
    return array<vec4<f32>, UNIT_V4>(bitcast<vec4<f32>>(vec4<u32>(w[i], w[i + 1u], w[i + 2u], w[i + 3u])));
}
#endif

#ifdef TYPE_F16
const BLOCK: u32 = 4u;
const BODY_WORDS: u32 = 2u;
const UNIT_V4: u32 = 1u;
fn dequant_unit(b: u32, u: u32) -> array<vec4<f32>, UNIT_V4> {
    return array<vec4<f32>, UNIT_V4>(vec4<f32>(unpack2x16float(w[2u * b]), unpack2x16float(w[2u * b + 1u])));
}
#endif

#ifdef TYPE_BF16
// The 16 bits are the top half of an f32.
const BLOCK: u32 = 4u;
const BODY_WORDS: u32 = 2u;
const UNIT_V4: u32 = 1u;
fn dequant_unit(b: u32, u: u32) -> array<vec4<f32>, UNIT_V4> {
    let a = w[2u * b];
    let c = w[2u * b + 1u];
    return array<vec4<f32>, UNIT_V4>(bitcast<vec4<f32>>(vec4<u32>(a << 16u, a & 0xFFFF0000u, c << 16u, c & 0xFFFF0000u)));
}
#endif

#ifdef TYPE_Q4_0
// Body: qs[16] (d separated). Unit u: the low (u = 0) or high (u = 1) nibbles. w = d * (q - 8).
const BLOCK: u32 = 32u;
const BODY_WORDS: u32 = 4u;
const UNIT_V4: u32 = 4u;
fn dequant_unit(b: u32, u: u32) -> array<vec4<f32>, UNIT_V4> {
    let d = block_d(b);
    let q = words4(4u * b);
    var r: array<vec4<f32>, UNIT_V4>;
    for (var i = 0u; i < 4u; i++) {
        r[i] = d * (vec4<f32>(lanes(q[i], 4u * u, 0xFu)) - 8.0);
    }
    return r;
}
#endif

#ifdef TYPE_Q4_1
// Body: d, m, qs[16]. w = d * q + m.
const BLOCK: u32 = 32u;
const BODY_WORDS: u32 = 5u;
const UNIT_V4: u32 = 4u;
fn dequant_unit(b: u32, u: u32) -> array<vec4<f32>, UNIT_V4> {
    let base = 5u * b;
    let dm = unpack2x16float(w[base]);
    var r: array<vec4<f32>, UNIT_V4>;
    for (var i = 0u; i < 4u; i++) {
        r[i] = dm.x * vec4<f32>(lanes(w[base + 1u + i], 4u * u, 0xFu)) + dm.y;
    }
    return r;
}
fn block_min(b: u32) -> f32 {
    return unpack2x16float(w[5u * b]).y;
}
#endif

#ifdef TYPE_Q5_0
// Body: qh (u32), qs[16] (d separated). Bit e of qh is bit 4 of weight e. w = d * (q - 16).
const BLOCK: u32 = 32u;
const BODY_WORDS: u32 = 5u;
const UNIT_V4: u32 = 4u;
fn dequant_unit(b: u32, u: u32) -> array<vec4<f32>, UNIT_V4> {
    let base = 5u * b;
    let d = block_d(b);
    let qh = w[base];
    var r: array<vec4<f32>, UNIT_V4>;
    for (var i = 0u; i < 4u; i++) {
        let hi = (vec4<u32>(qh >> (16u * u + 4u * i)) >> vec4<u32>(0u, 1u, 2u, 3u)) & vec4<u32>(1u);
        let q = lanes(w[base + 1u + i], 4u * u, 0xFu) | (hi << vec4<u32>(4u));
        r[i] = d * (vec4<f32>(q) - 16.0);
    }
    return r;
}
#endif

#ifdef TYPE_Q5_1
// Body: d, m, qh (u32), qs[16]. w = d * q + m.
const BLOCK: u32 = 32u;
const BODY_WORDS: u32 = 6u;
const UNIT_V4: u32 = 4u;
fn dequant_unit(b: u32, u: u32) -> array<vec4<f32>, UNIT_V4> {
    let base = 6u * b;
    let dm = unpack2x16float(w[base]);
    let qh = w[base + 1u];
    var r: array<vec4<f32>, UNIT_V4>;
    for (var i = 0u; i < 4u; i++) {
        let hi = (vec4<u32>(qh >> (16u * u + 4u * i)) >> vec4<u32>(0u, 1u, 2u, 3u)) & vec4<u32>(1u);
        let q = lanes(w[base + 2u + i], 4u * u, 0xFu) | (hi << vec4<u32>(4u));
        r[i] = dm.x * vec4<f32>(q) + dm.y;
    }
    return r;
}
fn block_min(b: u32) -> f32 {
    return unpack2x16float(w[6u * b]).y;
}
#endif

#ifdef TYPE_Q8_0
// Body: qs[32] signed (d separated). w = q * d.
const BLOCK: u32 = 32u;
const BODY_WORDS: u32 = 8u;
const UNIT_V4: u32 = 4u;
fn dequant_unit(b: u32, u: u32) -> array<vec4<f32>, UNIT_V4> {
    let q = words4(8u * b + 4u * u);
    let d = block_d(b);
    var r: array<vec4<f32>, UNIT_V4>;
    for (var i = 0u; i < 4u; i++) {
        r[i] = lanes_i8(q[i]) * d;
    }
    return r;
}
#endif

#ifdef TYPE_IQ4_NL
// Body: qs[16] (d separated), nibbles as Q4_0 indexing KVALUES. w = d * kv[q].
const BLOCK: u32 = 32u;
const BODY_WORDS: u32 = 4u;
const UNIT_V4: u32 = 4u;
fn dequant_unit(b: u32, u: u32) -> array<vec4<f32>, UNIT_V4> {
    let d = block_d(b);
    let q = words4(4u * b);
    var r: array<vec4<f32>, UNIT_V4>;
    for (var i = 0u; i < 4u; i++) {
        r[i] = d * kvalues(lanes(q[i], 4u * u, 0xFu));
    }
    return r;
}
#endif

#ifdef TYPE_Q2_K
// Body: scales[16] (low nibble scale, high nibble min), qs[64], d, dmin. 16 units = the 16
// sub-blocks. w = (d * sc) * q - (dmin * m).
const BLOCK: u32 = 256u;
const BODY_WORDS: u32 = 21u;
const UNIT_V4: u32 = 4u;
fn dequant_unit(b: u32, u: u32) -> array<vec4<f32>, UNIT_V4> {
    let base = 21u * b;
    let dm = unpack2x16float(w[base + 20u]);
    let sc = body_byte(base, u);
    let dl = dm.x * f32(sc & 0xFu);
    let ml = dm.y * f32(sc >> 4u);
    // Each 128-weight half owns 32 bytes of qs; weight 32 * s + l of a half is bits 2s of byte l.
    let qw = base + 4u + 8u * (u / 8u) + 4u * (u % 2u);
    let sh = 2u * ((u % 8u) / 2u);
    var r: array<vec4<f32>, UNIT_V4>;
    for (var i = 0u; i < 4u; i++) {
        r[i] = dl * vec4<f32>(lanes(w[qw + i], sh, 3u)) - ml;
    }
    return r;
}
#endif

#ifdef TYPE_Q3_K
// Body: hmask[32], qs[64], scales[12] (d separated). 16 units = the 16 sub-blocks; 6-bit scales
// biased by 32 (low nibbles in scales[0..8], high 2 bits in scales[8..12]); q = low2 - 4 when
// the hmask bit is clear. w = (d * (sc - 32)) * q.
const BLOCK: u32 = 256u;
const BODY_WORDS: u32 = 27u;
const UNIT_V4: u32 = 4u;
fn dequant_unit(b: u32, u: u32) -> array<vec4<f32>, UNIT_V4> {
    let base = 27u * b;
    let lo = (body_byte(base, 96u + u % 8u) >> (4u * (u / 8u))) & 0xFu;
    let hi = (body_byte(base, 104u + u % 4u) >> (2u * (u / 4u))) & 3u;
    let dl = block_d(b) * f32(i32(lo | (hi << 4u)) - 32);
    let qw = base + 8u + 8u * (u / 8u) + 4u * (u % 2u);
    let sh = 2u * ((u % 8u) / 2u);
    let hw = base + 4u * (u % 2u);
    var r: array<vec4<f32>, UNIT_V4>;
    for (var i = 0u; i < 4u; i++) {
        let low = vec4<i32>(lanes(w[qw + i], sh, 3u));
        let hset = lanes(w[hw + i], u / 2u, 1u) != vec4<u32>(0u);
        r[i] = dl * vec4<f32>(low - select(vec4<i32>(4), vec4<i32>(0), hset));
    }
    return r;
}
#endif

#ifdef TYPE_Q4_K
// Body: d, dmin, scales[12], qs[128]. 8 sub-blocks of 32 (2 units each) with 6-bit scale and
// min; each 64 weights use 32 bytes of qs, low nibbles first. w = (d * sc) * q - (dmin * m).
const BLOCK: u32 = 256u;
const BODY_WORDS: u32 = 36u;
const UNIT_V4: u32 = 4u;
fn dequant_unit(b: u32, u: u32) -> array<vec4<f32>, UNIT_V4> {
    let base = 36u * b;
    let dm = unpack2x16float(w[base]);
    let sm = scale_min_k4(base, u / 2u);
    let dl = dm.x * f32(sm.x);
    let ml = dm.y * f32(sm.y);
    let q = words4(base + 4u + 8u * (u / 4u) + 4u * (u % 2u));
    let sh = 4u * ((u / 2u) % 2u);
    var r: array<vec4<f32>, UNIT_V4>;
    for (var i = 0u; i < 4u; i++) {
        r[i] = dl * vec4<f32>(lanes(q[i], sh, 0xFu)) - ml;
    }
    return r;
}
#endif

#ifdef TYPE_Q5_K
// Body: d, dmin, scales[12], qh[32], qs[128]: Q4_K plus bit j of qh[l] as bit 4 of weight
// 32 * j + l.
const BLOCK: u32 = 256u;
const BODY_WORDS: u32 = 44u;
const UNIT_V4: u32 = 4u;
fn dequant_unit(b: u32, u: u32) -> array<vec4<f32>, UNIT_V4> {
    let base = 44u * b;
    let dm = unpack2x16float(w[base]);
    let sm = scale_min_k4(base, u / 2u);
    let dl = dm.x * f32(sm.x);
    let ml = dm.y * f32(sm.y);
    let qs = words4(base + 12u + 8u * (u / 4u) + 4u * (u % 2u));
    let sh = 4u * ((u / 2u) % 2u);
    let qh = words4(base + 4u + 4u * (u % 2u));
    var r: array<vec4<f32>, UNIT_V4>;
    for (var i = 0u; i < 4u; i++) {
        let q = lanes(qs[i], sh, 0xFu) | (lanes(qh[i], u / 2u, 1u) << vec4<u32>(4u));
        r[i] = dl * vec4<f32>(q) - ml;
    }
    return r;
}
#endif

#ifdef TYPE_Q6_K
// Body: ql[128], qh[64], scales[16] signed (d, last in ggml, separated). 16 units = the 16
// sub-blocks. Per 128-weight half: 64 bytes of ql (low nibbles first), 32 bytes of qh (2-bit
// planes). w = (d * sc) * (q - 32).
const BLOCK: u32 = 256u;
const BODY_WORDS: u32 = 52u;
const UNIT_V4: u32 = 4u;
fn dequant_unit(b: u32, u: u32) -> array<vec4<f32>, UNIT_V4> {
    let base = 52u * b;
    let sc = bitcast<i32>(w[base + 48u + u / 4u] << (24u - 8u * (u % 4u))) >> 24u;
    let dl = block_d(b) * f32(sc);
    let h = u / 8u;
    let ql = words4(base + 16u * h + 4u * (u % 4u));
    let lsh = 4u * ((u % 8u) / 4u);
    let qh = words4(base + 32u + 8u * h + 4u * (u % 2u));
    let hsh = 2u * ((u % 8u) / 2u);
    var r: array<vec4<f32>, UNIT_V4>;
    for (var i = 0u; i < 4u; i++) {
        let q = lanes(ql[i], lsh, 0xFu) | (lanes(qh[i], hsh, 3u) << vec4<u32>(4u));
        r[i] = dl * vec4<f32>(vec4<i32>(q) - vec4<i32>(32));
    }
    return r;
}
#endif

#ifdef TYPE_IQ4_XS
// Body: d | scales_h << 16, scales_l[4], qs[128]. 8 sub-blocks of 32 (2 units each) with 6-bit
// scales biased by 32; each sub-block uses 16 bytes of qs, low nibbles first, indexing KVALUES.
// w = (d * (sc - 32)) * kv[q].
const BLOCK: u32 = 256u;
const BODY_WORDS: u32 = 34u;
const UNIT_V4: u32 = 4u;
fn dequant_unit(b: u32, u: u32) -> array<vec4<f32>, UNIT_V4> {
    let base = 34u * b;
    let w0 = w[base];
    let s = u / 2u;
    let lo = (w[base + 1u] >> (8u * (s / 2u) + 4u * (s % 2u))) & 0xFu;
    let hi = (w0 >> (16u + 2u * s)) & 3u;
    let dl = unpack2x16float(w0).x * f32(i32(lo | (hi << 4u)) - 32);
    let qw = base + 2u + 4u * s;
    var r: array<vec4<f32>, UNIT_V4>;
    for (var i = 0u; i < 4u; i++) {
        r[i] = dl * kvalues(lanes(w[qw + i], 4u * (u % 2u), 0xFu));
    }
    return r;
}
#endif

//! The GGUF block formats as `#[repr(C)]` structs, field for field as in ggml's `ggml-common.h`.
//!
//! Every struct has alignment 1: multi-byte fields are stored as little-endian byte arrays
//! ([`F16`] for half floats, `[u8; 2]` / `[u8; 4]` for packed integers). This keeps each struct
//! exactly the size ggml gives it (Q4_0 is 18 bytes, Q6_K 210: a `u16` or `u32` field could add
//! padding), and it lets any byte slice whose length is a whole number of blocks be viewed as a
//! block slice without copying (`bytemuck::try_cast_slice`), wherever the slice starts. The byte
//! order is the file's (little-endian) on every host.
//!
//! The size of each struct is checked at compile time, and against [`GgmlType::type_size`] in the
//! tests.
//!
//! [`GgmlType::type_size`]: super::GgmlType::type_size

use bytemuck::{Pod, Zeroable};

/// Elements in a super-block of the k-quants (and IQ4_XS): ggml's `QK_K`.
pub const QK_K: usize = 256;
/// Elements in a block of the "legacy" quants (Q4_0 … Q8_0) and IQ4_NL: ggml's `QK4_0`, `QK8_0`, ….
pub const QK: usize = 32;

/// An IEEE half float as its two little-endian bytes (ggml's `ggml_half`).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct F16(pub [u8; 2]);

impl F16 {
    /// Exact widening to f32 (what `np.float16.astype(np.float32)` and `GGML_FP16_TO_FP32` do).
    #[inline]
    pub fn to_f32(self) -> f32 {
        half::f16::from_le_bytes(self.0).to_f32()
    }
}

/// Declares that a block struct has ggml's size and alignment 1, at compile time.
macro_rules! assert_block {
    ($block:ty, $bytes:literal) => {
        const _: () = assert!(size_of::<$block>() == $bytes && align_of::<$block>() == 1);
    };
}

/// `block_q4_0`, 32 weights in 18 bytes: `{ ggml_half d; uint8_t qs[16]; }`.
/// Byte `j` of `qs` holds weight `j` in its low nibble and weight `j + 16` in its high nibble;
/// `w = d * (q - 8)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4_0 {
    pub d: F16,
    pub qs: [u8; QK / 2],
}
assert_block!(BlockQ4_0, 18);

/// `block_q4_1`, 32 weights in 20 bytes: `{ ggml_half d; ggml_half m; uint8_t qs[16]; }`.
/// Nibbles as in Q4_0; `w = d * q + m`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4_1 {
    pub d: F16,
    pub m: F16,
    pub qs: [u8; QK / 2],
}
assert_block!(BlockQ4_1, 20);

/// `block_q5_0`, 32 weights in 22 bytes: `{ ggml_half d; uint8_t qh[4]; uint8_t qs[16]; }`.
/// Nibbles as in Q4_0; bit `j` of the little-endian `u32` `qh` is bit 4 of weight `j`;
/// `w = d * (q - 16)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5_0 {
    pub d: F16,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}
assert_block!(BlockQ5_0, 22);

/// `block_q5_1`, 32 weights in 24 bytes:
/// `{ ggml_half d; ggml_half m; uint8_t qh[4]; uint8_t qs[16]; }`.
/// Bits as in Q5_0; `w = d * q + m`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5_1 {
    pub d: F16,
    pub m: F16,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}
assert_block!(BlockQ5_1, 24);

/// `block_q8_0`, 32 weights in 34 bytes: `{ ggml_half d; int8_t qs[32]; }`; `w = d * q`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ8_0 {
    pub d: F16,
    pub qs: [i8; QK],
}
assert_block!(BlockQ8_0, 34);

/// `block_q2_K`, 256 weights in 84 bytes:
/// `{ uint8_t scales[16]; uint8_t qs[64]; ggml_half d; ggml_half dmin; }`.
/// 16 sub-blocks of 16; `scales[i]` holds the 4-bit scale (low nibble) and 4-bit min (high) of
/// sub-block `i`. Each 128-weight half uses 32 bytes of `qs`: weight `32 * s + l` of the half is
/// bits `2s..2s+2` of byte `l`. `w = d * sc * q - dmin * m`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ2_K {
    pub scales: [u8; QK_K / 16],
    pub qs: [u8; QK_K / 4],
    pub d: F16,
    pub dmin: F16,
}
assert_block!(BlockQ2_K, 84);

/// `block_q3_K`, 256 weights in 110 bytes:
/// `{ uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; ggml_half d; }`.
/// Low 2 bits as in Q2_K; bit `k` of `hmask[l]` is the high bit of weight `32 * k + l`, and a SET
/// bit means "no offset" (`q = low - 4` when it is clear). 16 sub-blocks of 16 with 6-bit scales
/// biased by 32: low nibbles in `scales[0..8]` (sub-block `i` and `i + 8` share byte `i`), high
/// 2 bits in `scales[8..12]` (sub-block `i` at byte `8 + i % 4`, bits `2 * (i / 4)`).
/// `w = d * (sc - 32) * q`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ3_K {
    pub hmask: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 4],
    pub scales: [u8; 12],
    pub d: F16,
}
assert_block!(BlockQ3_K, 110);

/// `block_q4_K`, 256 weights in 144 bytes:
/// `{ ggml_half d; ggml_half dmin; uint8_t scales[12]; uint8_t qs[128]; }`.
/// 8 sub-blocks of 32 with 6-bit scales and mins packed in `scales` (see
/// `get_scale_min_k4`); each 64 weights use 32 bytes of `qs`, low nibbles first.
/// `w = d * sc * q - dmin * m`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4_K {
    pub d: F16,
    pub dmin: F16,
    pub scales: [u8; 12],
    pub qs: [u8; QK_K / 2],
}
assert_block!(BlockQ4_K, 144);

/// `block_q5_K`, 256 weights in 176 bytes:
/// `{ ggml_half d; ggml_half dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; }`.
/// As Q4_K, plus bit `j` of `qh[l]` is bit 4 of weight `32 * j + l`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5_K {
    pub d: F16,
    pub dmin: F16,
    pub scales: [u8; 12],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}
assert_block!(BlockQ5_K, 176);

/// `block_q6_K`, 256 weights in 210 bytes:
/// `{ uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; ggml_half d; }` (the scale is LAST).
/// Per 128-weight half: 64 bytes of `ql` (low nibbles first) and 32 bytes of `qh` (2 bits per
/// weight, as in Q2_K); 16 sub-blocks of 16 with signed 8-bit scales. `w = d * sc * (q - 32)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ6_K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: F16,
}
assert_block!(BlockQ6_K, 210);

/// `block_iq4_nl`, 32 weights in 18 bytes: `{ ggml_half d; uint8_t qs[16]; }`.
/// Nibbles as in Q4_0, but each indexes the non-linear table [`KVALUES_IQ4NL`]: `w = d * kv[q]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockIQ4_NL {
    pub d: F16,
    pub qs: [u8; QK / 2],
}
assert_block!(BlockIQ4_NL, 18);

/// `block_iq4_xs`, 256 weights in 136 bytes:
/// `{ ggml_half d; uint16_t scales_h; uint8_t scales_l[4]; uint8_t qs[128]; }`.
/// 8 sub-blocks of 32 with 6-bit scales biased by 32: low nibble of sub-block `i` in
/// `scales_l[i / 2]` (nibble `i % 2`), high 2 bits at bits `2i` of `scales_h`; each sub-block uses
/// 16 bytes of `qs`, low nibbles first, indexing [`KVALUES_IQ4NL`]. `w = d * (sc - 32) * kv[q]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockIQ4_XS {
    pub d: F16,
    pub scales_h: [u8; 2],
    pub scales_l: [u8; QK_K / 64],
    pub qs: [u8; QK_K / 2],
}
assert_block!(BlockIQ4_XS, 136);

/// ggml's `kvalues_iq4nl`: the 16 levels of IQ4_NL and IQ4_XS.
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::GgmlType;

    #[test]
    fn block_sizes_match_ggml_type_sizes() {
        let cases: [(GgmlType, usize, usize); 12] = [
            (GgmlType::Q4_0, size_of::<BlockQ4_0>(), QK),
            (GgmlType::Q4_1, size_of::<BlockQ4_1>(), QK),
            (GgmlType::Q5_0, size_of::<BlockQ5_0>(), QK),
            (GgmlType::Q5_1, size_of::<BlockQ5_1>(), QK),
            (GgmlType::Q8_0, size_of::<BlockQ8_0>(), QK),
            (GgmlType::Q2_K, size_of::<BlockQ2_K>(), QK_K),
            (GgmlType::Q3_K, size_of::<BlockQ3_K>(), QK_K),
            (GgmlType::Q4_K, size_of::<BlockQ4_K>(), QK_K),
            (GgmlType::Q5_K, size_of::<BlockQ5_K>(), QK_K),
            (GgmlType::Q6_K, size_of::<BlockQ6_K>(), QK_K),
            (GgmlType::IQ4_NL, size_of::<BlockIQ4_NL>(), QK),
            (GgmlType::IQ4_XS, size_of::<BlockIQ4_XS>(), QK_K),
        ];
        for (ty, bytes, elements) in cases {
            assert_eq!(ty.type_size(), bytes as u64, "{ty} bytes per block");
            assert_eq!(ty.block_size(), elements as u64, "{ty} elements per block");
        }
    }

    #[test]
    fn f16_is_little_endian() {
        assert_eq!(F16([0x00, 0x3c]).to_f32(), 1.0);
        assert_eq!(F16([0x00, 0xc0]).to_f32(), -2.0);
        assert_eq!(F16([0x01, 0x00]).to_f32(), 2f32.powi(-24));
    }
}

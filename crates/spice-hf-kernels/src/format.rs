//! The weight formats the kernels read, as GGML lays them out in a file: block sizes, byte
//! offsets, and the scalar decoding of one 32-value chunk that every other path is tested
//! against.
//!
//! A row of a matrix is a sequence of blocks. Every block decodes in chunks of 32 values (one
//! chunk for the 32-value formats, eight for the 256-value K-quants), which is the unit the
//! SIMD kernels work in too.

use half::{bf16, f16};

/// A weight format: plain floats or a GGML block quantization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    /// 32-bit float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// bfloat16.
    BF16,
    /// Blocks of 32 signed 8-bit values with an f16 scale.
    Q8_0,
    /// Blocks of 32 4-bit values (offset 8) with an f16 scale.
    Q4_0,
    /// Blocks of 32 4-bit values with an f16 scale and an f16 minimum.
    Q4_1,
    /// Blocks of 32 5-bit values (offset 16) with an f16 scale.
    Q5_0,
    /// Blocks of 32 5-bit values with an f16 scale and an f16 minimum.
    Q5_1,
    /// Super-blocks of 256 4-bit values: eight sub-blocks with 6-bit scales and minimums.
    Q4K,
    /// Super-blocks of 256 5-bit values: eight sub-blocks with 6-bit scales and minimums.
    Q5K,
    /// Super-blocks of 256 6-bit values: sixteen sub-blocks with 8-bit scales.
    Q6K,
}

/// Every format, for tests and tables.
pub const ALL: [Format; 11] = [
    Format::F32,
    Format::F16,
    Format::BF16,
    Format::Q8_0,
    Format::Q4_0,
    Format::Q4_1,
    Format::Q5_0,
    Format::Q5_1,
    Format::Q4K,
    Format::Q5K,
    Format::Q6K,
];

impl Format {
    /// Values in one block (the kernels treat 32 floats as one block of the float formats).
    pub const fn block_values(self) -> usize {
        match self {
            Self::Q4K | Self::Q5K | Self::Q6K => 256,
            _ => 32,
        }
    }

    /// Bytes of one block.
    pub const fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 128,
            Self::F16 | Self::BF16 => 64,
            Self::Q8_0 => 34,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
        }
    }

    /// 32-value chunks in one block.
    pub const fn chunks(self) -> usize {
        self.block_values() / 32
    }

    /// Bytes of a row of `cols` values, or `None` when `cols` is not a whole number of blocks.
    pub fn row_bytes(self, cols: usize) -> Option<usize> {
        cols.is_multiple_of(self.block_values())
            .then(|| cols / self.block_values() * self.block_bytes())
    }

    /// Storage cost in bits per value.
    pub fn bits_per_value(self) -> f64 {
        self.block_bytes() as f64 * 8.0 / self.block_values() as f64
    }

    /// GGML's name (`Q4_K`, `F16`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::Q8_0 => "Q8_0",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_0 => "Q5_0",
            Self::Q5_1 => "Q5_1",
            Self::Q4K => "Q4_K",
            Self::Q5K => "Q5_K",
            Self::Q6K => "Q6_K",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An f16 read from two little-endian bytes.
#[inline]
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// The 6-bit scale and minimum of sub-block `j` of a Q4_K / Q5_K super-block.
#[inline]
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Decodes chunk `c` (values `32c..32c+32`) of one `block` of format `fmt` into `out`.
///
/// This is the reference every SIMD path is compared against; it follows ggml's
/// `dequantize_row_*` reference functions value by value.
pub fn decode_chunk(fmt: Format, block: &[u8], c: usize, out: &mut [f32; 32]) {
    debug_assert_eq!(block.len(), fmt.block_bytes());
    match fmt {
        Format::F32 => {
            for (o, b) in out.iter_mut().zip(block.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Format::F16 => {
            for (o, b) in out.iter_mut().zip(block.chunks_exact(2)) {
                *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        Format::BF16 => {
            for (o, b) in out.iter_mut().zip(block.chunks_exact(2)) {
                *o = bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        Format::Q8_0 => {
            let d = f16_at(block, 0);
            for (o, &q) in out.iter_mut().zip(&block[2..34]) {
                *o = q as i8 as f32 * d;
            }
        }
        Format::Q4_0 => {
            let d = f16_at(block, 0);
            let qs = &block[2..18];
            for j in 0..16 {
                out[j] = ((qs[j] & 0xF) as i32 - 8) as f32 * d;
                out[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
            }
        }
        Format::Q4_1 => {
            let (d, m) = (f16_at(block, 0), f16_at(block, 2));
            let qs = &block[4..20];
            for j in 0..16 {
                out[j] = (qs[j] & 0xF) as f32 * d + m;
                out[j + 16] = (qs[j] >> 4) as f32 * d + m;
            }
        }
        Format::Q5_0 | Format::Q5_1 => {
            let (d, m, rest) = if fmt == Format::Q5_1 {
                (f16_at(block, 0), f16_at(block, 2), &block[4..])
            } else {
                (f16_at(block, 0), 0.0, &block[2..])
            };
            let qh = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
            let qs = &rest[4..20];
            for j in 0..16 {
                let lo = (qs[j] & 0xF) as u32 | (((qh >> j) & 1) << 4);
                let hi = (qs[j] >> 4) as u32 | (((qh >> (j + 16)) & 1) << 4);
                if fmt == Format::Q5_1 {
                    out[j] = lo as f32 * d + m;
                    out[j + 16] = hi as f32 * d + m;
                } else {
                    out[j] = (lo as i32 - 16) as f32 * d;
                    out[j + 16] = (hi as i32 - 16) as f32 * d;
                }
            }
        }
        Format::Q4K | Format::Q5K => {
            let (d, dmin) = (f16_at(block, 0), f16_at(block, 2));
            let (sc, m) = scale_min_k4(c, &block[4..16]);
            let (d1, m1) = (d * sc as f32, dmin * m as f32);
            let (qh, qs) = if fmt == Format::Q5K {
                (&block[16..48], &block[48..176])
            } else {
                (&block[0..0], &block[16..144])
            };
            let ql = &qs[32 * (c / 2)..32 * (c / 2) + 32];
            let shift = 4 * (c % 2);
            for l in 0..32 {
                let mut q = ((ql[l] >> shift) & 0xF) as f32;
                if fmt == Format::Q5K && qh[l] & (1 << c) != 0 {
                    q += 16.0;
                }
                out[l] = d1 * q - m1;
            }
        }
        Format::Q6K => {
            let d = f16_at(block, 208);
            let half_block = c / 4;
            let k = c % 4;
            let ql = &block[64 * half_block..64 * half_block + 64];
            let qh = &block[128 + 32 * half_block..128 + 32 * half_block + 32];
            let sc = &block[192 + 8 * half_block..192 + 8 * half_block + 8];
            for l in 0..32 {
                let low = match k {
                    0 => ql[l] & 0xF,
                    1 => ql[l + 32] & 0xF,
                    2 => ql[l] >> 4,
                    _ => ql[l + 32] >> 4,
                };
                let q = (low as i32 | ((((qh[l] >> (2 * k)) & 3) as i32) << 4)) - 32;
                out[l] = d * sc[l / 16 + 2 * k] as i8 as f32 * q as f32;
            }
        }
    }
}

/// Decodes a whole row of `fmt` (a whole number of blocks) to f32.
pub fn decode_row(fmt: Format, row: &[u8], out: &mut [f32]) {
    let mut chunk = [0f32; 32];
    let per_block = fmt.chunks();
    for (b, block) in row.chunks_exact(fmt.block_bytes()).enumerate() {
        for c in 0..per_block {
            decode_chunk(fmt, block, c, &mut chunk);
            let at = (b * per_block + c) * 32;
            out[at..at + 32].copy_from_slice(&chunk);
        }
    }
}

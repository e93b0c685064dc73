//! The opt-in 8-bit activation path: activations quantized the way llama.cpp's `Q8_1` does
//! (blocks of 32 signed bytes with a scale `d = max|x| / 127` and the scaled sum
//! `s = d * Σq`), multiplied with the weights' integer values in integer arithmetic, the
//! scales applied once per 32 values.
//!
//! A weight chunk of 32 values is `d_w * q_w + m_w` with small integers `q_w`
//! ([`decode_chunk_int`]), so its dot product with a quantized activation chunk is
//! `d_w * d_x * Σ q_w q_x + m_w * s_x`: one integer sum per chunk, exact in `i32`. The formats
//! whose chunks have one scale and one minimum have this path ([`has_q8_path`]); Q6_K (two
//! scales per chunk) and the float formats keep the f32 path.
//!
//! It trades accuracy for speed: the activations lose what 8 bits per value cannot hold, so
//! logits move (the model tests state and check by how much) and greedy answers may differ
//! from the f32 path's.

use crate::format::{Format, f16_at, scale_min_k4};
use crate::{Error, Result};

/// Whether `fmt` has an 8-bit activation kernel.
pub const fn has_q8_path(fmt: Format) -> bool {
    matches!(
        fmt,
        Format::Q8_0
            | Format::Q4_0
            | Format::Q4_1
            | Format::Q5_0
            | Format::Q5_1
            | Format::Q4K
            | Format::Q5K
    )
}

/// Activations of one or more tokens quantized to 8 bits, 32 values per block.
#[derive(Debug, Clone, Default)]
pub struct Q8Acts {
    /// Per block: the scale.
    pub(crate) d: Vec<f32>,
    /// Per block: the scale times the sum of the block's values.
    pub(crate) s: Vec<f32>,
    /// The values, `tokens * cols`.
    pub(crate) q: Vec<i8>,
    cols: usize,
    tokens: usize,
}

impl Q8Acts {
    /// Empty; [`Q8Acts::quantize`] fills it, reusing its buffers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Values per token.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Tokens held.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// Quantizes `x` (`tokens` rows of `cols` values, `cols` a multiple of 32) into `self`.
    pub fn quantize(&mut self, x: &[f32], cols: usize) -> Result<()> {
        if cols == 0 || !cols.is_multiple_of(32) || !x.len().is_multiple_of(cols) {
            return Err(Error::Shape(format!(
                "{} activations are not whole rows of {cols} values in blocks of 32",
                x.len()
            )));
        }
        let blocks = x.len() / 32;
        self.d.resize(blocks, 0.0);
        self.s.resize(blocks, 0.0);
        self.q.resize(x.len(), 0);
        for (b, chunk) in x.chunks_exact(32).enumerate() {
            let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let mut sum = 0i32;
            for (q, &v) in self.q[b * 32..b * 32 + 32].iter_mut().zip(chunk) {
                // |v * id| <= 127 (rounding cannot pass it: amax * 127 / amax).
                let r = (v * id).round().clamp(-127.0, 127.0) as i8;
                *q = r;
                sum += r as i32;
            }
            self.d[b] = d;
            self.s[b] = d * sum as f32;
        }
        self.cols = cols;
        self.tokens = x.len() / cols;
        Ok(())
    }

    /// The dequantized values (for tests and error bounds).
    pub fn dequantized(&self) -> Vec<f32> {
        self.q
            .iter()
            .enumerate()
            .map(|(i, &q)| q as f32 * self.d[i / 32])
            .collect()
    }
}

/// The integer view of chunk `c` of a block: weights are `d * q[i] + m`.
///
/// # Panics
/// When `fmt` has no 8-bit path ([`has_q8_path`]); the callers check first.
pub fn decode_chunk_int(fmt: Format, block: &[u8], c: usize, q: &mut [i32; 32]) -> (f32, f32) {
    match fmt {
        Format::Q8_0 => {
            for (o, &b) in q.iter_mut().zip(&block[2..34]) {
                *o = b as i8 as i32;
            }
            (f16_at(block, 0), 0.0)
        }
        Format::Q4_0 | Format::Q4_1 => {
            let qs = &block[if fmt == Format::Q4_0 { 2 } else { 4 }..][..16];
            for j in 0..16 {
                q[j] = (qs[j] & 0xF) as i32;
                q[j + 16] = (qs[j] >> 4) as i32;
            }
            let d = f16_at(block, 0);
            let m = if fmt == Format::Q4_0 {
                -8.0 * d
            } else {
                f16_at(block, 2)
            };
            (d, m)
        }
        Format::Q5_0 | Format::Q5_1 => {
            let rest = &block[if fmt == Format::Q5_0 { 2 } else { 4 }..];
            let qh = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
            let qs = &rest[4..20];
            for j in 0..16 {
                q[j] = ((qs[j] & 0xF) as u32 | (((qh >> j) & 1) << 4)) as i32;
                q[j + 16] = ((qs[j] >> 4) as u32 | (((qh >> (j + 16)) & 1) << 4)) as i32;
            }
            let d = f16_at(block, 0);
            let m = if fmt == Format::Q5_0 {
                -16.0 * d
            } else {
                f16_at(block, 2)
            };
            (d, m)
        }
        Format::Q4K | Format::Q5K => {
            let (sc, mn) = scale_min_k4(c, &block[4..16]);
            let (qh, qs) = if fmt == Format::Q5K {
                (&block[16..48], &block[48..176])
            } else {
                (&block[0..0], &block[16..144])
            };
            let ql = &qs[32 * (c / 2)..][..32];
            let shift = 4 * (c % 2);
            for l in 0..32 {
                let mut v = ((ql[l] >> shift) & 0xF) as i32;
                if fmt == Format::Q5K && qh[l] & (1 << c) != 0 {
                    v += 16;
                }
                q[l] = v;
            }
            (
                f16_at(block, 0) * sc as f32,
                -(f16_at(block, 2) * mn as f32),
            )
        }
        other => panic!("{other} has no 8-bit activation path"),
    }
}

/// `row · x` for one row and token `t` of `x`, in integers per chunk.
fn dot(fmt: Format, row: &[u8], x: &Q8Acts, t: usize) -> f32 {
    let mut q = [0i32; 32];
    let per_block = fmt.chunks();
    let first = t * x.cols / 32;
    let mut acc = 0f32;
    let mut mins = 0f32;
    for (b, block) in row.chunks_exact(fmt.block_bytes()).enumerate() {
        for c in 0..per_block {
            let (d, m) = decode_chunk_int(fmt, block, c, &mut q);
            let xb = first + b * per_block + c;
            let xs = &x.q[xb * 32..xb * 32 + 32];
            let isum: i32 = q.iter().zip(xs).map(|(&w, &v)| w * v as i32).sum();
            acc += d * x.d[xb] * isum as f32;
            mins += m * x.s[xb];
        }
    }
    acc + mins
}

/// `y[t][r] = row_r · x[t]` on the portable path (the reference of the SIMD one).
pub(crate) fn matmul_scalar(
    fmt: Format,
    rows: &[u8],
    row_bytes: usize,
    x: &Q8Acts,
    y: &mut [f32],
    y_stride: usize,
) {
    for (r, row) in rows.chunks_exact(row_bytes).enumerate() {
        for t in 0..x.tokens {
            y[t * y_stride + r] = dot(fmt, row, x, t);
        }
    }
}

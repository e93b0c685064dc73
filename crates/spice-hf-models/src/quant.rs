//! GGML's tensor types ([`GgmlType`]: ids, block sizes, the kernels' format for each) and an
//! independent f32 dequantizer following ggml's reference kernels (the kernels' decoders are
//! tested against it).

use half::{bf16, f16};
use spice_hf_kernels::format::Format;

use crate::{Error, Result};

/// The element type of a tensor, as GGML numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// 4-bit blocks of 32 with one f16 scale.
    Q4_0,
    /// 4-bit blocks of 32 with an f16 scale and minimum.
    Q4_1,
    /// 5-bit blocks of 32 with one f16 scale.
    Q5_0,
    /// 5-bit blocks of 32 with an f16 scale and minimum.
    Q5_1,
    /// 8-bit blocks of 32 with one f16 scale.
    Q8_0,
    /// K-quant, 4-bit super-blocks of 256.
    Q4K,
    /// K-quant, 5-bit super-blocks of 256.
    Q5K,
    /// K-quant, 6-bit super-blocks of 256.
    Q6K,
    /// bfloat16.
    BF16,
    /// Any other GGML type (recognised in the table, not dequantized).
    Other(u32),
}

impl GgmlType {
    pub(crate) fn from_id(id: u32) -> Self {
        match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            30 => Self::BF16,
            other => Self::Other(other),
        }
    }

    /// The format the kernels read it as, if they read it.
    pub fn format(self) -> Option<Format> {
        Some(match self {
            Self::F32 => Format::F32,
            Self::F16 => Format::F16,
            Self::BF16 => Format::BF16,
            Self::Q8_0 => Format::Q8_0,
            Self::Q4_0 => Format::Q4_0,
            Self::Q4_1 => Format::Q4_1,
            Self::Q5_0 => Format::Q5_0,
            Self::Q5_1 => Format::Q5_1,
            Self::Q4K => Format::Q4K,
            Self::Q5K => Format::Q5K,
            Self::Q6K => Format::Q6K,
            Self::Other(_) => return None,
        })
    }

    /// (elements per block, bytes per block), or `None` for types we cannot size. Float types
    /// are sized per element (a GGUF tensor of them may have any length); the block formats
    /// take the kernels' table.
    pub fn block(self) -> Option<(u64, u64)> {
        let format = self.format()?;
        Some(match format {
            Format::F32 => (1, 4),
            Format::F16 | Format::BF16 => (1, 2),
            q => (q.block_values() as u64, q.block_bytes() as u64),
        })
    }

    /// Storage cost in bits per weight (for footprint estimates).
    pub fn bits_per_weight(self) -> Option<f64> {
        self.block().map(|(n, b)| b as f64 * 8.0 / n as f64)
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Q4K => f.write_str("Q4_K"),
            Self::Q5K => f.write_str("Q5_K"),
            Self::Q6K => f.write_str("Q6_K"),
            Self::Other(id) => write!(f, "ggml type {id}"),
            other => write!(f, "{other:?}"),
        }
    }
}

/// Little-endian F32, F16 or BF16 values as f32 (any count); `None` for a block format.
pub(crate) fn float_values(format: Format, raw: &[u8]) -> Option<Vec<f32>> {
    Some(match format {
        Format::F32 => raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Format::F16 => raw.chunks_exact(2).map(h).collect(),
        Format::BF16 => raw
            .chunks_exact(2)
            .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

fn h(b: &[u8]) -> f32 {
    f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// Dequantizes `n` elements of type `ty` from `raw` (exactly `n` elements' worth of blocks).
pub fn dequantize(ty: GgmlType, raw: &[u8], n: usize) -> Result<Vec<f32>> {
    let Some((block, bytes)) = ty.block() else {
        return Err(Error::Unsupported(format!("dequantizing {ty}")));
    };
    let (block, bytes) = (block as usize, bytes as usize);
    if !n.is_multiple_of(block) || raw.len() != n / block * bytes {
        return Err(Error::Unsupported(format!(
            "{ty}: {} bytes do not hold {n} elements",
            raw.len()
        )));
    }
    let mut out = Vec::with_capacity(n);
    let blocks = raw.chunks_exact(bytes);
    match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
            // Every float type has a float format: the values are always there.
            out = ty
                .format()
                .and_then(|f| float_values(f, raw))
                .unwrap_or_default();
        }
        GgmlType::Q8_0 => {
            for b in blocks {
                let d = h(b);
                out.extend(b[2..34].iter().map(|&q| q as i8 as f32 * d));
            }
        }
        GgmlType::Q4_0 => {
            for b in blocks {
                let (d, qs) = (h(b), &b[2..18]);
                out.extend(qs.iter().map(|&q| ((q & 0xF) as i32 - 8) as f32 * d));
                out.extend(qs.iter().map(|&q| ((q >> 4) as i32 - 8) as f32 * d));
            }
        }
        GgmlType::Q4_1 => {
            for b in blocks {
                let (d, m, qs) = (h(b), h(&b[2..]), &b[4..20]);
                out.extend(qs.iter().map(|&q| (q & 0xF) as f32 * d + m));
                out.extend(qs.iter().map(|&q| (q >> 4) as f32 * d + m));
            }
        }
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            let q5_1 = ty == GgmlType::Q5_1;
            for b in blocks {
                let d = h(b);
                let (m, rest) = if q5_1 {
                    (h(&b[2..]), &b[4..])
                } else {
                    (0.0, &b[2..])
                };
                let qh = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
                let qs = &rest[4..20];
                let offset = if q5_1 { 0 } else { 16 };
                let value = |q: u32| {
                    if q5_1 {
                        q as f32 * d + m
                    } else {
                        (q as i32 - offset) as f32 * d
                    }
                };
                out.extend(
                    (0..16).map(|j| value((qs[j] as u32 & 0xF) | (((qh >> j) << 4) & 0x10))),
                );
                out.extend((0..16).map(|j| value((qs[j] as u32 >> 4) | ((qh >> (j + 12)) & 0x10))));
            }
        }
        GgmlType::Q4K | GgmlType::Q5K => {
            let q5 = ty == GgmlType::Q5K;
            for b in blocks {
                let (d, dmin, scales) = (h(b), h(&b[2..]), &b[4..16]);
                let (qh, mut ql) = if q5 {
                    (&b[16..48], &b[48..176])
                } else {
                    (&b[0..0], &b[16..144])
                };
                let (mut u1, mut u2) = (1u8, 2u8);
                for is in (0..8).step_by(2) {
                    let (sc1, m1) = scale_min_k4(is, scales);
                    let (sc2, m2) = scale_min_k4(is + 1, scales);
                    let (d1, m1, d2, m2) = (
                        d * sc1 as f32,
                        dmin * m1 as f32,
                        d * sc2 as f32,
                        dmin * m2 as f32,
                    );
                    let hi = |l: usize, u: u8| if q5 && qh[l] & u != 0 { 16.0 } else { 0.0 };
                    out.extend((0..32).map(|l| d1 * ((ql[l] & 0xF) as f32 + hi(l, u1)) - m1));
                    out.extend((0..32).map(|l| d2 * ((ql[l] >> 4) as f32 + hi(l, u2)) - m2));
                    ql = &ql[32..];
                    u1 <<= 2;
                    u2 <<= 2;
                }
            }
        }
        GgmlType::Q6K => {
            for b in blocks {
                let (ql_all, qh_all, sc_all, d) =
                    (&b[0..128], &b[128..192], &b[192..208], h(&b[208..]));
                for half_block in 0..2 {
                    let (ql, qh, sc) = (
                        &ql_all[64 * half_block..],
                        &qh_all[32 * half_block..],
                        &sc_all[8 * half_block..],
                    );
                    let mut y = [0f32; 128];
                    for l in 0..32 {
                        let is = l / 16;
                        let q = |low: u8, shift: u8| {
                            (((low as i32) | ((((qh[l] >> shift) & 3) as i32) << 4)) - 32) as f32
                        };
                        y[l] = d * sc[is] as i8 as f32 * q(ql[l] & 0xF, 0);
                        y[l + 32] = d * sc[is + 2] as i8 as f32 * q(ql[l + 32] & 0xF, 2);
                        y[l + 64] = d * sc[is + 4] as i8 as f32 * q(ql[l] >> 4, 4);
                        y[l + 96] = d * sc[is + 6] as i8 as f32 * q(ql[l + 32] >> 4, 6);
                    }
                    out.extend_from_slice(&y);
                }
            }
        }
        GgmlType::Other(_) => unreachable!("sized above"),
    }
    Ok(out)
}

fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

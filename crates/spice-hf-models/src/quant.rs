//! Dequantization of GGML block formats to f32, following ggml's reference kernels.

use half::{bf16, f16};

use crate::gguf::GgmlType;
use crate::{Error, Result};

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
        GgmlType::F32 => out.extend(
            raw.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        GgmlType::F16 => out.extend(raw.chunks_exact(2).map(h)),
        GgmlType::BF16 => out.extend(
            raw.chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
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

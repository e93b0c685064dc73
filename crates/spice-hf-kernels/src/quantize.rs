//! Quantization of f32 rows into each format, following ggml's `quantize_row_*_ref` for the
//! 32-value formats and a plain (not error-minimising) search for the K-quants.
//!
//! spice-hf never quantizes a model it serves; this writes test fixtures and benchmark models
//! in every format, so the blocks only need to be valid and close to the input.

use half::{bf16, f16};

use crate::format::Format;

fn put_f16(out: &mut Vec<u8>, v: f32) {
    out.extend_from_slice(&f16::from_f32(v).to_le_bytes());
}

/// The value of largest magnitude, with its sign.
fn signed_max(x: &[f32]) -> f32 {
    x.iter()
        .copied()
        .fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m })
}

fn min_max(x: &[f32]) -> (f32, f32) {
    x.iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

/// Quantizes `x` (a whole number of blocks of `fmt`) and appends the blocks to `out`.
///
/// # Panics
/// When `x.len()` is not a multiple of the format's block size (a programming error in a
/// test or bench, never reached with data from a file).
pub fn quantize_row(fmt: Format, x: &[f32], out: &mut Vec<u8>) {
    assert!(
        x.len().is_multiple_of(fmt.block_values()),
        "{} values are not a whole number of {fmt} blocks",
        x.len()
    );
    for block in x.chunks_exact(fmt.block_values()) {
        match fmt {
            Format::F32 => block
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            Format::F16 => block
                .iter()
                .for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
            Format::BF16 => block
                .iter()
                .for_each(|v| out.extend_from_slice(&bf16::from_f32(*v).to_le_bytes())),
            Format::Q8_0 => {
                let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                put_f16(out, d);
                out.extend(block.iter().map(|v| (v * id).round() as i8 as u8));
            }
            Format::Q4_0 | Format::Q5_0 => {
                let levels = if fmt == Format::Q4_0 { 8.0 } else { 16.0 };
                let d = signed_max(block) / -levels;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                let top = 2.0 * levels - 1.0;
                let q: Vec<u8> = block
                    .iter()
                    .map(|v| (v * id + levels + 0.5).clamp(0.0, top) as u8)
                    .collect();
                put_f16(out, d);
                pack_low_bits(fmt == Format::Q5_0, &q, out);
            }
            Format::Q4_1 | Format::Q5_1 => {
                let top = if fmt == Format::Q4_1 { 15.0 } else { 31.0 };
                let (lo, hi) = min_max(block);
                let d = (hi - lo) / top;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                let q: Vec<u8> = block
                    .iter()
                    .map(|v| ((v - lo) * id + 0.5).clamp(0.0, top) as u8)
                    .collect();
                put_f16(out, d);
                put_f16(out, lo);
                pack_low_bits(fmt == Format::Q5_1, &q, out);
            }
            Format::Q4K | Format::Q5K => quantize_k4(fmt == Format::Q5K, block, out),
            Format::Q6K => quantize_q6k(block, out),
        }
    }
}

/// Packs 32 4- or 5-bit values the way Q4_0/Q4_1 (`qs`) and Q5_0/Q5_1 (`qh` then `qs`) do.
fn pack_low_bits(five: bool, q: &[u8], out: &mut Vec<u8>) {
    if five {
        let qh = q
            .iter()
            .enumerate()
            .fold(0u32, |h, (i, &v)| h | (((v >> 4) as u32 & 1) << i));
        out.extend_from_slice(&qh.to_le_bytes());
    }
    out.extend((0..16).map(|j| (q[j] & 0xF) | ((q[j + 16] & 0xF) << 4)));
}

/// Q4_K / Q5_K: per sub-block of 32 a scale and a (non-negative) minimum, both stored as 6-bit
/// multiples of the super-block's `d` and `dmin`.
fn quantize_k4(five: bool, x: &[f32], out: &mut Vec<u8>) {
    let top = if five { 31.0 } else { 15.0 };
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    for (j, sub) in x.chunks_exact(32).enumerate() {
        let (lo, hi) = min_max(sub);
        let lo = lo.min(0.0);
        scales[j] = (hi - lo) / top;
        mins[j] = -lo;
    }
    let max_scale = scales.iter().fold(0f32, |m, &v| m.max(v));
    let max_min = mins.iter().fold(0f32, |m, &v| m.max(v));
    let d = f16::from_f32(max_scale / 63.0).to_f32();
    let dmin = f16::from_f32(max_min / 63.0).to_f32();
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..8 {
        // Round the scale up so the largest value still fits in `top` steps.
        sc[j] = if d > 0.0 {
            (scales[j] / d).ceil().clamp(0.0, 63.0) as u8
        } else {
            0
        };
        mn[j] = if dmin > 0.0 {
            (mins[j] / dmin).round().clamp(0.0, 63.0) as u8
        } else {
            0
        };
    }
    let mut packed = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            packed[j] = sc[j];
            packed[j + 4] = mn[j];
        } else {
            packed[j + 4] = (sc[j] & 0xF) | ((mn[j] & 0xF) << 4);
            packed[j - 4] |= (sc[j] >> 4) << 6;
            packed[j] |= (mn[j] >> 4) << 6;
        }
    }
    let mut q = [0u8; 256];
    for (j, sub) in x.chunks_exact(32).enumerate() {
        let step = d * sc[j] as f32;
        let offset = dmin * mn[j] as f32;
        let inv = if step > 0.0 { 1.0 / step } else { 0.0 };
        for (l, &v) in sub.iter().enumerate() {
            q[32 * j + l] = ((v + offset) * inv).round().clamp(0.0, top) as u8;
        }
    }
    put_f16(out, d);
    put_f16(out, dmin);
    out.extend_from_slice(&packed);
    if five {
        let mut qh = [0u8; 32];
        for (j, sub) in q.chunks_exact(32).enumerate() {
            for (l, &v) in sub.iter().enumerate() {
                qh[l] |= ((v >> 4) & 1) << j;
            }
        }
        out.extend_from_slice(&qh);
    }
    // Sub-blocks 2p and 2p+1 share 32 bytes: low nibbles, then high nibbles.
    for p in 0..4 {
        out.extend((0..32).map(|l| (q[64 * p + l] & 0xF) | ((q[64 * p + 32 + l] & 0xF) << 4)));
    }
}

/// Q6_K: sixteen sub-blocks of 16 with signed 8-bit scales of the super-block's `d`.
fn quantize_q6k(x: &[f32], out: &mut Vec<u8>) {
    let mut scales = [0f32; 16];
    for (j, sub) in x.chunks_exact(16).enumerate() {
        scales[j] = signed_max(sub) / -32.0;
    }
    let max_abs = scales.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = f16::from_f32(max_abs / 127.0).to_f32();
    let mut sc = [0i8; 16];
    let mut q = [0u8; 256];
    for (j, sub) in x.chunks_exact(16).enumerate() {
        sc[j] = if d > 0.0 {
            (scales[j] / d).round().clamp(-128.0, 127.0) as i8
        } else {
            0
        };
        let step = d * sc[j] as f32;
        let inv = if step != 0.0 { 1.0 / step } else { 0.0 };
        for (l, &v) in sub.iter().enumerate() {
            q[16 * j + l] = ((v * inv).round() + 32.0).clamp(0.0, 63.0) as u8;
        }
    }
    let mut ql = [0u8; 128];
    let mut qh = [0u8; 64];
    for half_block in 0..2 {
        let q = &q[128 * half_block..];
        for l in 0..32 {
            let (q1, q2, q3, q4) = (q[l], q[l + 32], q[l + 64], q[l + 96]);
            ql[64 * half_block + l] = (q1 & 0xF) | ((q3 & 0xF) << 4);
            ql[64 * half_block + l + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4);
            qh[32 * half_block + l] =
                (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
        }
    }
    out.extend_from_slice(&ql);
    out.extend_from_slice(&qh);
    out.extend(sc.iter().map(|&s| s as u8));
    put_f16(out, d);
}

/// Quantizes a row-major `[rows, cols]` matrix.
pub fn quantize_matrix(fmt: Format, x: &[f32], cols: usize) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(x.len() / fmt.block_values() * fmt.block_bytes() + fmt.block_bytes());
    for row in x.chunks_exact(cols) {
        quantize_row(fmt, row, &mut out);
    }
    out
}

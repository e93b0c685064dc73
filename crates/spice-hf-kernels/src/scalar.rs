//! The portable kernels: decode a chunk with [`decode_chunk`], multiply in f32. Every SIMD
//! kernel is tested against these.

use crate::format::{Format, decode_chunk, decode_row};

/// `row · x` for one row of `fmt`.
pub(crate) fn dot(fmt: Format, row: &[u8], x: &[f32]) -> f32 {
    let mut w = [0f32; 32];
    let mut acc = [0f32; 8];
    let per_block = fmt.chunks();
    for (b, block) in row.chunks_exact(fmt.block_bytes()).enumerate() {
        for c in 0..per_block {
            decode_chunk(fmt, block, c, &mut w);
            let xs = &x[(b * per_block + c) * 32..][..32];
            for (lane, (wv, xv)) in w.iter().zip(xs).enumerate() {
                acc[lane % 8] += wv * xv;
            }
        }
    }
    acc.iter().sum()
}

/// `y[r] = row_r · x` for consecutive rows.
pub(crate) fn matvec(fmt: Format, rows: &[u8], row_bytes: usize, x: &[f32], y: &mut [f32]) {
    for (out, row) in y.iter_mut().zip(rows.chunks_exact(row_bytes)) {
        *out = dot(fmt, row, x);
    }
}

/// `y[t][r] = row_r · x[t]` for consecutive rows and every token; `y` rows are `y_stride`
/// apart and this writes columns `0..rows` of each.
pub(crate) fn matmul(
    fmt: Format,
    rows: &[u8],
    row_bytes: usize,
    x: &[f32],
    cols: usize,
    y: &mut [f32],
    y_stride: usize,
) {
    let mut w = vec![0f32; cols];
    for (r, row) in rows.chunks_exact(row_bytes).enumerate() {
        decode_row(fmt, row, &mut w);
        for (t, xt) in x.chunks_exact(cols).enumerate() {
            y[t * y_stride + r] = dot_f32(&w, xt);
        }
    }
}

/// `a · b` in f32 with eight partial sums.
pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

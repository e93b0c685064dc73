//! Turns an [`Isa`] into a call of the AVX2 or the scalar matrix kernels (attention does the same
//! in its own `simd` module, so that it and its kernel stay one file).
#![allow(unsafe_code)] // Reason: calling `#[target_feature]` kernels after checking the CPU.

#[cfg(target_arch = "x86_64")]
use crate::avx2;
use crate::format::{self, Format};
use crate::isa::Isa;
use crate::scalar;

/// Whether `isa` is AVX2 and this CPU really has it (a forced choice never runs code the CPU
/// lacks).
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx2_ok(isa: Isa) -> bool {
    isa == Isa::Avx2 && Isa::Avx2.supported()
}

pub(crate) fn matvec_rows(
    isa: Isa,
    fmt: Format,
    rows: &[u8],
    row_bytes: usize,
    x: &[f32],
    y: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if avx2_ok(isa) {
        // SAFETY: `avx2_ok` checked the CPU.
        return unsafe { avx2::matvec(fmt, rows, row_bytes, x, y) };
    }
    let _ = isa;
    scalar::matvec(fmt, rows, row_bytes, x, y)
}

#[allow(clippy::too_many_arguments)] // Reason: the raw form of one product, called in two places.
pub(crate) fn matmul_rows(
    isa: Isa,
    fmt: Format,
    rows: &[u8],
    row_bytes: usize,
    x: &[f32],
    cols: usize,
    y: &mut [f32],
    y_stride: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if avx2_ok(isa) {
        // SAFETY: `avx2_ok` checked the CPU.
        return unsafe { avx2::matmul(fmt, rows, row_bytes, x, cols, y, y_stride) };
    }
    let _ = isa;
    scalar::matmul(fmt, rows, row_bytes, x, cols, y, y_stride)
}

/// `y[t][r] = row_r · x[t]` with 8-bit activations (`fmt` has an 8-bit path).
pub(crate) fn q8_matmul_rows(
    isa: Isa,
    fmt: Format,
    rows: &[u8],
    row_bytes: usize,
    x: &crate::q8::Q8Acts,
    y: &mut [f32],
    y_stride: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if avx2_ok(isa) {
        // SAFETY: `avx2_ok` checked the CPU.
        return unsafe { avx2::q8_matmul(fmt, rows, row_bytes, x, y, y_stride) };
    }
    let _ = isa;
    crate::q8::matmul_scalar(fmt, rows, row_bytes, x, y, y_stride)
}

/// Decodes chunk `c` of `block` with a given instruction set (tests compare them).
pub fn decode_chunk_with(isa: Isa, fmt: Format, block: &[u8], c: usize, out: &mut [f32; 32]) {
    #[cfg(target_arch = "x86_64")]
    if avx2_ok(isa) {
        // SAFETY: `avx2_ok` checked the CPU.
        return unsafe { avx2::decode_chunk(fmt, block, c, out) };
    }
    let _ = isa;
    format::decode_chunk(fmt, block, c, out)
}

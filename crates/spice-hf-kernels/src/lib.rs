//! spice-hf's CPU kernels, with no Burn dependency: weights stay in their file's format
//! ([`format::Format`]: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) and are
//! decoded in registers while they are multiplied with f32 activations
//! ([`matrix::QMatrix::matvec`] for decode, [`matrix::QMatrix::matmul`] for prefill), on one
//! thread pool ([`matrix::Pool`]); attention over an f16 or f32 KV cache is
//! [`attention::attend`].
//!
//! The instruction set is chosen once per process at run time ([`isa::current`]): AVX2 with FMA
//! and F16C where the CPU has them, else portable scalar code, which is also the reference the
//! SIMD path is tested against. `SPICE_HF_KERNELS=scalar` forces the portable path.
//!
//! It sits below `spice-hf-models` (which maps files and wires these into the Llama layers)
//! and depends on nothing of ours.
//!
//! ```
//! use spice_hf_kernels::{format::Format, matrix::{Bytes, Pool, QMatrix}, quantize};
//! let w: Vec<f32> = (0..64 * 32).map(|i| (i % 7) as f32 - 3.0).collect();
//! let q = QMatrix::new(Format::Q8_0, 64, 32, Bytes::from_vec(quantize::quantize_matrix(Format::Q8_0, &w, 32)))?;
//! let mut y = vec![0f32; 64];
//! q.matvec(&Pool::new(1)?, &[1.0; 32], &mut y)?;
//! assert!((y[0] - w[..32].iter().sum::<f32>()).abs() < 0.5);
//! # Ok::<(), spice_hf_kernels::Error>(())
//! ```
//!
//! This crate has no cargo features.

pub mod attention;
#[cfg(target_arch = "x86_64")]
mod avx2;
mod dispatch;
pub mod format;
pub mod isa;
pub mod matrix;
pub mod ops;
pub mod q8;
pub mod quantize;
mod scalar;
#[cfg(test)]
mod tests;

pub use dispatch::decode_chunk_with;

/// Errors of the kernels.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Sizes that do not fit together.
    #[error("shape: {0}")]
    Shape(String),
    /// The thread pool could not start.
    #[error("could not start the kernel threads: {0}")]
    Threads(String),
}

/// The kernels' result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

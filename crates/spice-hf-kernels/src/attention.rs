//! Attention of one position over a layer's KV cache, one key/value head at a time: the query
//! heads that share that key/value head (grouped-query attention) are scored, softmaxed and
//! summed together, so each cached key and value row is read and widened from f16 once per
//! group rather than once per query head, in one call rather than one call per position.
//!
//! The portable path here is the reference; the AVX2 one (F16C widening, FMA) is tested
//! against it and chosen by [`crate::isa`].

use half::f16;

use crate::isa::{self, Isa};

/// One layer's cached keys or values, `[position][kv_head][head_dim]`, as stored.
#[derive(Debug, Clone, Copy)]
pub enum Kv<'a> {
    /// Half precision (the default cache).
    F16(&'a [f16]),
    /// Single precision.
    F32(&'a [f32]),
}

impl<'a> Kv<'a> {
    /// The rows from position `first` on, `stride` values per position (a sliding window's
    /// view: [`attend`] then sees only those positions).
    pub fn from_position(self, first: usize, stride: usize) -> Kv<'a> {
        let at = first.saturating_mul(stride).min(self.len());
        match self {
            Self::F16(s) => Kv::F16(&s[at..]),
            Self::F32(s) => Kv::F32(&s[at..]),
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::F16(s) => s.len(),
            Self::F32(s) => s.len(),
        }
    }

    fn at(&self, i: usize) -> f32 {
        match self {
            Self::F16(s) => s[i].to_f32(),
            Self::F32(s) => s[i],
        }
    }
}

/// Where one key/value head's rows sit in a [`Kv`] and how many of them a query sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group {
    /// Values per cached position (`kv_heads * head_dim`): the distance between rows.
    pub stride: usize,
    /// Where this head's row starts within a position (`kv_head * head_dim`).
    pub offset: usize,
    /// Values per head.
    pub head_dim: usize,
    /// Cached positions the query attends to (the first `seen`).
    pub seen: usize,
}

impl Group {
    fn check(&self, q: &[f32], k: Kv<'_>, v: Kv<'_>, out: &[f32]) -> usize {
        let hd = self.head_dim;
        assert!(
            hd > 0 && self.offset + hd <= self.stride,
            "attention group {self:?}"
        );
        assert!(
            !q.is_empty() && q.len().is_multiple_of(hd) && out.len() == q.len(),
            "attention: {} query values and {} outputs for heads of {hd}",
            q.len(),
            out.len()
        );
        let need = self.seen * self.stride;
        assert!(
            k.len() >= need && v.len() >= need,
            "attention: {} positions of {} values need {need} cached keys and values, have {} and {}",
            self.seen,
            self.stride,
            k.len(),
            v.len()
        );
        q.len() / hd
    }
}

/// Attends the query heads in `q` (`rep * head_dim` values, all sharing the key/value head of
/// `g`) over the first `g.seen` cached positions: `out[r] = Σ_j softmax_j(scale · q_r · k_j) v_j`.
/// `scores` is scratch (grown to `rep * seen`). Runs on the process's instruction set.
///
/// # Panics
/// When the lengths do not fit `g` (the caller sizes them from the model's configuration).
pub fn attend(
    q: &[f32],
    k: Kv<'_>,
    v: Kv<'_>,
    g: Group,
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    attend_with(isa::current().isa, q, k, v, g, scale, scores, out)
}

/// [`attend`] on a given instruction set (tests compare them).
#[allow(clippy::too_many_arguments)] // Reason: `attend` plus the instruction set.
pub fn attend_with(
    isa: Isa,
    q: &[f32],
    k: Kv<'_>,
    v: Kv<'_>,
    g: Group,
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let rep = g.check(q, k, v, out);
    scores.clear();
    scores.resize(rep * g.seen, 0.0);
    if g.seen == 0 {
        out.fill(0.0);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if simd::attend_if_avx2(isa, q, k, v, g, scale, scores, out) {
        return;
    }
    let _ = isa; // Only x86-64 has another path.
    scalar(q, k, v, g, scale, scores, out)
}

/// The reference: every product in f32, in position order.
fn scalar(q: &[f32], k: Kv<'_>, v: Kv<'_>, g: Group, scale: f32, s: &mut [f32], out: &mut [f32]) {
    let (hd, seen) = (g.head_dim, g.seen);
    for (r, qr) in q.chunks_exact(hd).enumerate() {
        let sr = &mut s[r * seen..(r + 1) * seen];
        for (j, sj) in sr.iter_mut().enumerate() {
            let row = j * g.stride + g.offset;
            *sj = qr
                .iter()
                .enumerate()
                .map(|(d, &x)| x * k.at(row + d))
                .sum::<f32>()
                * scale;
        }
        crate::ops::softmax(sr);
        let or = &mut out[r * hd..(r + 1) * hd];
        or.fill(0.0);
        for (j, &a) in sr.iter().enumerate() {
            let row = j * g.stride + g.offset;
            for (d, o) in or.iter_mut().enumerate() {
                *o += a * v.at(row + d);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    #![allow(unsafe_code)] // Reason: AVX2 intrinsics and the raw loads they take.

    use std::arch::x86_64::*;

    use half::f16;

    use super::{Group, Kv};
    use crate::avx2::hsum;
    use crate::isa::Isa;

    /// Runs [`attend`] when `isa` is AVX2 and this CPU has it, the head size is whole
    /// eight-value tiles and keys and values share a dtype; `false` (nothing written)
    /// otherwise. The caller checked the lengths against `g`.
    #[allow(clippy::too_many_arguments)] // Reason: `attention::attend_with`'s arguments.
    pub(super) fn attend_if_avx2(
        isa: Isa,
        q: &[f32],
        k: Kv<'_>,
        v: Kv<'_>,
        g: Group,
        scale: f32,
        scores: &mut [f32],
        out: &mut [f32],
    ) -> bool {
        if !(crate::dispatch::avx2_ok(isa) && g.head_dim.is_multiple_of(8)) {
            return false;
        }
        // SAFETY: `avx2_ok` checked the CPU; the caller bounded every row against `g`.
        match (k, v) {
            (Kv::F16(k), Kv::F16(v)) => unsafe { attend(q, k, v, g, scale, scores, out) },
            (Kv::F32(k), Kv::F32(v)) => unsafe { attend(q, k, v, g, scale, scores, out) },
            _ => return false,
        }
        true
    }

    /// A cache element type the AVX2 loop widens eight at a time.
    trait Lanes: Copy {
        /// Eight values from `p` as f32.
        ///
        /// # Safety
        /// `p` points at eight readable values; the CPU has AVX2, FMA and F16C.
        unsafe fn load8(p: *const Self) -> __m256;
    }

    impl Lanes for f16 {
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn load8(p: *const Self) -> __m256 {
            // SAFETY: eight readable f16 (the trait's contract), unaligned load.
            _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p as *const __m128i) })
        }
    }

    impl Lanes for f32 {
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn load8(p: *const Self) -> __m256 {
            // SAFETY: eight readable f32 (the trait's contract), unaligned load.
            unsafe { _mm256_loadu_ps(p) }
        }
    }

    /// Query heads scored per key row this many at a time (their partial sums stay in
    /// registers while the row's eight-value tiles are widened once).
    const HEADS: usize = 4;

    /// As [`super::attend`], for `g.head_dim` a multiple of 8 and `scores` sized `rep * seen`.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C; `k` and `v` hold `g.seen * g.stride` values and
    /// `g.offset + g.head_dim <= g.stride` (checked by the caller).
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn attend<T: Lanes>(
        q: &[f32],
        k: &[T],
        v: &[T],
        g: Group,
        scale: f32,
        scores: &mut [f32],
        out: &mut [f32],
    ) {
        let (hd, seen) = (g.head_dim, g.seen);
        let rep = q.len() / hd;
        let tiles = hd / 8;
        assert!(k.len() >= seen * g.stride && v.len() >= seen * g.stride);
        assert!(scores.len() >= rep * seen && out.len() >= rep * hd);
        let (kp, vp, qp) = (k.as_ptr(), v.as_ptr(), q.as_ptr());
        // Scores: each key row is widened once per group of up to HEADS query heads.
        for r0 in (0..rep).step_by(HEADS) {
            let n = HEADS.min(rep - r0);
            for j in 0..seen {
                let row = j * g.stride + g.offset;
                let mut acc = [_mm256_setzero_ps(); HEADS];
                for t in 0..tiles {
                    // SAFETY: `row + 8 * t + 8 <= seen * stride` (offset + hd <= stride) and
                    // `(r0 + i) * hd + 8 * t + 8 <= rep * hd = q.len()`.
                    unsafe {
                        let kv = T::load8(kp.add(row + 8 * t));
                        for (i, a) in acc.iter_mut().enumerate().take(n) {
                            let qv = _mm256_loadu_ps(qp.add((r0 + i) * hd + 8 * t));
                            *a = _mm256_fmadd_ps(qv, kv, *a);
                        }
                    }
                }
                for (i, a) in acc.iter().enumerate().take(n) {
                    scores[(r0 + i) * seen + j] = hsum(*a) * scale;
                }
            }
        }
        for r in 0..rep {
            crate::ops::softmax(&mut scores[r * seen..(r + 1) * seen]);
        }
        // Values: eight output dimensions of up to HEADS heads accumulate in registers over
        // every position.
        for r0 in (0..rep).step_by(HEADS) {
            let n = HEADS.min(rep - r0);
            for t in 0..tiles {
                let mut acc = [_mm256_setzero_ps(); HEADS];
                for j in 0..seen {
                    // SAFETY: as for the scores.
                    let vv = unsafe { T::load8(vp.add(j * g.stride + g.offset + 8 * t)) };
                    for (i, a) in acc.iter_mut().enumerate().take(n) {
                        let w = _mm256_set1_ps(scores[(r0 + i) * seen + j]);
                        *a = _mm256_fmadd_ps(w, vv, *a);
                    }
                }
                for (i, a) in acc.iter().enumerate().take(n) {
                    let o = &mut out[(r0 + i) * hd + 8 * t..][..8];
                    // SAFETY: `o` is eight writable f32.
                    unsafe { _mm256_storeu_ps(o.as_mut_ptr(), *a) };
                }
            }
        }
    }
}

//! AVX2 + FMA + F16C kernels. Each format has a decoder that turns one 32-value chunk into four
//! registers of f32 weights (scale and minimum applied, in registers, never in memory); generic
//! loops multiply them with f32 activations: row by row for matrix-vector products (four rows
//! at a time for the formats where one load of `x` serving four rows pays, see `Block::ROWS`;
//! formats with one scale and minimum per chunk apply them once per chunk; the next 8 KiB of
//! rows are prefetched), four tokens at a time for
//! matrix-matrix products (one decode serves four tokens). The second half is the opt-in
//! 8-bit activation path (`crate::q8`): chunks as bytes, integer dot products.
//!
//! Only reached through [`crate::isa`], after `is_x86_feature_detected!` said yes.
#![allow(unsafe_code)] // Reason: SIMD intrinsics and the raw loads they take.

use std::arch::x86_64::*;

use crate::format::{Format, scale_min_k4};

/// Thirty-two decoded weights.
type W = [__m256; 4];

/// A block format the AVX2 loops can decode.
trait Block {
    /// Bytes per block.
    const BYTES: usize;
    /// 32-value chunks per block.
    const CHUNKS: usize;
    /// Rows a matrix-vector product multiplies at once on the f32 path: 1 (each row streamed
    /// from memory on its own) or 4 (one load of `x` serves four rows). Measured on SmolLM2
    /// and on 140 MB of 1536x768 matrices per format (AMD EPYC, AVX2, 1 and 2 threads): rows
    /// one by one streamed F16, BF16 and Q8_0 up to twice as fast and the 4- and 5-bit
    /// formats as fast or faster, end to end 58-61 against 44-48 tok/s on the Q4_1 fixture;
    /// four at a time still paid for the K-quants' heavier decoding and for F32.
    const ROWS: usize = 1;
    /// Whether [`Block::decode_raw`] is implemented: the chunk is one scale and one minimum
    /// over small integers, so a matrix-vector product applies them once per chunk.
    const RAW: bool = false;
    /// Decodes chunk `c` of the block at `p`. Formats with `RAW` get it from
    /// [`Block::decode_raw`]; the others implement it (each format implements one of the two).
    ///
    /// # Safety
    /// `p` points at `BYTES` readable bytes, `c < CHUNKS`, and the CPU has AVX2, FMA and F16C.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn decode(p: *const u8, c: usize) -> W {
        // SAFETY: forwarded contract.
        let (q, d, m) = unsafe { Self::decode_raw(p, c) };
        let (d, m) = (_mm256_set1_ps(d), _mm256_set1_ps(m));
        let mut out = [_mm256_setzero_ps(); 4];
        for (o, v) in out.iter_mut().zip(q) {
            *o = _mm256_fmadd_ps(v, d, m);
        }
        out
    }
    /// Chunk `c` as its integer values (in f32) with its scale `d` and minimum `m`: the
    /// weights are `d * q + m`. Only called when `RAW`.
    ///
    /// # Safety
    /// As [`Block::decode`].
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn decode_raw(p: *const u8, c: usize) -> (W, f32, f32) {
        // SAFETY: forwarded contract.
        (unsafe { Self::decode(p, c) }, 1.0, 0.0)
    }
}

/// Integer lanes as floats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn floats(q: [__m256i; 4]) -> W {
    let mut out = [_mm256_setzero_ps(); 4];
    for (o, v) in out.iter_mut().zip(q) {
        *o = _mm256_cvtepi32_ps(v);
    }
    out
}

/// # Safety
/// `p` points at two readable bytes; the CPU has F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_at(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees two readable bytes; the read is unaligned.
    let bits = unsafe { std::ptr::read_unaligned(p as *const u16) };
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// Sixteen bytes of packed nibbles → the 32 values they hold (low nibbles first), as i32 lanes:
/// each half of the bytes widened once (the load folds into the widening), then masked for
/// the low nibbles and shifted for the high ones.
///
/// # Safety
/// `p` points at 16 readable bytes; the CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles(p: *const u8) -> [__m256i; 4] {
    // SAFETY: 16 readable bytes, two unaligned 8-byte loads.
    let (a, b) = unsafe {
        (
            _mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i)),
            _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.add(8) as *const __m128i)),
        )
    };
    let mask = _mm256_set1_epi32(0x0F);
    [
        _mm256_and_si256(a, mask),
        _mm256_and_si256(b, mask),
        _mm256_srli_epi32(a, 4),
        _mm256_srli_epi32(b, 4),
    ]
}

/// Adds bit `i` of `qh` as bit 4 of value `i` (Q5_0 / Q5_1).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn add_high_bits(q: &mut [__m256i; 4], qh: u32) {
    let all = _mm256_set1_epi32(qh as i32);
    let one = _mm256_set1_epi32(1);
    for (i, v) in q.iter_mut().enumerate() {
        let base = 8 * i as i32;
        let shifts = _mm256_setr_epi32(
            base,
            base + 1,
            base + 2,
            base + 3,
            base + 4,
            base + 5,
            base + 6,
            base + 7,
        );
        let bit = _mm256_and_si256(_mm256_srlv_epi32(all, shifts), one);
        *v = _mm256_add_epi32(*v, _mm256_slli_epi32(bit, 4));
    }
}

/// Eight bytes → eight i32 lanes, zero-extended.
///
/// # Safety
/// `p` points at eight readable bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn u8x8(p: *const u8) -> __m256i {
    // SAFETY: eight readable bytes, unaligned load.
    _mm256_cvtepu8_epi32(unsafe { _mm_loadl_epi64(p as *const __m128i) })
}

struct F32;
impl Block for F32 {
    const BYTES: usize = 128;
    const CHUNKS: usize = 1;
    const ROWS: usize = 4;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn decode(p: *const u8, _c: usize) -> W {
        let p = p as *const f32;
        // SAFETY: 128 readable bytes (the trait's contract); unaligned loads.
        unsafe {
            [
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            ]
        }
    }
}

struct F16;
impl Block for F16 {
    const BYTES: usize = 64;
    const CHUNKS: usize = 1;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn decode(p: *const u8, _c: usize) -> W {
        // SAFETY: 64 readable bytes (the trait's contract); unaligned loads.
        unsafe {
            let mut out = [_mm256_setzero_ps(); 4];
            for (i, o) in out.iter_mut().enumerate() {
                *o = _mm256_cvtph_ps(_mm_loadu_si128(p.add(16 * i) as *const __m128i));
            }
            out
        }
    }
}

struct Bf16;
impl Block for Bf16 {
    const BYTES: usize = 64;
    const CHUNKS: usize = 1;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn decode(p: *const u8, _c: usize) -> W {
        // SAFETY: 64 readable bytes (the trait's contract); unaligned loads.
        unsafe {
            let mut out = [_mm256_setzero_ps(); 4];
            for (i, o) in out.iter_mut().enumerate() {
                let v = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.add(16 * i) as *const __m128i));
                *o = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
            }
            out
        }
    }
}

struct Q8_0;
impl Block for Q8_0 {
    const BYTES: usize = 34;
    const CHUNKS: usize = 1;
    const RAW: bool = true;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn decode_raw(p: *const u8, _c: usize) -> (W, f32, f32) {
        // SAFETY: 34 readable bytes (the trait's contract); unaligned loads.
        unsafe {
            let mut q = [_mm256_setzero_si256(); 4];
            for (i, v) in q.iter_mut().enumerate() {
                *v = _mm256_cvtepi8_epi32(_mm_loadl_epi64(p.add(2 + 8 * i) as *const __m128i));
            }
            (floats(q), f16_at(p), 0.0)
        }
    }
}

struct Q4_0;
impl Block for Q4_0 {
    const BYTES: usize = 18;
    const CHUNKS: usize = 1;
    const RAW: bool = true;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn decode_raw(p: *const u8, _c: usize) -> (W, f32, f32) {
        // SAFETY: 18 readable bytes (the trait's contract).
        unsafe {
            let d = f16_at(p);
            (floats(nibbles(p.add(2))), d, -8.0 * d)
        }
    }
}

struct Q4_1;
impl Block for Q4_1 {
    const BYTES: usize = 20;
    const CHUNKS: usize = 1;
    const RAW: bool = true;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn decode_raw(p: *const u8, _c: usize) -> (W, f32, f32) {
        // SAFETY: 20 readable bytes (the trait's contract).
        unsafe { (floats(nibbles(p.add(4))), f16_at(p), f16_at(p.add(2))) }
    }
}

struct Q5_0;
impl Block for Q5_0 {
    const BYTES: usize = 22;
    const CHUNKS: usize = 1;
    const RAW: bool = true;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn decode_raw(p: *const u8, _c: usize) -> (W, f32, f32) {
        // SAFETY: 22 readable bytes (the trait's contract); unaligned reads.
        unsafe {
            let d = f16_at(p);
            let mut q = nibbles(p.add(6));
            add_high_bits(&mut q, std::ptr::read_unaligned(p.add(2) as *const u32));
            (floats(q), d, -16.0 * d)
        }
    }
}

struct Q5_1;
impl Block for Q5_1 {
    const BYTES: usize = 24;
    const CHUNKS: usize = 1;
    const RAW: bool = true;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn decode_raw(p: *const u8, _c: usize) -> (W, f32, f32) {
        // SAFETY: 24 readable bytes (the trait's contract); unaligned reads.
        unsafe {
            let mut q = nibbles(p.add(8));
            add_high_bits(&mut q, std::ptr::read_unaligned(p.add(4) as *const u32));
            (floats(q), f16_at(p), f16_at(p.add(2)))
        }
    }
}

/// Chunk `c` of a Q4_K / Q5_K block as integer values in f32, its scale and its minimum (the
/// two formats share everything but the fifth bit).
///
/// # Safety
/// `p` points at a whole block (144 or 176 bytes); `c < 8`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn decode_k4_raw(p: *const u8, c: usize, five: bool) -> (W, f32, f32) {
    // SAFETY: the block is readable (the caller's contract): every offset below is inside it.
    unsafe {
        let scales = std::slice::from_raw_parts(p.add(4), 12);
        let (sc, m) = scale_min_k4(c, scales);
        let d1 = f16_at(p) * sc as f32;
        let m1 = f16_at(p.add(2)) * m as f32;
        let qs = p.add(if five { 48 } else { 16 } + 32 * (c / 2));
        let shift = _mm_cvtsi32_si128(4 * (c % 2) as i32);
        let nib = _mm256_set1_epi32(0xF);
        let mut q = [_mm256_setzero_si256(); 4];
        for (i, v) in q.iter_mut().enumerate() {
            *v = _mm256_and_si256(_mm256_srl_epi32(u8x8(qs.add(8 * i)), shift), nib);
        }
        if five {
            let qh = p.add(16);
            let hs = _mm_cvtsi32_si128(c as i32);
            let one = _mm256_set1_epi32(1);
            for (i, v) in q.iter_mut().enumerate() {
                let bit = _mm256_and_si256(_mm256_srl_epi32(u8x8(qh.add(8 * i)), hs), one);
                *v = _mm256_add_epi32(*v, _mm256_slli_epi32(bit, 4));
            }
        }
        (floats(q), d1, -m1)
    }
}

struct Q4K;
impl Block for Q4K {
    const BYTES: usize = 144;
    const CHUNKS: usize = 8;
    const ROWS: usize = 4;
    const RAW: bool = true;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn decode_raw(p: *const u8, c: usize) -> (W, f32, f32) {
        // SAFETY: forwarded contract.
        unsafe { decode_k4_raw(p, c, false) }
    }
}

struct Q5K;
impl Block for Q5K {
    const BYTES: usize = 176;
    const CHUNKS: usize = 8;
    const ROWS: usize = 4;
    const RAW: bool = true;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn decode_raw(p: *const u8, c: usize) -> (W, f32, f32) {
        // SAFETY: forwarded contract.
        unsafe { decode_k4_raw(p, c, true) }
    }
}

struct Q6K;
impl Block for Q6K {
    const BYTES: usize = 210;
    const CHUNKS: usize = 8;
    const ROWS: usize = 4;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn decode(p: *const u8, c: usize) -> W {
        // SAFETY: 210 readable bytes (the trait's contract): every offset below is inside.
        unsafe {
            let (half_block, k) = (c / 4, c % 4);
            let d = f16_at(p.add(208));
            let ql = p.add(64 * half_block + 32 * (k % 2));
            let qh = p.add(128 + 32 * half_block);
            let sc = p.add(192 + 8 * half_block + 2 * k);
            let (s0, s1) = (*sc as i8 as f32 * d, *sc.add(1) as i8 as f32 * d);
            let low_shift = _mm_cvtsi32_si128(4 * (k / 2) as i32);
            let high_shift = _mm_cvtsi32_si128(2 * k as i32);
            let (nib, two_bits, bias) = (
                _mm256_set1_epi32(0xF),
                _mm256_set1_epi32(3),
                _mm256_set1_epi32(32),
            );
            let mut out = [_mm256_setzero_ps(); 4];
            for (i, o) in out.iter_mut().enumerate() {
                let low = _mm256_and_si256(_mm256_srl_epi32(u8x8(ql.add(8 * i)), low_shift), nib);
                let high =
                    _mm256_and_si256(_mm256_srl_epi32(u8x8(qh.add(8 * i)), high_shift), two_bits);
                let q = _mm256_sub_epi32(_mm256_or_si256(low, _mm256_slli_epi32(high, 4)), bias);
                let s = _mm256_set1_ps(if i < 2 { s0 } else { s1 });
                *o = _mm256_mul_ps(_mm256_cvtepi32_ps(q), s);
            }
            out
        }
    }
}

/// How far ahead of the rows being multiplied a matrix-vector product asks the cache for the
/// next ones: without it, every matrix (and every thread's share of it) waits on memory at
/// the pace of the hardware prefetcher warming up, which cost a third of decode speed on the
/// AMD EPYC this was tuned on (8 KiB measured best among 2.8-23 KiB).
const PREFETCH_BYTES: usize = 8 << 10;

/// Rows in [`PREFETCH_BYTES`] (at least one group of four).
fn prefetch_rows_ahead(row_bytes: usize) -> usize {
    PREFETCH_BYTES
        .div_ceil(row_bytes.max(1))
        .next_multiple_of(4)
}

/// Asks for rows `first..first + count` of `rows` (clamped to the slice) to be brought into the
/// cache.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn prefetch_rows(rows: &[u8], row_bytes: usize, first: usize, count: usize) {
    let start = (first * row_bytes).min(rows.len());
    let end = ((first + count) * row_bytes).min(rows.len());
    let mut at = start;
    while at < end {
        // SAFETY: `at < rows.len()`: the pointer is inside the slice; a prefetch never faults
        // and changes no state a program can observe.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(rows.as_ptr().add(at) as *const i8) };
        at += 64;
    }
}

/// The rows of a matrix-vector product, `G` at a time (then one by one), each group
/// prefetching the rows [`PREFETCH_BYTES`] ahead: `group(p)` and `one(p)` dot the rows
/// starting at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn by_row_groups<const G: usize>(
    rows: &[u8],
    row_bytes: usize,
    y: &mut [f32],
    group: impl Fn(*const u8) -> [f32; G],
    one: impl Fn(*const u8) -> f32,
) {
    let n = y.len();
    assert!(rows.len() >= n * row_bytes);
    let ahead = prefetch_rows_ahead(row_bytes);
    prefetch_rows(rows, row_bytes, 0, ahead);
    let mut r = 0;
    while r + G <= n {
        prefetch_rows(rows, row_bytes, r + ahead, G);
        y[r..r + G].copy_from_slice(&group(rows[r * row_bytes..].as_ptr()));
        r += G;
    }
    while r < n {
        prefetch_rows(rows, row_bytes, r + ahead, 1);
        y[r] = one(rows[r * row_bytes..].as_ptr());
        r += 1;
    }
}

/// Sum of the eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// `R` consecutive rows dotted with `x`.
///
/// # Safety
/// `rows` holds `R` rows of `row_bytes` (= `blocks` blocks of `B`); `x` holds
/// `blocks * B::CHUNKS * 32` values; AVX2, FMA and F16C are present.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_rows<B: Block, const R: usize>(
    rows: *const u8,
    row_bytes: usize,
    x: *const f32,
    blocks: usize,
) -> [f32; R] {
    // Up to four accumulators per row. A row alone of a format without `RAW` (F16, BF16,
    // Q6_K) would otherwise be one chain of four dependent FMAs per chunk, bound by their
    // latency rather than by memory: it spreads them over four (F16 in cache, one thread:
    // 10-14 -> 21-25 GB/s). Four rows at a time use one each (their chains interleave;
    // sixteen would not fit in the registers).
    let split = R == 1;
    let mut acc = [[_mm256_setzero_ps(); 4]; R];
    // SAFETY: every block and chunk address is inside `rows` / `x` by the caller's contract.
    unsafe {
        for b in 0..blocks {
            for c in 0..B::CHUNKS {
                let xo = x.add((b * B::CHUNKS + c) * 32);
                let xv = [
                    _mm256_loadu_ps(xo),
                    _mm256_loadu_ps(xo.add(8)),
                    _mm256_loadu_ps(xo.add(16)),
                    _mm256_loadu_ps(xo.add(24)),
                ];
                if B::RAW {
                    // d Σ q x + m Σ x: the scale and the minimum once per chunk, not per value.
                    let xsum =
                        _mm256_add_ps(_mm256_add_ps(xv[0], xv[1]), _mm256_add_ps(xv[2], xv[3]));
                    // (One accumulator per row here: each chunk's sum `t` is its own short
                    // chain, and spreading the two FMAs below measured slower.)
                    for (r, a) in acc.iter_mut().enumerate() {
                        let (q, d, m) = B::decode_raw(rows.add(r * row_bytes + b * B::BYTES), c);
                        let mut t = _mm256_mul_ps(q[0], xv[0]);
                        t = _mm256_fmadd_ps(q[1], xv[1], t);
                        t = _mm256_fmadd_ps(q[2], xv[2], t);
                        t = _mm256_fmadd_ps(q[3], xv[3], t);
                        a[0] = _mm256_fmadd_ps(t, _mm256_set1_ps(d), a[0]);
                        a[0] = _mm256_fmadd_ps(xsum, _mm256_set1_ps(m), a[0]);
                    }
                    continue;
                }
                for (r, a) in acc.iter_mut().enumerate() {
                    let w = B::decode(rows.add(r * row_bytes + b * B::BYTES), c);
                    for i in 0..4 {
                        let k = if split { i } else { 0 };
                        a[k] = _mm256_fmadd_ps(w[i], xv[i], a[k]);
                    }
                }
            }
        }
    }
    let mut out = [0f32; R];
    for (o, a) in out.iter_mut().zip(acc) {
        *o = hsum(_mm256_add_ps(
            _mm256_add_ps(a[0], a[1]),
            _mm256_add_ps(a[2], a[3]),
        ));
    }
    out
}

/// Rows up to this many 32-value chunks (16,384 columns) get their activation sums
/// precomputed on the stack by [`matvec_impl`]; longer ones sum per chunk and row.
const MAX_SUM_CHUNKS: usize = 512;

/// The sum of the 32 values at `x`.
///
/// # Safety
/// `x` points at 32 readable values; the CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn chunk_sum(x: *const f32) -> f32 {
    // SAFETY: 32 readable values (the caller's contract).
    unsafe {
        let a = _mm256_add_ps(_mm256_loadu_ps(x), _mm256_loadu_ps(x.add(8)));
        let b = _mm256_add_ps(_mm256_loadu_ps(x.add(16)), _mm256_loadu_ps(x.add(24)));
        hsum(_mm256_add_ps(a, b))
    }
}

/// One row of a `RAW` format dotted with `x`, the chunks' sums of `x` given: `d Σ q x` in
/// vectors and `m Σx` in scalars, two accumulators of each taking alternate chunks.
///
/// # Safety
/// `row` holds `blocks` blocks of `B`; `x` holds `blocks * B::CHUNKS * 32` values and `sums`
/// one per chunk; AVX2, FMA and F16C are present.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_row_raw<B: Block>(
    row: *const u8,
    x: *const f32,
    sums: *const f32,
    blocks: usize,
) -> f32 {
    // One chunk into one of the two accumulator pairs (named, so they stay in registers).
    let step = |i: usize, acc: &mut __m256, min: &mut f32| {
        // SAFETY: chunk `i` and its sum are inside `row` / `x` / `sums` by the contract.
        unsafe {
            let xo = x.add(32 * i);
            let (q, d, m) = B::decode_raw(row.add(i / B::CHUNKS * B::BYTES), i % B::CHUNKS);
            let mut t = _mm256_mul_ps(q[0], _mm256_loadu_ps(xo));
            t = _mm256_fmadd_ps(q[1], _mm256_loadu_ps(xo.add(8)), t);
            t = _mm256_fmadd_ps(q[2], _mm256_loadu_ps(xo.add(16)), t);
            t = _mm256_fmadd_ps(q[3], _mm256_loadu_ps(xo.add(24)), t);
            *acc = _mm256_fmadd_ps(t, _mm256_set1_ps(d), *acc);
            *min += m * *sums.add(i);
        }
    };
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let (mut min0, mut min1) = (0f32, 0f32);
    let chunks = blocks * B::CHUNKS;
    let mut i = 0;
    while i + 2 <= chunks {
        step(i, &mut acc0, &mut min0);
        step(i + 1, &mut acc1, &mut min1);
        i += 2;
    }
    if i < chunks {
        step(i, &mut acc0, &mut min0);
    }
    hsum(_mm256_add_ps(acc0, acc1)) + (min0 + min1)
}

/// One row dotted with `T` tokens' activations (`x_stride` values apart).
///
/// # Safety
/// `row` holds `blocks` blocks of `B`; each of the `T` activation rows holds
/// `blocks * B::CHUNKS * 32` values; AVX2, FMA and F16C are present.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_tokens<B: Block, const T: usize>(
    row: *const u8,
    x: *const f32,
    x_stride: usize,
    blocks: usize,
) -> [f32; T] {
    let mut acc = [_mm256_setzero_ps(); T];
    // SAFETY: every block and chunk address is inside `row` / `x` by the caller's contract.
    unsafe {
        for b in 0..blocks {
            for c in 0..B::CHUNKS {
                let w = B::decode(row.add(b * B::BYTES), c);
                let off = (b * B::CHUNKS + c) * 32;
                for (t, a) in acc.iter_mut().enumerate() {
                    let xo = x.add(t * x_stride + off);
                    *a = _mm256_fmadd_ps(w[0], _mm256_loadu_ps(xo), *a);
                    *a = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(xo.add(8)), *a);
                    *a = _mm256_fmadd_ps(w[2], _mm256_loadu_ps(xo.add(16)), *a);
                    *a = _mm256_fmadd_ps(w[3], _mm256_loadu_ps(xo.add(24)), *a);
                }
            }
        }
    }
    let mut out = [0f32; T];
    for (o, a) in out.iter_mut().zip(acc) {
        *o = hsum(a);
    }
    out
}

/// Matrix-vector product over whole rows, four at a time.
#[target_feature(enable = "avx2,fma,f16c")]
fn matvec_impl<B: Block>(rows: &[u8], row_bytes: usize, x: &[f32], y: &mut [f32]) {
    assert!(rows.len() >= y.len() * row_bytes && row_bytes.is_multiple_of(B::BYTES));
    let blocks = row_bytes / B::BYTES;
    assert!(x.len() >= blocks * B::CHUNKS * 32);
    let chunks = blocks * B::CHUNKS;
    if B::RAW && B::ROWS == 1 && chunks <= MAX_SUM_CHUNKS {
        // Every row needs Σx per chunk for its minimums: summed once here, not once per row.
        let mut sums = [0f32; MAX_SUM_CHUNKS];
        for (i, s) in sums[..chunks].iter_mut().enumerate() {
            // SAFETY: chunk `i < chunks` is inside `x` (asserted above).
            *s = unsafe { chunk_sum(x.as_ptr().add(32 * i)) };
        }
        let (x, sums) = (x.as_ptr(), sums.as_ptr());
        // SAFETY: `p` starts a whole row of `rows` (by_row_groups' bounds); the asserts above
        // bound the blocks and the activations, and `sums` holds one sum per chunk.
        let one = |p| unsafe { dot_row_raw::<B>(p, x, sums, blocks) };
        by_row_groups(rows, row_bytes, y, |p| [one(p)], one);
        return;
    }
    let x = x.as_ptr();
    // SAFETY (every closure): `p` starts a row of `rows` with `G` (one) whole rows from it
    // (by_row_groups' bounds); the asserts above bound the blocks and the activations.
    let one = |p| unsafe { dot_rows::<B, 1>(p, row_bytes, x, blocks)[0] };
    if B::ROWS == 4 {
        by_row_groups(
            rows,
            row_bytes,
            y,
            |p| unsafe { dot_rows::<B, 4>(p, row_bytes, x, blocks) },
            one,
        );
    } else {
        by_row_groups(
            rows,
            row_bytes,
            y,
            |p| unsafe { dot_rows::<B, 1>(p, row_bytes, x, blocks) },
            one,
        );
    }
}

/// Matrix-matrix product: every row against every token, four tokens at a time.
#[target_feature(enable = "avx2,fma,f16c")]
fn matmul_impl<B: Block>(
    rows: &[u8],
    row_bytes: usize,
    x: &[f32],
    cols: usize,
    y: &mut [f32],
    y_stride: usize,
) {
    let blocks = row_bytes / B::BYTES;
    assert!(row_bytes.is_multiple_of(B::BYTES) && cols == blocks * B::CHUNKS * 32);
    let tokens = x.len() / cols;
    let n = rows.len() / row_bytes;
    assert!(tokens == 0 || y.len() >= (tokens - 1) * y_stride + n);
    for r in 0..n {
        let row = rows[r * row_bytes..].as_ptr();
        let mut t = 0;
        // SAFETY: `row` has `blocks` blocks; tokens `t..t+4` are inside `x` (checked by the
        // loop bound); the asserts above bound the writes.
        unsafe {
            while t + 4 <= tokens {
                let v = dot_tokens::<B, 4>(row, x.as_ptr().add(t * cols), cols, blocks);
                for (i, v) in v.into_iter().enumerate() {
                    y[(t + i) * y_stride + r] = v;
                }
                t += 4;
            }
            while t < tokens {
                let [v] = dot_tokens::<B, 1>(row, x.as_ptr().add(t * cols), cols, blocks);
                y[t * y_stride + r] = v;
                t += 1;
            }
        }
    }
}

macro_rules! by_format {
    ($fmt:expr, $f:ident, $($arg:expr),*) => {
        match $fmt {
            Format::F32 => $f::<F32>($($arg),*),
            Format::F16 => $f::<F16>($($arg),*),
            Format::BF16 => $f::<Bf16>($($arg),*),
            Format::Q8_0 => $f::<Q8_0>($($arg),*),
            Format::Q4_0 => $f::<Q4_0>($($arg),*),
            Format::Q4_1 => $f::<Q4_1>($($arg),*),
            Format::Q5_0 => $f::<Q5_0>($($arg),*),
            Format::Q5_1 => $f::<Q5_1>($($arg),*),
            Format::Q4K => $f::<Q4K>($($arg),*),
            Format::Q5K => $f::<Q5K>($($arg),*),
            Format::Q6K => $f::<Q6K>($($arg),*),
        }
    };
}

/// `y[r] = row_r · x`.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C.
pub(crate) unsafe fn matvec(fmt: Format, rows: &[u8], row_bytes: usize, x: &[f32], y: &mut [f32]) {
    // SAFETY: the caller checked the CPU features.
    unsafe { by_format!(fmt, matvec_impl, rows, row_bytes, x, y) }
}

/// `y[t][r] = row_r · x[t]`.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C.
pub(crate) unsafe fn matmul(
    fmt: Format,
    rows: &[u8],
    row_bytes: usize,
    x: &[f32],
    cols: usize,
    y: &mut [f32],
    y_stride: usize,
) {
    // SAFETY: the caller checked the CPU features.
    unsafe { by_format!(fmt, matmul_impl, rows, row_bytes, x, cols, y, y_stride) }
}

/// Decodes chunk `c` of one block (for tests against the scalar decoder).
///
/// # Safety
/// The CPU has AVX2, FMA and F16C.
pub(crate) unsafe fn decode_chunk(fmt: Format, block: &[u8], c: usize, out: &mut [f32; 32]) {
    assert!(block.len() >= fmt.block_bytes() && c < fmt.chunks());
    #[target_feature(enable = "avx2,fma,f16c")]
    fn store<B: Block>(block: &[u8], c: usize, out: &mut [f32; 32]) {
        // SAFETY: the assert above checked the block's length and the chunk.
        let w = unsafe { B::decode(block.as_ptr(), c) };
        for (i, v) in w.into_iter().enumerate() {
            // SAFETY: `out` has 32 floats; each store writes 8 at offset 8i.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(8 * i), v) };
        }
    }
    // SAFETY: the caller checked the CPU features.
    unsafe { by_format!(fmt, store, block, c, out) }
}

// ---- The 8-bit activation path (see `crate::q8`). ----

/// A block format with an 8-bit activation kernel: chunk `c` as 32 bytes of integer values
/// (unsigned unless `SIGNED`), with the chunk's scale `d` and minimum `m` (weights are
/// `d * q + m`).
trait IntBlock: Block {
    /// Whether the values are signed bytes (Q8_0) rather than small unsigned ones.
    const SIGNED: bool;
    /// Decodes chunk `c` of the block at `p`.
    ///
    /// # Safety
    /// `p` points at `BYTES` readable bytes, `c < CHUNKS`, and the CPU has AVX2, FMA and F16C.
    unsafe fn decode_int(p: *const u8, c: usize) -> (__m256i, f32, f32);
}

/// Sixteen bytes of packed nibbles → 32 bytes, low nibbles first (ggml's
/// `bytes_from_nibbles_32`).
///
/// # Safety
/// `p` points at 16 readable bytes; the CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibble_bytes(p: *const u8) -> __m256i {
    // SAFETY: 16 readable bytes, unaligned load.
    let raw = unsafe { _mm_loadu_si128(p as *const __m128i) };
    let both = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// Bit `i` of the 32 bits at `p` as `0x10` in byte `i` (the fifth bit of Q5_0 / Q5_1 values;
/// ggml's `bytes_from_bits_32`).
///
/// # Safety
/// `p` points at four readable bytes; the CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fifth_bits(p: *const u8) -> __m256i {
    // SAFETY: four readable bytes, unaligned read.
    let bits = unsafe { std::ptr::read_unaligned(p as *const u32) };
    // Byte i gets the byte of `bits` holding bit i, then every bit but bit (i % 8) is set:
    // the byte is all ones exactly when bit i is.
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(bits as i32),
        _mm256_set_epi64x(
            0x0303030303030303,
            0x0202020202020202,
            0x0101010101010101,
            0,
        ),
    );
    let others = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);
    let set = _mm256_cmpeq_epi8(_mm256_or_si256(spread, others), _mm256_set1_epi64x(-1));
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

impl IntBlock for Q8_0 {
    const SIGNED: bool = true;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn decode_int(p: *const u8, _c: usize) -> (__m256i, f32, f32) {
        // SAFETY: 34 readable bytes (the trait's contract); unaligned loads.
        unsafe {
            (
                _mm256_loadu_si256(p.add(2) as *const __m256i),
                f16_at(p),
                0.0,
            )
        }
    }
}

impl IntBlock for Q4_0 {
    const SIGNED: bool = false;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn decode_int(p: *const u8, _c: usize) -> (__m256i, f32, f32) {
        // SAFETY: 18 readable bytes (the trait's contract).
        unsafe {
            let d = f16_at(p);
            (nibble_bytes(p.add(2)), d, -8.0 * d)
        }
    }
}

impl IntBlock for Q4_1 {
    const SIGNED: bool = false;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn decode_int(p: *const u8, _c: usize) -> (__m256i, f32, f32) {
        // SAFETY: 20 readable bytes (the trait's contract).
        unsafe { (nibble_bytes(p.add(4)), f16_at(p), f16_at(p.add(2))) }
    }
}

impl IntBlock for Q5_0 {
    const SIGNED: bool = false;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn decode_int(p: *const u8, _c: usize) -> (__m256i, f32, f32) {
        // SAFETY: 22 readable bytes (the trait's contract).
        unsafe {
            let d = f16_at(p);
            let q = _mm256_or_si256(nibble_bytes(p.add(6)), fifth_bits(p.add(2)));
            (q, d, -16.0 * d)
        }
    }
}

impl IntBlock for Q5_1 {
    const SIGNED: bool = false;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn decode_int(p: *const u8, _c: usize) -> (__m256i, f32, f32) {
        // SAFETY: 24 readable bytes (the trait's contract).
        unsafe {
            let q = _mm256_or_si256(nibble_bytes(p.add(8)), fifth_bits(p.add(4)));
            (q, f16_at(p), f16_at(p.add(2)))
        }
    }
}

/// Chunk `c` of a Q4_K / Q5_K super-block as integers with its scale and minimum.
///
/// # Safety
/// `p` points at a whole block (144 or 176 bytes); `c < 8`; the CPU has AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn decode_int_k4(p: *const u8, c: usize, five: bool) -> (__m256i, f32, f32) {
    // SAFETY: the block is readable (the caller's contract): every offset below is inside it.
    unsafe {
        let scales = std::slice::from_raw_parts(p.add(4), 12);
        let (sc, mn) = scale_min_k4(c, scales);
        let d = f16_at(p) * sc as f32;
        let m = -(f16_at(p.add(2)) * mn as f32);
        let qs = p.add(if five { 48 } else { 16 } + 32 * (c / 2));
        let raw = _mm256_loadu_si256(qs as *const __m256i);
        let shift = _mm_cvtsi32_si128(4 * (c % 2) as i32);
        let mut q = _mm256_and_si256(_mm256_srl_epi16(raw, shift), _mm256_set1_epi8(0x0F));
        if five {
            let qh = _mm256_loadu_si256(p.add(16) as *const __m256i);
            let bit = _mm256_and_si256(
                _mm256_srl_epi16(qh, _mm_cvtsi32_si128(c as i32)),
                _mm256_set1_epi8(1),
            );
            q = _mm256_or_si256(q, _mm256_slli_epi16(bit, 4));
        }
        (q, d, m)
    }
}

impl IntBlock for Q4K {
    const SIGNED: bool = false;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn decode_int(p: *const u8, c: usize) -> (__m256i, f32, f32) {
        // SAFETY: forwarded contract.
        unsafe { decode_int_k4(p, c, false) }
    }
}

impl IntBlock for Q5K {
    const SIGNED: bool = false;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn decode_int(p: *const u8, c: usize) -> (__m256i, f32, f32) {
        // SAFETY: forwarded contract.
        unsafe { decode_int_k4(p, c, true) }
    }
}

/// The eight partial integer sums of `w · x` over 32 values, as floats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn int_dot<B: IntBlock>(w: __m256i, x: __m256i) -> __m256 {
    // maddubs multiplies unsigned bytes by signed ones and adds pairs into i16: no pair can
    // saturate (|w| <= 128 and |x| <= 127 for Q8_0, w <= 31 for the others).
    let pairs = if B::SIGNED {
        _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w))
    } else {
        _mm256_maddubs_epi16(w, x)
    };
    _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
}

/// `R` consecutive rows dotted with one token's quantized activations (`xq`, `xd`, `xs`: its
/// values, block scales and scaled sums).
///
/// # Safety
/// `rows` holds `R` rows of `row_bytes` (= `blocks` blocks of `B`); the activations hold
/// `blocks * B::CHUNKS` blocks; AVX2, FMA and F16C are present.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_dot_rows<B: IntBlock, const R: usize>(
    rows: *const u8,
    row_bytes: usize,
    xq: *const i8,
    xd: *const f32,
    xs: *const f32,
    blocks: usize,
) -> [f32; R] {
    let mut acc = [_mm256_setzero_ps(); R];
    let mut mins = [0f32; R];
    // SAFETY: every block and chunk address is inside the rows / activations by the caller's
    // contract.
    unsafe {
        for b in 0..blocks {
            for c in 0..B::CHUNKS {
                let xb = b * B::CHUNKS + c;
                let xv = _mm256_loadu_si256(xq.add(32 * xb) as *const __m256i);
                let (dx, sx) = (*xd.add(xb), *xs.add(xb));
                for r in 0..R {
                    let (w, d, m) = B::decode_int(rows.add(r * row_bytes + b * B::BYTES), c);
                    acc[r] = _mm256_fmadd_ps(int_dot::<B>(w, xv), _mm256_set1_ps(d * dx), acc[r]);
                    mins[r] += m * sx;
                }
            }
        }
    }
    let mut out = [0f32; R];
    for r in 0..R {
        out[r] = hsum(acc[r]) + mins[r];
    }
    out
}

/// One row dotted with `T` tokens' quantized activations.
///
/// # Safety
/// `row` holds `blocks` blocks of `B`; each of the `T` tokens from `xq` / `xd` / `xs` holds
/// `blocks * B::CHUNKS` blocks (the next token `blocks * B::CHUNKS` blocks further); AVX2,
/// FMA and F16C are present.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_dot_tokens<B: IntBlock, const T: usize>(
    row: *const u8,
    xq: *const i8,
    xd: *const f32,
    xs: *const f32,
    blocks: usize,
) -> [f32; T] {
    let per_token = blocks * B::CHUNKS;
    let mut acc = [_mm256_setzero_ps(); T];
    let mut mins = [0f32; T];
    // SAFETY: every block and chunk address is inside the row / activations by the caller's
    // contract.
    unsafe {
        for b in 0..blocks {
            for c in 0..B::CHUNKS {
                let (w, d, m) = B::decode_int(row.add(b * B::BYTES), c);
                for t in 0..T {
                    let xb = t * per_token + b * B::CHUNKS + c;
                    let xv = _mm256_loadu_si256(xq.add(32 * xb) as *const __m256i);
                    let f = int_dot::<B>(w, xv);
                    acc[t] = _mm256_fmadd_ps(f, _mm256_set1_ps(d * *xd.add(xb)), acc[t]);
                    mins[t] += m * *xs.add(xb);
                }
            }
        }
    }
    let mut out = [0f32; T];
    for t in 0..T {
        out[t] = hsum(acc[t]) + mins[t];
    }
    out
}

/// `y[t][r] = row_r · x[t]` on the 8-bit activation path: four rows at a time for one token,
/// four tokens at a time for several.
#[target_feature(enable = "avx2,fma,f16c")]
fn q8_matmul_impl<B: IntBlock>(
    rows: &[u8],
    row_bytes: usize,
    x: &crate::q8::Q8Acts,
    y: &mut [f32],
    y_stride: usize,
) {
    let blocks = row_bytes / B::BYTES;
    let per_token = blocks * B::CHUNKS;
    let tokens = x.tokens();
    let n = rows.len() / row_bytes;
    assert!(row_bytes.is_multiple_of(B::BYTES) && x.cols() == per_token * 32);
    assert!(x.q.len() >= tokens * per_token * 32 && x.d.len() >= tokens * per_token);
    assert!(x.s.len() >= tokens * per_token);
    assert!(tokens == 0 || y.len() >= (tokens - 1) * y_stride + n);
    let (xq, xd, xs) = (x.q.as_ptr(), x.d.as_ptr(), x.s.as_ptr());
    // SAFETY: the asserts above bound every row, every token's activations and every write.
    unsafe {
        if tokens == 1 {
            // Row by row: on this path every format streamed fastest so (see `Block::ROWS`).
            by_row_groups(
                rows,
                row_bytes,
                &mut y[..n],
                // SAFETY: as for the whole block; `p` starts a row with one row from it.
                |p| q8_dot_rows::<B, 1>(p, row_bytes, xq, xd, xs, blocks),
                |p| q8_dot_rows::<B, 1>(p, row_bytes, xq, xd, xs, blocks)[0],
            );
            return;
        }
        for r in 0..n {
            let row = rows.as_ptr().add(r * row_bytes);
            let mut t = 0;
            while t + 4 <= tokens {
                let at = t * per_token;
                let v = q8_dot_tokens::<B, 4>(row, xq.add(32 * at), xd.add(at), xs.add(at), blocks);
                for (i, v) in v.into_iter().enumerate() {
                    y[(t + i) * y_stride + r] = v;
                }
                t += 4;
            }
            while t < tokens {
                let at = t * per_token;
                let [v] =
                    q8_dot_tokens::<B, 1>(row, xq.add(32 * at), xd.add(at), xs.add(at), blocks);
                y[t * y_stride + r] = v;
                t += 1;
            }
        }
    }
}

/// `y[t][r] = row_r · x[t]` with 8-bit activations.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C.
///
/// # Panics
/// When `fmt` has no 8-bit path (the caller checks [`crate::q8::has_q8_path`]).
pub(crate) unsafe fn q8_matmul(
    fmt: Format,
    rows: &[u8],
    row_bytes: usize,
    x: &crate::q8::Q8Acts,
    y: &mut [f32],
    y_stride: usize,
) {
    // SAFETY: the caller checked the CPU features.
    unsafe {
        match fmt {
            Format::Q8_0 => q8_matmul_impl::<Q8_0>(rows, row_bytes, x, y, y_stride),
            Format::Q4_0 => q8_matmul_impl::<Q4_0>(rows, row_bytes, x, y, y_stride),
            Format::Q4_1 => q8_matmul_impl::<Q4_1>(rows, row_bytes, x, y, y_stride),
            Format::Q5_0 => q8_matmul_impl::<Q5_0>(rows, row_bytes, x, y, y_stride),
            Format::Q5_1 => q8_matmul_impl::<Q5_1>(rows, row_bytes, x, y, y_stride),
            Format::Q4K => q8_matmul_impl::<Q4K>(rows, row_bytes, x, y, y_stride),
            Format::Q5K => q8_matmul_impl::<Q5K>(rows, row_bytes, x, y, y_stride),
            other => panic!("{other} has no 8-bit activation path"),
        }
    }
}

//! Kernel tests: every instruction set the CPU has against the scalar reference, the scalar
//! reference against an f64 dot product over the decoded weights, hostile blocks (zero, all
//! nibbles 15, negative and subnormal scales), ragged shapes and several thread counts.

use half::f16;

use crate::attention::{self, Group, Kv};
use crate::format::{ALL, Format, decode_chunk, decode_row};
use crate::isa::{self, Isa};
use crate::matrix::{Bytes, Pool, QMatrix};
use crate::q8::{self, Q8Acts};
use crate::quantize::{quantize_matrix, quantize_row};
use crate::{decode_chunk_with, ops};

/// xorshift64, so every machine draws the same numbers.
struct Rng(u64);

impl Rng {
    fn u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f32(&mut self) -> f32 {
        (self.u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
}

/// Scales written into hostile blocks: ordinary, negative, zero, subnormal, large.
const SCALES: [f32; 6] = [0.0125, -0.75, 0.0, 3.0e-7, -6.0e-8, 1000.0];

/// Offsets of a block's f16 scale fields.
fn scale_offsets(fmt: Format) -> &'static [usize] {
    match fmt {
        Format::Q8_0 | Format::Q4_0 | Format::Q5_0 => &[0],
        Format::Q4_1 | Format::Q5_1 | Format::Q4K | Format::Q5K => &[0, 2],
        Format::Q6K => &[208],
        Format::F32 | Format::F16 | Format::BF16 => &[],
    }
}

/// A block of random bytes with sane (finite) scales and, for float formats, finite values.
fn hostile_block(fmt: Format, rng: &mut Rng, fill: Option<u8>, scale: f32) -> Vec<u8> {
    let mut b: Vec<u8> = (0..fmt.block_bytes())
        .map(|_| fill.unwrap_or(rng.u64() as u8))
        .collect();
    match fmt {
        Format::F32 => {
            let v: Vec<f32> = rng.vec(32).iter().map(|x| x * scale).collect();
            b = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        }
        Format::F16 | Format::BF16 => {
            let v = rng.vec(32);
            b.clear();
            quantize_row(
                fmt,
                &v.iter().map(|x| x * scale).collect::<Vec<_>>(),
                &mut b,
            );
        }
        _ => {
            for &o in scale_offsets(fmt) {
                b[o..o + 2].copy_from_slice(&f16::from_f32(scale).to_le_bytes());
            }
        }
    }
    b
}

fn hostile_blocks(fmt: Format) -> Vec<Vec<u8>> {
    let mut rng = Rng(0x5eed ^ fmt.block_bytes() as u64);
    let mut out = Vec::new();
    for &s in &SCALES {
        out.push(hostile_block(fmt, &mut rng, None, s));
        out.push(hostile_block(fmt, &mut rng, Some(0x00), s));
        out.push(hostile_block(fmt, &mut rng, Some(0xFF), s));
    }
    out
}

#[test]
fn every_isa_decodes_every_hostile_block_like_the_scalar_reference() {
    for fmt in ALL {
        for block in hostile_blocks(fmt) {
            for c in 0..fmt.chunks() {
                let mut want = [0f32; 32];
                decode_chunk(fmt, &block, c, &mut want);
                for isa in Isa::available() {
                    let mut got = [0f32; 32];
                    decode_chunk_with(isa, fmt, &block, c, &mut got);
                    for i in 0..32 {
                        // A fused multiply-add rounds once where the reference rounds twice.
                        let tol = 1e-6 * want[i].abs().max(1e-30);
                        assert!(
                            (got[i] - want[i]).abs() <= tol,
                            "{fmt} {isa} chunk {c} value {i}: {} vs {}",
                            got[i],
                            want[i]
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn nibble_fifteen_and_zero_blocks_decode_to_their_exact_values() {
    // Q4_1 with d = 0.5, m = -1: nibble 15 is 6.5, nibble 0 is -1.
    let mut b = vec![0u8; 20];
    b[0..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
    b[2..4].copy_from_slice(&f16::from_f32(-1.0).to_le_bytes());
    b[4..20].fill(0xFF);
    for isa in Isa::available() {
        let mut out = [0f32; 32];
        decode_chunk_with(isa, Format::Q4_1, &b, 0, &mut out);
        assert_eq!(out, [6.5; 32], "{isa}");
    }
    b[4..20].fill(0x00);
    for isa in Isa::available() {
        let mut out = [0f32; 32];
        decode_chunk_with(isa, Format::Q4_1, &b, 0, &mut out);
        assert_eq!(out, [-1.0; 32], "{isa}");
    }
    // An all-zero block of any format decodes to zeros.
    for fmt in ALL {
        let zero = vec![0u8; fmt.block_bytes()];
        for isa in Isa::available() {
            for c in 0..fmt.chunks() {
                let mut out = [1f32; 32];
                decode_chunk_with(isa, fmt, &zero, c, &mut out);
                assert!(out.iter().all(|&v| v == 0.0), "{fmt} {isa}");
            }
        }
    }
}

/// Worst error of quantizing then decoding, relative to the block's range.
fn roundtrip_tolerance(fmt: Format) -> f32 {
    match fmt {
        Format::F32 => 0.0,
        Format::F16 => 1e-3,
        Format::BF16 => 8e-3,
        Format::Q8_0 => 1.0 / 127.0,
        Format::Q6K => 1.0 / 16.0,
        Format::Q5_0 | Format::Q5_1 | Format::Q5K => 1.0 / 15.0,
        Format::Q4_0 | Format::Q4_1 | Format::Q4K => 1.0 / 7.0,
    }
}

#[test]
fn quantizing_then_decoding_stays_within_each_formats_step() {
    let mut rng = Rng(42);
    for fmt in ALL {
        let x = rng.vec(512);
        let mut q = Vec::new();
        quantize_row(fmt, &x, &mut q);
        assert_eq!(q.len(), fmt.row_bytes(512).unwrap(), "{fmt}");
        let mut back = vec![0f32; 512];
        decode_row(fmt, &q, &mut back);
        let worst = x
            .iter()
            .zip(&back)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // Values are in [-1, 1): the range of a block is at most 2.
        assert!(
            worst <= 2.0 * roundtrip_tolerance(fmt) + 1e-6,
            "{fmt}: worst error {worst}"
        );
    }
}

/// Σ|w·x| in f64, and the f64 dot product, over the scalar-decoded rows.
fn reference(m: &QMatrix, x: &[f32]) -> Vec<(f64, f64)> {
    let mut w = vec![0f32; m.cols()];
    (0..m.rows())
        .map(|r| {
            m.decode_row(r, &mut w);
            let dot = w.iter().zip(x).map(|(&a, &b)| a as f64 * b as f64).sum();
            let mag = w
                .iter()
                .zip(x)
                .map(|(&a, &b)| (a as f64 * b as f64).abs())
                .sum();
            (dot, mag)
        })
        .collect()
}

fn matrix(fmt: Format, rows: usize, cols: usize, seed: u64) -> QMatrix {
    let w = Rng(seed).vec(rows * cols);
    QMatrix::new(
        fmt,
        rows,
        cols,
        Bytes::from_vec(quantize_matrix(fmt, &w, cols)),
    )
    .unwrap()
}

/// f32 accumulation over `cols` terms: a few ulps per term, relative to Σ|w·x|.
fn tolerance(cols: usize) -> f64 {
    4.0 * f32::EPSILON as f64 * (cols as f64).sqrt()
}

#[test]
fn matvec_matches_an_f64_dot_on_every_isa_thread_count_and_ragged_shape() {
    let pools = [Pool::new(1).unwrap(), Pool::new(3).unwrap()];
    for fmt in ALL {
        // 16,640 columns: past the 512 chunks whose activation sums the AVX2 path keeps on
        // the stack (it then sums per chunk and row).
        for (rows, cols) in [(1, 256), (7, 512), (13, 256), (130, 768), (5, 16_640)] {
            let m = matrix(fmt, rows, cols, rows as u64 * 31 + cols as u64);
            let x = Rng(7).vec(cols);
            let want = reference(&m, &x);
            for isa in Isa::available() {
                for pool in &pools {
                    let mut y = vec![f32::NAN; rows];
                    m.matvec_with(isa, pool, &x, &mut y).unwrap();
                    for (r, (&got, &(dot, mag))) in y.iter().zip(&want).enumerate() {
                        let err = (got as f64 - dot).abs();
                        assert!(
                            err <= tolerance(cols) * mag.max(1e-30),
                            "{fmt} {isa} {} threads {rows}x{cols} row {r}: {got} vs {dot} (Σ|wx| {mag})",
                            pool.threads()
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn simd_matvec_equals_scalar_within_a_millionth_of_the_magnitude() {
    let pool = Pool::new(2).unwrap();
    for fmt in ALL {
        let m = matrix(fmt, 37, 256, 9);
        let x = Rng(11).vec(256);
        let want = reference(&m, &x);
        let mut scalar = vec![0f32; 37];
        m.matvec_with(Isa::Scalar, &pool, &x, &mut scalar).unwrap();
        for isa in Isa::available() {
            let mut y = vec![0f32; 37];
            m.matvec_with(isa, &pool, &x, &mut y).unwrap();
            for r in 0..37 {
                assert!(
                    ((y[r] - scalar[r]) as f64).abs() <= 1e-6 * want[r].1,
                    "{fmt} {isa} row {r}: {} vs scalar {}",
                    y[r],
                    scalar[r]
                );
            }
        }
    }
}

#[test]
fn matmul_equals_matvec_per_token_for_ragged_token_counts() {
    let pools = [Pool::new(1).unwrap(), Pool::new(2).unwrap()];
    for fmt in ALL {
        let (rows, cols) = (70, 512);
        let m = matrix(fmt, rows, cols, 5);
        for tokens in [2, 5, 9] {
            let x = Rng(tokens as u64).vec(tokens * cols);
            for isa in Isa::available() {
                for pool in &pools {
                    let mut y = vec![f32::NAN; tokens * rows];
                    m.matmul_with(isa, pool, &x, &mut y, tokens).unwrap();
                    for t in 0..tokens {
                        let xt = &x[t * cols..(t + 1) * cols];
                        let want = reference(&m, xt);
                        for r in 0..rows {
                            let (dot, mag) = want[r];
                            let got = y[t * rows + r] as f64;
                            assert!(
                                (got - dot).abs() <= tolerance(cols) * mag.max(1e-30),
                                "{fmt} {isa} token {t} row {r}: {got} vs {dot}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn shapes_that_do_not_fit_are_errors_not_panics() {
    let pool = Pool::new(1).unwrap();
    // 100 columns are not whole Q4_0 blocks.
    assert!(QMatrix::new(Format::Q4_0, 1, 100, Bytes::from_vec(vec![0; 100])).is_err());
    // Too few bytes for the shape.
    assert!(QMatrix::new(Format::Q8_0, 2, 32, Bytes::from_vec(vec![0; 34])).is_err());
    let m = matrix(Format::Q8_0, 4, 32, 1);
    let mut y = vec![0f32; 4];
    assert!(m.matvec(&pool, &[0.0; 31], &mut y).is_err());
    assert!(m.matmul(&pool, &[0.0; 64], &mut y, 2).is_err());
    // No tokens at all is an empty product, not a division by zero.
    m.matmul(&pool, &[], &mut [], 0).unwrap();
    m.matmul_q8(&pool, &Q8Acts::new(), &mut []).unwrap();
    // A byte range outside its owner.
    let owner: std::sync::Arc<dyn AsRef<[u8]> + Send + Sync> = std::sync::Arc::new(vec![0u8; 8]);
    assert!(Bytes::new(owner.clone(), 4, 8).is_err());
    assert!(Bytes::new(owner, usize::MAX, 2).is_err());
}

/// Attention over a cache in f64 from the very values stored: scores, a max-shifted softmax,
/// the weighted sum of the value rows.
fn attention_f64(q: &[f32], k: &[f64], v: &[f64], g: Group, scale: f64) -> Vec<f64> {
    let hd = g.head_dim;
    let mut out = Vec::new();
    for qr in q.chunks_exact(hd) {
        let s: Vec<f64> = (0..g.seen)
            .map(|j| {
                let row = &k[j * g.stride + g.offset..][..hd];
                qr.iter().zip(row).map(|(&x, y)| x as f64 * y).sum::<f64>() * scale
            })
            .collect();
        let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        out.extend((0..hd).map(|d| {
            (0..g.seen)
                .map(|j| e[j] / sum * v[j * g.stride + g.offset + d])
                .sum::<f64>()
        }));
    }
    out
}

#[test]
fn attention_equals_an_f64_reference_on_every_isa_and_cache_dtype() {
    let mut rng = Rng(3);
    // Head sizes on and off the eight-lane tile, query heads per group below, at and above the
    // four the AVX2 loop holds at once, the second of two key/value heads, no position to many.
    for hd in [8, 12, 64] {
        for rep in [1, 3, 5] {
            for seen in [0, 1, 7, 130] {
                for big in [false, true] {
                    let kv_heads = 2;
                    let g = Group {
                        stride: kv_heads * hd,
                        offset: hd,
                        head_dim: hd,
                        seen,
                    };
                    // Large values push raw scores to ~1e3: the softmax must shift by its max.
                    let amp = if big { 40.0 } else { 1.0 };
                    let q: Vec<f32> = rng.vec(rep * hd).iter().map(|x| x * amp).collect();
                    let raw_k: Vec<f32> =
                        rng.vec(seen * g.stride).iter().map(|x| x * amp).collect();
                    let raw_v = rng.vec(seen * g.stride);
                    let k16: Vec<f16> = raw_k.iter().map(|&x| f16::from_f32(x)).collect();
                    let v16: Vec<f16> = raw_v.iter().map(|&x| f16::from_f32(x)).collect();
                    let scale = 1.0 / (hd as f32).sqrt();
                    let vmax = raw_v.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
                    for isa in Isa::available() {
                        for half in [true, false] {
                            let (k, v, kf, vf): (Kv<'_>, Kv<'_>, Vec<f64>, Vec<f64>) = if half {
                                (
                                    Kv::F16(&k16),
                                    Kv::F16(&v16),
                                    k16.iter().map(|x| x.to_f64()).collect(),
                                    v16.iter().map(|x| x.to_f64()).collect(),
                                )
                            } else {
                                (
                                    Kv::F32(&raw_k),
                                    Kv::F32(&raw_v),
                                    raw_k.iter().map(|&x| x as f64).collect(),
                                    raw_v.iter().map(|&x| x as f64).collect(),
                                )
                            };
                            let want = attention_f64(&q, &kf, &vf, g, scale as f64);
                            let mut out = vec![f32::NAN; rep * hd];
                            let mut scores = Vec::new();
                            attention::attend_with(isa, &q, k, v, g, scale, &mut scores, &mut out);
                            // The output is a convex combination of value rows: its error is
                            // bounded by the largest value times the scores' f32 error (~1e-3
                            // relative for scores of ~1e3).
                            let tol = if big { 2e-3 } else { 1e-5 } * vmax.max(1e-30);
                            for (i, (&o, w)) in out.iter().zip(&want).enumerate() {
                                let w = if seen == 0 { 0.0 } else { *w };
                                assert!(
                                    (o as f64 - w).abs() <= tol,
                                    "{isa} f16={half} hd={hd} rep={rep} seen={seen} big={big} [{i}]: {o} vs {w}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
#[should_panic(expected = "need")]
fn attention_refuses_a_cache_shorter_than_the_positions_it_is_told_to_see() {
    let g = Group {
        stride: 8,
        offset: 0,
        head_dim: 8,
        seen: 3,
    };
    let kv = vec![f16::ZERO; 16];
    attention::attend(
        &[0.0; 8],
        Kv::F16(&kv),
        Kv::F16(&kv),
        g,
        1.0,
        &mut Vec::new(),
        &mut [0.0; 8],
    );
}

#[test]
fn interleaved_rope_on_permuted_rows_equals_rotate_half() {
    // llama.cpp stores Q/K rows so that pair (2i, 2i+1) is Hugging Face's (i, i + hd/2).
    let hd = 16;
    let x = Rng(8).vec(hd);
    let (cos, sin): (Vec<f32>, Vec<f32>) = (0..hd / 2)
        .map(|i| ((i as f32 * 0.3).cos(), (i as f32 * 0.3).sin()))
        .unzip();
    let mut half = x.clone();
    ops::rope(ops::RopeLayout::RotateHalf, &mut half, &cos, &sin);
    let mut inter: Vec<f32> = (0..hd)
        .map(|j| x[if j % 2 == 0 { j / 2 } else { hd / 2 + j / 2 }])
        .collect();
    ops::rope(ops::RopeLayout::Interleaved, &mut inter, &cos, &sin);
    for (j, v) in inter.iter().enumerate() {
        let hf = if j % 2 == 0 { j / 2 } else { hd / 2 + j / 2 };
        assert_eq!(*v, half[hf], "dimension {j}");
    }
}

#[test]
fn norm_softmax_and_silu_match_f64() {
    let x = Rng(12).vec(96);
    let w = Rng(13).vec(96);
    let mut out = vec![0f32; 96];
    ops::rms_norm(&x, &w, 1e-5, &mut out);
    let ms: f64 = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / 96.0;
    let inv = 1.0 / (ms + 1e-5).sqrt();
    for i in 0..96 {
        let want = x[i] as f64 * inv * w[i] as f64;
        assert!((out[i] as f64 - want).abs() < 1e-5, "rms_norm {i}");
    }
    let mut s = vec![1000.0, 1001.0, f32::NEG_INFINITY];
    ops::softmax(&mut s);
    assert!((s[1] as f64 - 1.0 / (1.0 + (-1f64).exp())).abs() < 1e-6 && s[2] == 0.0);
    let mut g = vec![-2.0f32, 0.0, 3.0];
    ops::silu_mul(&mut g, &[1.0, 5.0, 2.0]);
    let silu = |v: f64| v / (1.0 + (-v).exp());
    for (i, (gv, u)) in [(-2.0, 1.0), (0.0, 5.0), (3.0, 2.0)]
        .into_iter()
        .enumerate()
    {
        assert!((g[i] as f64 - silu(gv) * u).abs() < 1e-6);
    }
}

#[test]
fn the_environment_variable_forces_or_explains() {
    assert_eq!(isa::choose(Some("scalar")).isa, Isa::Scalar);
    let auto = isa::choose(None).isa;
    assert_eq!(isa::choose(Some("auto")).isa, auto);
    let bogus = isa::choose(Some("neon9"));
    assert_eq!(bogus.isa, auto);
    assert!(bogus.reason.contains("neon9") && bogus.reason.contains("scalar, avx2"));
    if Isa::Avx2.supported() {
        assert_eq!(isa::choose(Some("avx2")).isa, Isa::Avx2);
        assert_eq!(auto, Isa::Avx2);
    }
    // The process-wide choice follows what the test runner's environment says.
    let forced = std::env::var(isa::ENV).ok();
    assert_eq!(isa::current().isa, isa::choose(forced.as_deref()).isa);
}

/// Rows of hostile blocks (every fill and scale of [`hostile_blocks`], cycled) as a matrix.
fn hostile_matrix(fmt: Format, rows: usize, cols: usize) -> QMatrix {
    let blocks = hostile_blocks(fmt);
    let per_row = cols / fmt.block_values();
    let bytes: Vec<u8> = (0..rows * per_row)
        .flat_map(|i| blocks[(i * 7) % blocks.len()].clone())
        .collect();
    QMatrix::new(fmt, rows, cols, Bytes::from_vec(bytes)).unwrap()
}

#[test]
fn integer_chunks_are_the_decoded_weights() {
    for fmt in ALL.into_iter().filter(|f| q8::has_q8_path(*f)) {
        for block in hostile_blocks(fmt) {
            for c in 0..fmt.chunks() {
                let mut want = [0f32; 32];
                decode_chunk(fmt, &block, c, &mut want);
                let mut q = [0i32; 32];
                let (d, m) = q8::decode_chunk_int(fmt, &block, c, &mut q);
                for i in 0..32 {
                    let got = d * q[i] as f32 + m;
                    // (q - 8) * d against q * d - 8d: two roundings against one.
                    let tol = 2.0 * f32::EPSILON * (d.abs() * 32.0 + m.abs()).max(1e-30);
                    assert!(
                        (got - want[i]).abs() <= tol,
                        "{fmt} chunk {c} value {i}: {got} vs {}",
                        want[i]
                    );
                }
            }
        }
    }
}

#[test]
fn activations_quantize_within_half_a_step_and_keep_their_sums() {
    let mut rng = Rng(3);
    let mut x = rng.vec(96);
    x[32..64].fill(0.0); // an all-zero block has scale 0, not NaN
    x[64] = 1e-30; // a subnormal-sized block
    let mut a = Q8Acts::new();
    a.quantize(&x, 96).unwrap();
    let back = a.dequantized();
    for (i, (&v, &b)) in x.iter().zip(&back).enumerate() {
        let step = a.d[i / 32];
        assert!((v - b).abs() <= step / 2.0 + 1e-30, "value {i}: {v} vs {b}");
        assert!(b.is_finite());
    }
    for blk in 0..3 {
        let sum: i32 = a.q[blk * 32..blk * 32 + 32].iter().map(|&q| q as i32).sum();
        assert_eq!(a.s[blk], a.d[blk] * sum as f32);
        assert!(a.q[blk * 32..blk * 32 + 32].iter().all(|&q| q != -128));
    }
    assert!(a.quantize(&x[..95], 95).is_err());
    assert!(a.quantize(&x[..64], 96).is_err());
}

/// The 8-bit path's product against f64 over the decoded weights and the dequantized
/// activations (what it computes, exactly), on every ISA, thread count and token count; SIMD
/// against scalar within a millionth of Σ|w·x|.
#[test]
fn q8_products_match_an_f64_dot_of_what_they_multiply_on_every_isa() {
    let pools = [Pool::new(1).unwrap(), Pool::new(2).unwrap()];
    for fmt in ALL.into_iter().filter(|f| q8::has_q8_path(*f)) {
        for (rows, cols, hostile) in [(13, 256, false), (70, 512, false), (21, 512, true)] {
            let m = if hostile {
                hostile_matrix(fmt, rows, cols)
            } else {
                matrix(fmt, rows, cols, rows as u64 + 17)
            };
            for tokens in [1, 3, 6] {
                let x = Rng(tokens as u64 * 5 + 1).vec(tokens * cols);
                let mut a = Q8Acts::new();
                a.quantize(&x, cols).unwrap();
                let xd = a.dequantized();
                let mut scalar = vec![f32::NAN; tokens * rows];
                m.matmul_q8_with(Isa::Scalar, &pools[0], &a, &mut scalar)
                    .unwrap();
                for isa in Isa::available() {
                    for pool in &pools {
                        let mut y = vec![f32::NAN; tokens * rows];
                        m.matmul_q8_with(isa, pool, &a, &mut y).unwrap();
                        for t in 0..tokens {
                            let want = reference(&m, &xd[t * cols..(t + 1) * cols]);
                            for r in 0..rows {
                                let (dot, mag) = want[r];
                                let got = y[t * rows + r];
                                assert!(
                                    (got as f64 - dot).abs() <= tolerance(cols) * mag.max(1e-30),
                                    "{fmt} {isa} token {t} row {r}: {got} vs {dot}"
                                );
                                let s = scalar[t * rows + r];
                                assert!(
                                    ((got - s) as f64).abs() <= 1e-6 * mag.max(1e-30),
                                    "{fmt} {isa} token {t} row {r}: {got} vs scalar {s}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn q8_products_stay_within_the_activation_rounding_of_the_f32_path() {
    let pool = Pool::new(2).unwrap();
    for fmt in ALL.into_iter().filter(|f| q8::has_q8_path(*f)) {
        let (rows, cols) = (40, 512);
        let m = matrix(fmt, rows, cols, 77);
        let x = Rng(78).vec(cols);
        let mut a = Q8Acts::new();
        a.quantize(&x, cols).unwrap();
        let mut exact = vec![0f32; rows];
        m.matvec(&pool, &x, &mut exact).unwrap();
        let mut y = vec![0f32; rows];
        m.matmul_q8(&pool, &a, &mut y).unwrap();
        let mut w = vec![0f32; cols];
        for r in 0..rows {
            m.decode_row(r, &mut w);
            // Each activation moves by at most half its block's step.
            let bound: f32 = w
                .iter()
                .enumerate()
                .map(|(i, wv)| wv.abs() * a.d[i / 32] / 2.0)
                .sum();
            assert!(
                (y[r] - exact[r]).abs() <= bound * 1.001 + 1e-5,
                "{fmt} row {r}: {} vs f32 {} (bound {bound})",
                y[r],
                exact[r]
            );
        }
    }
}

#[test]
fn formats_without_an_8_bit_path_are_an_error() {
    let pool = Pool::new(1).unwrap();
    let mut a = Q8Acts::new();
    a.quantize(&[0.5; 256], 256).unwrap();
    for fmt in ALL.into_iter().filter(|f| !q8::has_q8_path(*f)) {
        let m = matrix(fmt, 4, 256, 1);
        assert!(!m.has_q8_path());
        let err = m.matmul_q8(&pool, &a, &mut [0.0; 4]).unwrap_err();
        assert!(err.to_string().contains(fmt.name()), "{err}");
    }
    // Activations of the wrong width.
    let m = matrix(Format::Q4_1, 4, 512, 1);
    assert!(m.matmul_q8(&pool, &a, &mut [0.0; 4]).is_err());
}

/// The spinning install: products inside it use every thread and equal the plain pool's; the
/// spinners stop when the closure returns (the call comes back) and when it panics (the panic
/// reaches the caller instead of a hang); two callers on one pool at once both finish.
#[test]
fn install_spinning_runs_products_returns_and_survives_panics_and_concurrent_callers() {
    let pool = std::sync::Arc::new(Pool::new(3).unwrap());
    let m = matrix(Format::Q4_1, 4096, 256, 11);
    let x = Rng(12).vec(256);
    let mut want = vec![0f32; 4096];
    m.matvec(&pool, &x, &mut want).unwrap();
    let threads_seen = std::sync::Mutex::new(std::collections::HashSet::new());
    let got = pool.install_spinning(|| {
        let mut y = vec![0f32; 4096];
        for _ in 0..50 {
            m.matvec(&pool, &x, &mut y).unwrap();
        }
        pool.install(|| {
            use rayon::prelude::*;
            (0..64).into_par_iter().for_each(|_| {
                threads_seen
                    .lock()
                    .unwrap()
                    .insert(rayon::current_thread_index());
                std::thread::sleep(std::time::Duration::from_millis(2));
            })
        });
        y
    });
    assert_eq!(got, want);
    assert!(
        threads_seen.lock().unwrap().len() > 1,
        "the spinners took no work"
    );

    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.install_spinning(|| panic!("inside the step"))
    }));
    assert!(panicked.is_err());

    let callers: Vec<_> = (0..2)
        .map(|i| {
            let (pool, m, x) = (pool.clone(), m.clone(), x.clone());
            std::thread::spawn(move || {
                pool.install_spinning(|| {
                    let mut y = vec![0f32; 4096];
                    for _ in 0..20 {
                        m.matvec(&pool, &x, &mut y).unwrap();
                    }
                    (i, y)
                })
            })
        })
        .collect();
    for c in callers {
        let (_, y) = c.join().unwrap();
        assert_eq!(y, want);
    }
    // A pool of one runs the closure plainly.
    assert_eq!(Pool::new(1).unwrap().install_spinning(|| 7), 7);
}

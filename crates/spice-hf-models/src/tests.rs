//! Unit tests: dequantization against hand-computed tables and the reference reader, and
//! hostile GGUF files.

use std::path::Path;

use crate::Error;
use crate::gguf::{GgmlType, GgufFile, MetaValue};
use crate::quant::dequantize;

fn block(size: usize, parts: &[(usize, &[u8])]) -> Vec<u8> {
    let mut b = vec![0u8; size];
    for (at, bytes) in parts {
        b[*at..*at + bytes.len()].copy_from_slice(bytes);
    }
    b
}

fn check(ty: GgmlType, raw: &[u8], n: usize, expected: &[(usize, f32)]) {
    let v = dequantize(ty, raw, n).unwrap();
    assert_eq!(v.len(), n);
    for &(i, want) in expected {
        assert!(
            (v[i] - want).abs() < 1e-6,
            "{ty} element {i}: got {}, want {want}",
            v[i]
        );
    }
}

// Each table was worked out by hand from the block layout (f16 scale bytes: 0x3800 = 0.5,
// 0x4000 = 2.0, 0x3400 = 0.25, 0xBC00 = -1.0, 0x3C00 = 1.0).
#[test]
fn dequantize_tables() {
    check(
        GgmlType::F32,
        &[0, 0, 0x80, 0x3F, 0, 0, 0, 0xC0],
        2,
        &[(0, 1.0), (1, -2.0)],
    );
    check(
        GgmlType::F16,
        &[0x00, 0x3C, 0x00, 0xC0],
        2,
        &[(0, 1.0), (1, -2.0)],
    );
    check(
        GgmlType::BF16,
        &[0x80, 0x3F, 0x40, 0xC0],
        2,
        &[(0, 1.0), (1, -3.0)],
    );

    let q8 = block(
        34,
        &[(0, &[0x00, 0x38]), (2, &[0x80, 0xFF, 0x00, 0x01, 0x7F])],
    );
    check(
        GgmlType::Q8_0,
        &q8,
        32,
        &[
            (0, -64.0),
            (1, -0.5),
            (2, 0.0),
            (3, 0.5),
            (4, 63.5),
            (31, 0.0),
        ],
    );

    let q4_0 = block(18, &[(0, &[0x00, 0x40]), (2, &[0x0F, 0x88, 0x3A])]);
    check(
        GgmlType::Q4_0,
        &q4_0,
        32,
        &[
            (0, 14.0),
            (16, -16.0),
            (1, 0.0),
            (17, 0.0),
            (2, 4.0),
            (18, -10.0),
            (3, -16.0),
            (31, -16.0),
        ],
    );

    let q4_1 = block(20, &[(0, &[0x00, 0x34, 0x00, 0xBC]), (4, &[0xF0, 0x21])]);
    check(
        GgmlType::Q4_1,
        &q4_1,
        32,
        &[
            (0, -1.0),
            (16, 2.75),
            (1, -0.75),
            (17, -0.5),
            (2, -1.0),
            (31, -1.0),
        ],
    );

    let q5_0 = block(
        22,
        &[
            (0, &[0x00, 0x3C]),
            (2, &[0x01, 0x00, 0x01, 0x00]),
            (6, &[0x21]),
        ],
    );
    check(
        GgmlType::Q5_0,
        &q5_0,
        32,
        &[(0, 1.0), (16, 2.0), (1, -16.0), (17, -16.0)],
    );

    let q5_1 = block(
        24,
        &[
            (0, &[0x00, 0x38, 0x00, 0x3C]),
            (4, &[0x00, 0x00, 0x00, 0x80]),
            (8, &[0x01]),
            (23, &[0xF0]),
        ],
    );
    check(
        GgmlType::Q5_1,
        &q5_1,
        32,
        &[(15, 1.0), (31, 16.5), (0, 1.5), (16, 1.0)],
    );

    // Q4_K: d = 1, dmin = 0.5; sub-block 0 scale 2 min 4, sub-block 1 scale 3 min 1.
    let q4k = block(
        144,
        &[
            (0, &[0x00, 0x3C, 0x00, 0x38]),
            (4, &[2, 3, 0, 0, 4, 1]),
            (16, &[0x21]),
        ],
    );
    check(
        GgmlType::Q4K,
        &q4k,
        256,
        &[
            (0, 0.0),
            (32, 5.5),
            (1, -2.0),
            (33, -0.5),
            (64, 0.0),
            (255, 0.0),
        ],
    );

    // Q5_K: as Q4_K plus a high bit for element 0 (qh[0] bit 0) and element 32 (bit 1).
    let q5k = block(
        176,
        &[
            (0, &[0x00, 0x3C, 0x00, 0x38]),
            (4, &[2, 3, 0, 0, 4, 1]),
            (16, &[0x03]),
            (48, &[0x21]),
        ],
    );
    check(
        GgmlType::Q5K,
        &q5k,
        256,
        &[(0, 32.0), (32, 53.5), (1, -2.0), (33, -0.5)],
    );

    // Q6_K: d = 1, scales[0] = 1, scales[2] = 2; ql[0] = 5, qh[0] = 0b10 (high bits 2 for q1).
    let q6k = block(
        210,
        &[
            (0, &[0x05]),
            (128, &[0x02]),
            (192, &[1, 0, 2]),
            (208, &[0x00, 0x3C]),
        ],
    );
    check(
        GgmlType::Q6K,
        &q6k,
        256,
        &[(0, 5.0), (1, -32.0), (32, -64.0), (64, 0.0)],
    );

    assert!(dequantize(GgmlType::Q4_0, &q4_0[..17], 32).is_err());
    assert!(dequantize(GgmlType::Other(99), &[], 0).is_err());
}

/// A tiny GGUF writer for hostile-input tests.
#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend(v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend(v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64);
        self.0.extend(s.as_bytes());
        self
    }
}

/// A valid file: 2 metadata entries, one 32-element Q8_0 tensor.
fn valid() -> Vec<u8> {
    let mut w = Writer::default();
    w.u32(0x4655_4747).u32(3).u64(1).u64(3);
    w.str("general.architecture").u32(8).str("llama");
    w.str("llama.block_count").u32(4).u32(2);
    w.str("tokenizer.ggml.tokens")
        .u32(9)
        .u32(8)
        .u64(2)
        .str("a")
        .str("b");
    w.str("w").u32(1).u64(32).u32(8).u64(0);
    while w.0.len() % 32 != 0 {
        w.0.push(0);
    }
    w.0.extend(block(34, &[(0, &[0x00, 0x3C]), (2, &[3])]));
    w.0
}

fn parse(bytes: &[u8]) -> crate::Result<GgufFile> {
    GgufFile::parse(bytes, bytes.len() as u64, Path::new("t.gguf"))
}

#[test]
fn gguf_valid_file_parses() {
    let f = parse(&valid()).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.str("general.architecture").unwrap(), "llama");
    assert_eq!(f.u64("llama.block_count").unwrap(), 2);
    assert_eq!(
        f.get("tokenizer.ggml.tokens")
            .and_then(MetaValue::as_array)
            .map(<[_]>::len),
        Some(2)
    );
    let t = f.tensor("w").unwrap();
    assert_eq!(
        (t.ggml_type, t.elements(), t.byte_len()),
        (GgmlType::Q8_0, 32, 34)
    );
    assert_eq!(f.data_offset % 32, 0);
}

#[test]
fn gguf_every_truncation_is_an_error_not_a_panic() {
    let v = valid();
    for cut in 0..v.len() {
        let err = parse(&v[..cut]).expect_err(&format!("cut at {cut}"));
        assert!(matches!(err, Error::Gguf { .. }), "{err}");
    }
}

#[test]
fn gguf_hostile_headers_name_the_problem() {
    let patch = |at: usize, bytes: &[u8]| {
        let mut v = valid();
        v[at..at + bytes.len()].copy_from_slice(bytes);
        v
    };
    // Offsets in `valid()`: magic 0, version 4, tensor count 8, kv count 16, first key at 24.
    let first_type = 24 + 8 + "general.architecture".len();
    let w_at = {
        let v = valid();
        v.windows(9)
            .position(|w| w == [1, 0, 0, 0, 0, 0, 0, 0, b'w'])
            .unwrap()
    };
    let dims_at = w_at + 9;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (patch(0, b"GGML"), "bad magic"),
        (patch(4, &1u32.to_le_bytes()), "version 1"),
        (patch(8, &u64::MAX.to_le_bytes()), "tensor count"),
        (patch(16, &(1u64 << 60).to_le_bytes()), "metadata count"),
        (patch(24, &(1u64 << 40).to_le_bytes()), "string of"),
        (
            patch(first_type, &77u32.to_le_bytes()),
            "unknown metadata value type 77",
        ),
        (patch(dims_at, &0u32.to_le_bytes()), "0 dimensions"),
        (patch(dims_at, &5u32.to_le_bytes()), "5 dimensions"),
        (
            patch(dims_at + 4, &0u64.to_le_bytes()),
            "impossible dimensions",
        ),
        (
            patch(dims_at + 4, &u64::MAX.to_le_bytes()),
            "impossible dimensions",
        ),
        (patch(dims_at + 4, &33u64.to_le_bytes()), "block size"),
        (
            patch(dims_at + 12, &99u32.to_le_bytes()),
            "unsupported type ggml type 99",
        ),
        (patch(dims_at + 16, &7u64.to_le_bytes()), "not aligned"),
        (
            patch(dims_at + 16, &(1u64 << 20).to_le_bytes()),
            "truncated",
        ),
    ];
    for (bytes, needle) in cases {
        let msg = parse(&bytes).unwrap_err().to_string();
        assert!(msg.contains(needle), "wanted {needle:?} in {msg}");
        assert!(msg.contains("t.gguf"), "{msg}");
    }
    // Array element count far past the end, and a bool that is not 0/1.
    let mut w = Writer::default();
    w.u32(0x4655_4747)
        .u32(3)
        .u64(0)
        .u64(1)
        .str("k")
        .u32(9)
        .u32(4)
        .u64(1 << 50);
    assert!(parse(&w.0).unwrap_err().to_string().contains("array count"));
    let mut w = Writer::default();
    w.u32(0x4655_4747).u32(3).u64(0).u64(1).str("k").u32(7);
    w.0.push(2);
    assert!(
        parse(&w.0)
            .unwrap_err()
            .to_string()
            .contains("neither 0 nor 1")
    );
    let mut w = Writer::default();
    w.u32(0x4655_4747)
        .u32(3)
        .u64(0)
        .u64(1)
        .str("general.alignment")
        .u32(4)
        .u32(24);
    assert!(
        parse(&w.0)
            .unwrap_err()
            .to_string()
            .contains("power of two")
    );
}

/// The real SmolLM2 file, checked against llama.cpp's own `gguf` Python package
/// (`gguf.quants.dequantize`), whose values are pasted here.
#[test]
fn real_smollm2_gguf_matches_the_reference_reader() {
    let Some(path) = spice_hf_testkit::fixtures::smollm2_gguf_or_skip() else {
        return;
    };
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(
        (
            f.version,
            f.tensors.len(),
            f.metadata.len(),
            f.alignment,
            f.data_offset
        ),
        (3, 272, 33, 32, 1_785_664)
    );
    let count = |ty| f.tensors.iter().filter(|t| t.ggml_type == ty).count();
    assert_eq!(
        (
            count(GgmlType::Q4_1),
            count(GgmlType::Q8_0),
            count(GgmlType::F32)
        ),
        (210, 1, 61)
    );
    assert_eq!(f.u64("llama.block_count").unwrap(), 30);
    assert_eq!(f.u64("llama.attention.head_count_kv").unwrap(), 3);
    assert_eq!(f.f64("llama.rope.freq_base").unwrap(), 100_000.0);
    assert_eq!(f.str("tokenizer.ggml.model").unwrap(), "gpt2");
    assert!(f.tensor("output.weight").is_none(), "tied embeddings");

    let cases: [(&str, usize, [f32; 6]); 4] = [
        (
            "token_embd.weight",
            504,
            [
                0.109_603_88,
                0.017_436_98,
                -0.094_657_9,
                0.082_202_9,
                0.092_166_9,
                -0.027_400_97,
            ],
        ),
        (
            "blk.0.attn_q.weight",
            0,
            [
                -0.096_313_48,
                0.157_348_63,
                -0.096_313_48,
                -0.730_468_75,
                1.171_997,
                -0.096_313_48,
            ],
        ),
        (
            "blk.29.ffn_down.weight",
            575,
            [
                -0.229_187,
                -0.039_123_535,
                -0.276_702_9,
                0.245_971_68,
                0.008_392_334,
                -0.039_123_535,
            ],
        ),
        (
            "output_norm.weight",
            0,
            [
                1.757_812_5,
                1.820_312_5,
                1.781_25,
                1.601_562_5,
                1.742_187_5,
                1.718_75,
            ],
        ),
    ];
    for (name, row, want) in cases {
        let t = f.tensor(name).unwrap();
        let values = f.read_f32(t).unwrap();
        let cols = t.dims[0] as usize;
        assert_eq!(values.len() as u64, t.elements());
        for (i, w) in want.iter().enumerate() {
            let got = values[row * cols + i];
            assert!(
                (got - w).abs() <= 1e-6 * w.abs().max(1.0),
                "{name}[{row}][{i}] = {got}, reference {w}"
            );
        }
    }
}

/// A bounded mutation fuzz of the GGUF parser: thousands of seeded random corruptions of a
/// valid file (flipped bytes, overwritten counts, truncations) must each give `Ok` or a clear
/// `Error::Gguf`, never a panic and never a huge allocation.
#[test]
fn gguf_mutation_fuzz() {
    let base = valid();
    let mut x = 0x853c_49e6_748f_ea9bu64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut errors = 0;
    for _ in 0..20_000 {
        let mut v = base.clone();
        match next() % 4 {
            0 => {
                let i = (next() as usize) % v.len();
                v[i] ^= 1 << (next() % 8);
            }
            1 => {
                // Overwrite 8 bytes with a large or boundary value (counts, lengths, offsets).
                let i = (next() as usize) % (v.len() - 8);
                let val = [u64::MAX, u64::MAX / 2, 1 << 40, 0, 33, next()][(next() % 6) as usize];
                v[i..i + 8].copy_from_slice(&val.to_le_bytes());
            }
            2 => v.truncate((next() as usize) % v.len()),
            _ => {
                let i = (next() as usize) % v.len();
                v[i] = (next() % 256) as u8;
            }
        }
        match parse(&v) {
            Ok(f) => {
                // Whatever parsed must be readable within the buffer.
                for t in &f.tensors {
                    assert!(f.data_offset + t.offset + t.byte_len() <= v.len() as u64);
                }
            }
            Err(Error::Gguf { .. }) => errors += 1,
            Err(other) => panic!("unexpected error kind: {other}"),
        }
    }
    assert!(
        errors > 10_000,
        "most mutations must be rejected ({errors})"
    );
}

#[test]
fn the_kernels_decoder_equals_the_independent_dequantizer_value_for_value() {
    use spice_hf_kernels::format::decode_row;
    // Random blocks with finite scales (NaN scales are not comparable value for value).
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut byte = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 24) as u8
    };
    for ty in [
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
    ] {
        let format = ty.format().unwrap();
        let (n, bytes) = (format.block_values() * 3, format.block_bytes() * 3);
        let mut raw: Vec<u8> = (0..bytes).map(|_| byte()).collect();
        let scale_at: &[usize] = match ty {
            GgmlType::Q6K => &[208],
            GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q5_0 => &[0],
            GgmlType::F16 | GgmlType::BF16 => &[],
            _ => &[0, 2],
        };
        for b in 0..3 {
            for &o in scale_at {
                let at = b * format.block_bytes() + o;
                raw[at..at + 2].copy_from_slice(&half::f16::from_f32(0.03).to_le_bytes());
            }
        }
        if matches!(ty, GgmlType::F16 | GgmlType::BF16) {
            // Clear the exponent's top bit so no value is NaN or infinite.
            for pair in raw.chunks_exact_mut(2) {
                pair[1] &= 0x3F;
            }
        }
        let want = dequantize(ty, &raw, n).unwrap();
        let mut got = vec![0f32; n];
        decode_row(format, &raw, &mut got);
        assert_eq!(got, want, "{ty}");
    }
}

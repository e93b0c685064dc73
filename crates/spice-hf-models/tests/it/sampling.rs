//! Sampling and text streaming.

use spice_hf_models::sampling::{Sampler, SamplingParams, TextStream, argmax};
use spice_hf_models::tokenizer::Tokenizer;
use spice_hf_testkit::fixtures;

fn logits() -> Vec<f32> {
    vec![1.0, 3.0, 2.9, -1.0, 0.5, 2.95]
}

#[test]
fn greedy_and_degenerate_settings_pick_the_argmax() {
    assert_eq!(argmax(&logits()), 1);
    assert_eq!(argmax(&[2.0, 2.0]), 0);
    for params in [
        SamplingParams::default(),
        SamplingParams {
            temperature: 1.0,
            top_k: 1,
            ..Default::default()
        },
        SamplingParams {
            temperature: 1.0,
            top_p: 1e-6,
            ..Default::default()
        },
        SamplingParams {
            temperature: 1.0,
            min_p: 0.999,
            ..Default::default()
        },
    ] {
        let mut s = Sampler::new(params.clone());
        for _ in 0..20 {
            assert_eq!(s.sample(&logits(), &[]), 1, "{params:?}");
        }
    }
}

#[test]
fn same_seed_same_output_and_filters_hold() {
    let params = SamplingParams {
        temperature: 1.0,
        seed: Some(42),
        ..Default::default()
    };
    let run = |p: &SamplingParams| {
        let mut s = Sampler::new(p.clone());
        (0..200)
            .map(|_| s.sample(&logits(), &[]))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(&params), run(&params));
    assert_ne!(
        run(&params),
        run(&SamplingParams {
            seed: Some(43),
            ..params.clone()
        })
    );
    let all = run(&params);
    assert!(
        all.contains(&2) && all.contains(&5),
        "temperature 1 should explore: {all:?}"
    );
    let top3 = run(&SamplingParams {
        top_k: 3,
        ..params.clone()
    });
    assert!(top3.iter().all(|t| [1, 2, 5].contains(t)), "{top3:?}");
    // min_p 0.5: only tokens at least half as likely as the best (1, 2, 5) survive.
    let minp = run(&SamplingParams {
        min_p: 0.5,
        ..params.clone()
    });
    assert!(minp.iter().all(|t| [1, 2, 5].contains(t)), "{minp:?}");
    // Low temperature concentrates on the argmax.
    let cold = run(&SamplingParams {
        temperature: 0.001,
        ..params
    });
    assert!(cold.iter().all(|&t| t == 1));
}

#[test]
fn penalties_move_the_argmax() {
    let mut s = Sampler::new(SamplingParams {
        repetition_penalty: 2.0,
        ..Default::default()
    });
    assert_eq!(
        s.sample(&logits(), &[1]),
        5,
        "3.0 / 2 = 1.5 falls below 2.95"
    );
    let mut s = Sampler::new(SamplingParams {
        frequency_penalty: 0.1,
        ..Default::default()
    });
    assert_eq!(s.sample(&logits(), &[1]), 5);
    assert_eq!(s.sample(&logits(), &[]), 1);
    let mut s = Sampler::new(SamplingParams {
        presence_penalty: 0.2,
        ..Default::default()
    });
    assert_eq!(s.sample(&logits(), &[1, 5]), 2);
}

fn tiny_tokenizer() -> Tokenizer {
    let dir = tempfile::tempdir().unwrap();
    fixtures::write_tiny_llama(dir.path(), 1).unwrap();
    Tokenizer::from_dir(dir.path()).unwrap()
}

#[test]
fn streaming_never_splits_utf8() {
    let tok = tiny_tokenizer();
    let ids = tok.encode("aé🦀").unwrap();
    assert_eq!(ids.len(), 1 + 2 + 4);
    let mut stream = TextStream::new(vec![]);
    let pieces: Vec<String> = ids.iter().map(|&i| stream.push(&tok, i).unwrap()).collect();
    assert_eq!(pieces, vec!["a", "", "é", "", "", "", "🦀"]);
    assert_eq!(stream.finish(), "");
}

#[test]
fn stop_strings_across_tokens_are_never_shown() {
    let tok = tiny_tokenizer();
    let mut stream = TextStream::new(vec!["STOP".into()]);
    let mut shown = String::new();
    for id in tok.encode("abSTxSTOPzz").unwrap() {
        shown.push_str(&stream.push(&tok, id).unwrap());
        if stream.stopped() {
            break;
        }
    }
    assert!(stream.stopped());
    assert_eq!(shown, "abSTx");
    assert_eq!(stream.text(), "abSTx");
    // Held-back text that turns out not to be a stop string is flushed at the end.
    let mut stream = TextStream::new(vec!["STOP".into()]);
    let mut shown = String::new();
    for id in tok.encode("okST").unwrap() {
        shown.push_str(&stream.push(&tok, id).unwrap());
    }
    assert_eq!(shown, "ok");
    shown.push_str(&stream.finish());
    assert_eq!(shown, "okST");
}

/// The sampler as it was before the partial selection: a full sort of every candidate (with the
/// normaliser summed in f64, as now).
fn full_sort_sample(logits: &[f32], p: &SamplingParams, rng: &mut rand::rngs::StdRng) -> u32 {
    use rand::RngExt as _;
    let mut cand: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, l / p.temperature))
        .collect();
    cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if p.top_k > 0 {
        cand.truncate(p.top_k);
    }
    let max = cand[0].1;
    let sum = cand
        .iter()
        .map(|(_, l)| (l - max).exp() as f64)
        .sum::<f64>() as f32;
    let probs: Vec<f32> = cand.iter().map(|(_, l)| (l - max).exp() / sum).collect();
    let mut keep = probs.len();
    if p.min_p > 0.0 {
        keep = probs
            .iter()
            .take_while(|&&x| x >= p.min_p * probs[0])
            .count()
            .max(1);
    }
    if p.top_p < 1.0 {
        let mut acc = 0.0;
        keep = probs
            .iter()
            .take(keep)
            .take_while(|&&x| {
                let before = acc;
                acc += x;
                before < p.top_p
            })
            .count()
            .max(1);
    }
    let total: f32 = probs[..keep].iter().sum();
    let mut r = rng.random::<f32>() * total;
    for (i, &x) in probs[..keep].iter().enumerate() {
        if r < x {
            return cand[i].0;
        }
        r -= x;
    }
    cand[keep - 1].0
}

#[test]
fn partial_selection_picks_what_a_full_sort_picks() {
    use rand::SeedableRng as _;
    // A 49,152-entry vocabulary like SmolLM2's, with a long flat tail and repeated values
    // (ties are broken by the lower id in both).
    let logits: Vec<f32> = (0..49_152u32)
        .map(|i| ((i.wrapping_mul(2_654_435_761) >> 16) % 2000) as f32 / 100.0 - 10.0)
        .collect();
    let settings = [
        (0.7, 0, 0.9, 0.0),
        (1.0, 40, 1.0, 0.0),
        (1.0, 40, 0.5, 0.0),
        (1.3, 0, 1.0, 0.05),
        (1.0, 0, 0.999, 0.0),
        (2.0, 0, 0.95, 0.01),
        (0.5, 5000, 0.99, 0.0),
    ];
    for (temperature, top_k, top_p, min_p) in settings {
        let params = SamplingParams {
            temperature,
            top_k,
            top_p,
            min_p,
            seed: Some(17),
            ..SamplingParams::default()
        };
        let mut sampler = Sampler::new(params.clone());
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        for step in 0..200 {
            let want = full_sort_sample(&logits, &params, &mut rng);
            assert_eq!(
                sampler.sample(&logits, &[]),
                want,
                "{params:?}, step {step}"
            );
        }
    }
}

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

//! Unit tests: references, tokens, retry schedules, selection.

use std::collections::HashMap;
use std::time::Duration;

use super::*;

#[test]
fn model_refs_valid() {
    let c40 = "0123456789abcdef0123456789abcdef01234567";
    let table = [
        ("org/name", "org/name", "main"),
        ("org/name@", "org/name", "main"),
        ("org/name@latest", "org/name", "main"),
        ("hf:org/name@v1.0", "org/name", "v1.0"),
        (
            "huggingface:org/name@dev_branch-2",
            "org/name",
            "dev_branch-2",
        ),
        (
            "huggingface.co/org/name@refs/pr/12",
            "org/name",
            "refs/pr/12",
        ),
        ("hf:huggingface.co/gpt2", "gpt2", "main"),
        ("https://huggingface.co/Org/N.a-m_e", "Org/N.a-m_e", "main"),
        (
            "org/name@refs/convert/parquet",
            "org/name",
            "refs/convert/parquet",
        ),
    ];
    for (input, repo, rev) in table {
        let r = ModelRef::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!((r.repo(), r.revision()), (repo, rev), "{input}");
    }
    let pinned = ModelRef::parse(&format!("o/n@{c40}")).unwrap();
    assert!(pinned.is_pinned());
    assert_eq!(pinned.to_string(), format!("o/n@{c40}"));
}

#[test]
fn model_refs_invalid_name_the_problem() {
    let table: [(&str, &str); 14] = [
        ("org/name@..", "`..`"),
        ("org/name@../../x", "`..`"),
        ("org/name@a\\b", "'\\\\'"),
        ("org/name@a\0b", "'\\0'"),
        ("org/name@has space", "' '"),
        ("org/name@-rf", "`-`"),
        ("org/name@refs/heads/main", "`/`"),
        ("org/name@refs/pr/x", "`/`"),
        ("org/name@a#b", "'#'"),
        ("org/name@ü", "'ü'"),
        ("../x", "repository id"),
        ("a/b/c", "repository id"),
        ("", "repository id"),
        ("org/na me", "' '"),
    ];
    for (input, needle) in table {
        let err = ModelRef::parse(input).expect_err(input).to_string();
        assert!(err.contains(needle), "{input:?}: {err} (wanted {needle})");
    }
}

fn env_of(pairs: &[(&str, String)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    move |k| map.get(k).cloned()
}

#[test]
fn token_resolution_order() {
    let dir = tempfile::tempdir().unwrap();
    let path_file = dir.path().join("path-token");
    std::fs::write(&path_file, "hf_from_path\n").unwrap();
    let hf_home = dir.path().join("hfhome");
    std::fs::create_dir_all(&hf_home).unwrap();
    std::fs::write(hf_home.join("token"), "  hf_from_home  ").unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".cache/huggingface")).unwrap();
    std::fs::write(home.join(".cache/huggingface/token"), "hf_from_default").unwrap();

    let all = [
        ("HF_TOKEN", "hf_from_env\r\n".to_string()),
        ("HF_TOKEN_PATH", path_file.display().to_string()),
        ("HF_HOME", hf_home.display().to_string()),
        ("HOME", home.display().to_string()),
    ];
    let pick = |explicit: Option<&str>, n: usize| {
        resolve_token(explicit, env_of(&all[n..]))
            .unwrap()
            .map(|(t, s)| (t.expose_secret().to_string(), s))
    };
    assert_eq!(
        pick(Some(" hf_explicit "), 0).unwrap(),
        ("hf_explicit".into(), TokenSource::Explicit)
    );
    assert_eq!(
        pick(None, 0).unwrap(),
        ("hf_from_env".into(), TokenSource::EnvVar)
    );
    assert_eq!(
        pick(None, 1).unwrap(),
        (
            "hf_from_path".into(),
            TokenSource::TokenPath(path_file.clone())
        )
    );
    assert_eq!(
        pick(None, 2).unwrap(),
        (
            "hf_from_home".into(),
            TokenSource::HfHome(hf_home.join("token"))
        )
    );
    assert_eq!(pick(None, 3).unwrap().0, "hf_from_default");
    assert_eq!(pick(None, 4), None);

    let mut disabled = all.to_vec();
    disabled.push(("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1".into()));
    assert!(resolve_token(None, env_of(&disabled)).unwrap().is_none());
    assert!(
        resolve_token(Some("hf_x"), env_of(&disabled))
            .unwrap()
            .is_some()
    );
    let mut not_disabled = all.to_vec();
    not_disabled.push(("HF_HUB_DISABLE_IMPLICIT_TOKEN", "0".into()));
    assert!(
        resolve_token(None, env_of(&not_disabled))
            .unwrap()
            .is_some()
    );
}

#[test]
fn token_never_printed() {
    let t = HfToken::new("hf_supersecretvalue").unwrap();
    assert_eq!(format!("{t}"), "hf_***");
    assert_eq!(format!("{t:?}"), "hf_***");
    let bad = resolve_token(None, env_of(&[("HF_TOKEN", "hf_bad value".into())]))
        .unwrap_err()
        .to_string();
    assert!(bad.contains("HF_TOKEN") && !bad.contains("hf_bad"), "{bad}");
}

#[test]
fn retry_schedules_are_capped_and_counted() {
    let p = RetryPolicy {
        schedule: Schedule::Exponential,
        min_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(500),
        max_retries: 5,
        jitter: false,
        max_retry_after: Duration::from_secs(1),
    };
    let exp: Vec<u128> = p.delays().map(|d| d.as_millis()).collect();
    assert_eq!(exp, vec![100, 200, 400, 500, 500]);
    let fib: Vec<u128> = RetryPolicy {
        schedule: Schedule::Fibonacci,
        ..p.clone()
    }
    .delays()
    .map(|d| d.as_millis())
    .collect();
    assert_eq!(fib, vec![100, 100, 200, 300, 500]);
    let jittered: Vec<Duration> = RetryPolicy { jitter: true, ..p }.delays().collect();
    assert_eq!(jittered.len(), 5);
    assert!(
        jittered
            .iter()
            .all(|d| *d >= Duration::from_millis(100) && *d <= Duration::from_millis(1000))
    );
}

#[test]
fn retry_after_forms() {
    assert_eq!(retry::parse_retry_after("3"), Some(Duration::from_secs(3)));
    let later = std::time::SystemTime::now() + Duration::from_secs(120);
    let d = retry::parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
    assert!(
        d > Duration::from_secs(100) && d <= Duration::from_secs(120),
        "{d:?}"
    );
    assert_eq!(retry::parse_retry_after("soon"), None);
}

#[test]
fn selection_globs_and_quant() {
    let files = [
        "config.json",
        "README.md",
        "model.safetensors",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct.Q4_0.gguf",
        "SmolLM2-135M-Instruct.Q4_K_M.gguf",
        "onnx/model.onnx",
    ];
    let sel = |include: &[&str], exclude: &[&str], quant: Option<&str>| {
        Selection {
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            quant: quant.map(str::to_string),
        }
        .apply(files)
    };
    assert_eq!(sel(&[], &[], None).unwrap().len(), 7);
    assert_eq!(
        sel(&["*.json", "*.safetensors"], &[], None).unwrap(),
        vec!["config.json", "model.safetensors"]
    );
    assert_eq!(
        sel(&[], &["*.gguf", "onnx/*"], None).unwrap(),
        vec!["config.json", "README.md", "model.safetensors"]
    );
    assert_eq!(
        sel(&["*.gguf"], &[], Some("q4_1")).unwrap(),
        vec!["SmolLM2-135M-Instruct.Q4_1.gguf"]
    );
    assert_eq!(
        sel(&["*.gguf"], &[], Some("Q4_K_M")).unwrap(),
        vec!["SmolLM2-135M-Instruct.Q4_K_M.gguf"]
    );
    let err = sel(&[], &[], Some("q8_0")).unwrap_err().to_string();
    assert!(err.contains("q8_0") && err.contains("Q4_1.gguf"), "{err}");
    assert!(sel(&["*.bin"], &[], None).is_err());
    assert!(sel(&["[bad"], &[], None).is_err());
}

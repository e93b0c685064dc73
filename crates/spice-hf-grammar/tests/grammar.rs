//! Constraints over a toy byte-level vocabulary: random walks (every allowed token equally
//! likely, seeded) must always end in text that parses and validates; errors name what is
//! wrong; tool calls stream and parse back to the same calls.

use serde_json::{Value, json};
use spice_hf_grammar::tools::{CallStream, Piece, Syntax, Tool, ToolChoice, Tools, parse};
use spice_hf_grammar::{Constraint, Error, Token, Vocabulary};

/// Every byte, a few merged tokens (as BPE vocabularies have), two control tokens; the last
/// is end-of-text.
fn vocabulary() -> (Vec<Vec<u8>>, Vocabulary) {
    let mut words: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    for w in [
        "{\"",
        "\": ",
        ", \"",
        "name",
        "city",
        "Paris",
        "true",
        "null",
        "<tool_call>",
        "</tool_call>",
        "\n",
        "arguments",
        "\"}",
        "12",
        " the",
    ] {
        words.push(w.as_bytes().to_vec());
    }
    let mut tokens: Vec<Token> = words.iter().cloned().map(Token::Bytes).collect();
    tokens.push(Token::Special("<|im_start|>".into()));
    tokens.push(Token::Special("<|end|>".into()));
    let eos = tokens.len() as u32 - 1;
    words.push(Vec::new());
    words.push(Vec::new());
    (words, Vocabulary::new(tokens, &[eos]).unwrap())
}

/// A xorshift stream: the walk is reproducible per seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Walks the constraint with random logits until it ends; returns the text.
fn walk(vocab: &Vocabulary, words: &[Vec<u8>], c: &Constraint, seed: u64) -> String {
    walk_from(vocab, words, c, seed, None)
}

/// [`walk`], with `first` made the likeliest first token (where allowed).
fn walk_from(
    vocab: &Vocabulary,
    words: &[Vec<u8>],
    c: &Constraint,
    seed: u64,
    first: Option<u32>,
) -> String {
    let mut guide = vocab.guide(c).unwrap();
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut out = Vec::new();
    for step in 0..2000 {
        let mut logits: Vec<f32> = (0..vocab.len()).map(|_| rng.next()).collect();
        if let (0, Some(t)) = (step, first) {
            logits[t as usize] += 10.0;
        }
        guide.mask(&mut logits).unwrap();
        let t = (0..logits.len())
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .unwrap() as u32;
        guide.accept(t).unwrap();
        if vocab.eos().contains(&t) || guide.is_finished() {
            if !vocab.eos().contains(&t) {
                out.extend_from_slice(&words[t as usize]);
            }
            return String::from_utf8(out).expect("constrained text is UTF-8");
        }
        out.extend_from_slice(&words[t as usize]);
    }
    panic!("the walk did not end: {}", String::from_utf8_lossy(&out));
}

fn person() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 6},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "mood": {"enum": ["happy", "sad"]}
        },
        "required": ["name", "age", "mood"],
        "additionalProperties": false
    })
}

#[test]
fn random_walks_under_a_schema_always_validate() {
    let (words, vocab) = vocabulary();
    let c = Constraint::JsonSchema(person());
    for seed in 0..40 {
        let text = walk(&vocab, &words, &c, seed);
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        let o = v.as_object().unwrap();
        assert_eq!(o.len(), 3, "{text}");
        assert!(o["name"].as_str().unwrap().chars().count() <= 6, "{text}");
        let age = o["age"].as_i64().unwrap();
        assert!((0..=150).contains(&age), "{text}");
        assert!(
            ["happy", "sad"].contains(&o["mood"].as_str().unwrap()),
            "{text}"
        );
        // The layout is fixed: no run of blanks.
        assert!(!text.contains("  ") && !text.contains('\n'), "{text:?}");
    }
}

#[test]
fn json_object_regex_and_lark_constrain_too() {
    let (words, vocab) = vocabulary();
    for seed in 0..10 {
        let t = walk(&vocab, &words, &Constraint::JsonObject, seed);
        // JSON numbers have no range; serde_json refuses those past an f64's (valid JSON).
        match serde_json::from_str::<Value>(&t) {
            Ok(v) => assert!(v.is_object(), "{t}"),
            Err(e) => assert!(e.to_string().contains("number out of range"), "{t}: {e}"),
        }
        assert!(t.starts_with('{') && t.ends_with('}'), "{t}");
        let t = walk(
            &vocab,
            &words,
            &Constraint::Regex("[a-c]{2,4}-[0-9]+".into()),
            seed,
        );
        let (l, r) = t.split_once('-').unwrap();
        assert!(
            (2..=4).contains(&l.len()) && l.bytes().all(|b| (b'a'..=b'c').contains(&b)),
            "{t}"
        );
        assert!(
            !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()),
            "{t}"
        );
        let t = walk(
            &vocab,
            &words,
            &Constraint::Lark("start: (\"yes\" | \"no\") \"!\"".into()),
            seed,
        );
        assert!(t == "yes!" || t == "no!", "{t}");
    }
}

#[test]
fn special_tokens_are_never_text_and_end_of_text_waits_for_a_complete_match() {
    let (_, vocab) = vocabulary();
    let n = vocab.len();
    let mut guide = vocab.guide(&Constraint::Regex("ab".into())).unwrap();
    let mut logits = vec![0.0; n];
    guide.mask(&mut logits).unwrap();
    assert!(logits[b'a' as usize].is_finite());
    assert_eq!(
        logits[n - 1],
        f32::NEG_INFINITY,
        "end-of-text before the match"
    );
    assert_eq!(logits[n - 2], f32::NEG_INFINITY, "a control token as text");
    guide.accept(b'a' as u32).unwrap();
    guide.accept(b'b' as u32).unwrap();
    assert!(guide.is_complete());
}

#[test]
fn errors_name_what_is_wrong() {
    let (_, vocab) = vocabulary();
    let e = vocab
        .guide(&Constraint::JsonSchema(
            json!({"type": "array", "uniqueItems": true}),
        ))
        .unwrap_err();
    assert!(
        matches!(&e, Error::Unsupported(m) if m.contains("uniqueItems")),
        "{e}"
    );
    let e = vocab
        .guide(&Constraint::JsonSchema(
            json!({"type": "integer", "minimum": 5, "maximum": 1}),
        ))
        .unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
    let e = vocab
        .guide(&Constraint::Regex("(unclosed".into()))
        .unwrap_err();
    assert!(e.to_string().contains("regular expression"), "{e}");
    let e = vocab
        .guide(&Constraint::JsonSchema(json!("string")))
        .unwrap_err();
    assert!(e.to_string().contains("must be an object"), "{e}");
    // A grammar larger than the limit is refused at compile time, not run.
    let huge = json!({"enum": (0..100_000).map(|i| format!("value{i}")).collect::<Vec<_>>()});
    assert!(vocab.guide(&Constraint::JsonSchema(huge)).is_err());
    // Hostile vocabularies.
    assert!(Vocabulary::new(Vec::new(), &[0]).is_err());
    assert!(Vocabulary::new(vec![Token::Bytes(b"a".to_vec())], &[]).is_err());
    assert!(Vocabulary::new(vec![Token::Bytes(b"a".to_vec())], &[7]).is_err());
    let dup = vec![
        Token::Bytes(b"a".to_vec()),
        Token::Bytes(b"a".to_vec()),
        Token::Bytes(vec![b'x'; 5000]),
        Token::Unused,
        Token::Special("<e>".into()),
    ];
    let v = Vocabulary::new(dup, &[4]).unwrap();
    let mut g = v.guide(&Constraint::Regex("a+".into())).unwrap();
    let mut logits = vec![0.0; 5];
    g.mask(&mut logits).unwrap();
    assert_eq!(
        logits[2],
        f32::NEG_INFINITY,
        "a token past the length limit"
    );
    assert_eq!(logits[3], f32::NEG_INFINITY);
}

fn weather() -> Tools {
    Tools {
        tools: vec![
            Tool::new(
                "get_weather",
                Some("Weather in a city"),
                Some(
                    json!({"type": "object", "properties": {"city": {"type": "string", "maxLength": 8}, "celsius": {"type": "boolean"}}, "required": ["city", "celsius"], "additionalProperties": false}),
                ),
            ),
            Tool::new("now", None, None),
        ],
        choice: ToolChoice::Required,
        parallel: true,
    }
}

#[test]
fn a_required_call_always_exists_and_validates_and_streams_back_the_same() {
    let (words, vocab) = vocabulary();
    for syntax in [Syntax::Hermes, Syntax::Llama3] {
        for (choice, parallel) in [
            (ToolChoice::Required, true),
            (ToolChoice::Required, false),
            (ToolChoice::Function("get_weather".into()), false),
        ] {
            let tools = Tools {
                choice: choice.clone(),
                parallel,
                ..weather()
            };
            let c = tools.constraint(syntax, None).unwrap().unwrap();
            assert_eq!(c.kind(), "tool_calls");
            for seed in 0..12 {
                let text = walk(&vocab, &words, &c, seed);
                let whole = parse(syntax, &tools, "call_x", &text);
                assert!(!whole.calls.is_empty(), "{syntax:?} {text:?}");
                assert!(whole.content.is_none(), "{text:?}");
                if !parallel || syntax == Syntax::Llama3 {
                    assert_eq!(whole.calls.len(), 1, "{text:?}");
                }
                for (i, call) in whole.calls.iter().enumerate() {
                    assert_eq!(call.id, format!("call_x_{i}"));
                    let args: Value = serde_json::from_str(&call.arguments).unwrap();
                    match call.name.as_str() {
                        "get_weather" => {
                            assert!(args["city"].as_str().unwrap().chars().count() <= 8);
                            assert!(args["celsius"].is_boolean());
                            assert_eq!(args.as_object().unwrap().len(), 2);
                        }
                        "now" => {
                            assert!(matches!(choice, ToolChoice::Required), "{text}");
                            assert_eq!(args, json!({}));
                        }
                        other => panic!("called {other}"),
                    }
                }
                // Streamed in pieces of every size, the same calls come out.
                for step in [1, 2, 5, 13] {
                    let mut s = CallStream::new(syntax, &tools, "call_x");
                    let chars: Vec<char> = text.chars().collect();
                    let mut pieces = Vec::new();
                    for chunk in chars.chunks(step) {
                        pieces.extend(s.push(&chunk.iter().collect::<String>()));
                    }
                    pieces.extend(s.finish());
                    let calls: Vec<_> = pieces
                        .iter()
                        .map(|p| match p {
                            Piece::Call(_, c) => c.clone(),
                            Piece::Text(t) => panic!("text {t:?} streamed from {text:?}"),
                        })
                        .collect();
                    assert_eq!(calls, whole.calls);
                }
            }
        }
    }
}

#[test]
fn auto_gives_a_valid_call_or_text() {
    let (words, vocab) = vocabulary();
    let tools = Tools {
        choice: ToolChoice::Auto,
        ..weather()
    };
    let c = tools.constraint(Syntax::Hermes, None).unwrap().unwrap();
    let (mut calls, mut texts) = (0, 0);
    let open = words
        .iter()
        .position(|w| w == b"<tool_call>")
        .map(|i| i as u32);
    for seed in 0..40 {
        // Half the walks lean towards a call at the first token, as a model that wants one.
        let text = walk_from(&vocab, &words, &c, seed, open.filter(|_| seed % 2 == 0));
        let p = parse(Syntax::Hermes, &tools, "c", &text);
        if p.calls.is_empty() {
            texts += 1;
            assert!(
                !text.contains("<tool_call>") || !text.trim_start().starts_with('<'),
                "{text:?}"
            );
        } else {
            calls += 1;
            assert!(p.content.is_none(), "{text:?}");
        }
    }
    assert!(calls > 0 && texts > 0, "{calls} calls, {texts} texts");
    // None: no constraint at all (unless the answer has a format of its own).
    let none = Tools {
        choice: ToolChoice::None,
        ..weather()
    };
    assert_eq!(none.constraint(Syntax::Hermes, None).unwrap(), None);
    // With a response format, auto is a call or that format.
    let c = tools
        .constraint(Syntax::Hermes, Some(&Constraint::JsonSchema(json!({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": false}))))
        .unwrap()
        .unwrap();
    for seed in 0..20 {
        let text = walk(&vocab, &words, &c, seed);
        let p = parse(Syntax::Hermes, &tools, "c", &text);
        if p.calls.is_empty() {
            let v: Value = serde_json::from_str(&text).unwrap();
            assert!(v["ok"].is_boolean(), "{text}");
        }
    }
}

#[test]
fn parsing_keeps_text_and_refuses_bad_calls() {
    let tools = weather();
    let p = parse(
        Syntax::Hermes,
        &tools,
        "c",
        "Let me check.\n<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>",
    );
    assert_eq!(p.content.as_deref(), Some("Let me check."));
    assert_eq!(p.calls.len(), 1);
    // Unknown function, bad JSON, unclosed block: text, never a call.
    for bad in [
        "<tool_call>{\"name\": \"rm\", \"arguments\": {}}</tool_call>",
        "<tool_call>{\"name\": \"now\", \"arguments\": </tool_call>",
        "<tool_call>{\"name\": \"now\", \"arguments\": {}}",
        "<tool_call>{\"name\": \"now\", \"arguments\": \"x\"}</tool_call>",
    ] {
        let p = parse(Syntax::Hermes, &tools, "c", bad);
        assert!(p.calls.is_empty(), "{bad}");
        assert_eq!(p.content.as_deref(), Some(bad));
    }
    let p = parse(
        Syntax::Hermes,
        &tools,
        "c",
        "a < b and <tool_ is not a call",
    );
    assert_eq!(p.content.as_deref(), Some("a < b and <tool_ is not a call"));
    // A template that renders tools names its syntax; one that does not gets the default.
    assert_eq!(
        Syntax::of_template("{% if tools %}<tool_call>{% endif %}"),
        Some(Syntax::Hermes)
    );
    assert_eq!(Syntax::of_template("{{ messages }}"), None);
    // Validation names the field.
    let mut t = weather();
    t.choice = ToolChoice::Function("nope".into());
    assert_eq!(t.validate().unwrap_err().0, "tool_choice");
    let mut t = weather();
    t.tools[1].name = "bad name".into();
    assert_eq!(t.validate().unwrap_err().0, "tools[1].function.name");
    let mut t = weather();
    t.tools[1].name = "get_weather".into();
    assert!(t.validate().unwrap_err().1.contains("twice"));
    assert!(weather().validate().is_ok());
    assert!(
        weather()
            .system_prompt()
            .contains("\"name\":\"get_weather\"")
    );
}

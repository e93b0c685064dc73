//! Every fault of the fake Hub, through the real client and real sockets: the pull either
//! succeeds with verified files or fails with the precise error; the cache never holds a
//! corrupt or unverified file and the CDN never sees the token.

use std::time::Duration;

use spice_hf_testkit::{Fault, FaultRule, Role};

use super::*;

enum Expect {
    Ok,
    Err(&'static str),
}

struct Case {
    name: String,
    rules: Vec<FaultRule>,
    expect: Expect,
}

fn on(
    role: Role,
    path: &str,
    attempts: std::ops::RangeInclusive<usize>,
    fault: Fault,
) -> FaultRule {
    FaultRule::new(role, path, attempts, fault)
}

fn status(s: u16) -> Fault {
    Fault::Status {
        status: s,
        retry_after: None,
    }
}

fn cases() -> Vec<Case> {
    use Expect::*;
    use Role::*;
    let w = "/resolve/";
    let blob = "/blobs/";
    let mut v = Vec::new();
    for s in [500u16, 502, 503, 504, 408] {
        v.push(Case {
            name: format!("transient status {s}"),
            rules: vec![on(Hub, w, 1..=2, status(s))],
            expect: Ok,
        });
    }
    v.extend([
        Case {
            name: "429 with Retry-After".into(),
            rules: vec![on(
                Hub,
                "/api/",
                1..=1,
                Fault::Status {
                    status: 429,
                    retry_after: Some("1".into()),
                },
            )],
            expect: Ok,
        },
        Case {
            name: "permanent 500".into(),
            rules: vec![on(Hub, "/revision/", 1..=100, status(500))],
            expect: Err("HTTP 500"),
        },
        Case {
            name: "reset mid-body".into(),
            rules: vec![on(Cdn, blob, 1..=1, Fault::ResetAt(100_000))],
            expect: Ok,
        },
        Case {
            name: "clean close mid-body".into(),
            rules: vec![on(Cdn, blob, 1..=1, Fault::CloseAt(150_000))],
            expect: Ok,
        },
        Case {
            name: "stall mid-body".into(),
            rules: vec![on(Cdn, blob, 1..=1, Fault::StallAt(50_000))],
            expect: Ok,
        },
        Case {
            name: "trickle".into(),
            rules: vec![on(
                Cdn,
                blob,
                1..=1,
                Fault::Trickle {
                    chunk: 32 * 1024,
                    every: Duration::from_millis(30),
                },
            )],
            expect: Ok,
        },
        Case {
            name: "delay before headers".into(),
            rules: vec![on(
                Hub,
                "/tree/",
                1..=1,
                Fault::DelayHeaders(Duration::from_secs(2)),
            )],
            expect: Ok,
        },
        Case {
            name: "Content-Length larger than body".into(),
            rules: vec![on(Cdn, blob, 1..=1, Fault::ContentLengthPlus(1000))],
            expect: Ok,
        },
        Case {
            name: "same-size corrupted body".into(),
            rules: vec![on(Cdn, blob, 1..=1, Fault::CorruptByte(1234))],
            expect: Err("failed verification"),
        },
        Case {
            name: "Range ignored".into(),
            rules: vec![
                on(Cdn, blob, 1..=1, Fault::ResetAt(100_000)),
                on(Cdn, blob, 2..=2, Fault::IgnoreRange),
            ],
            expect: Ok,
        },
        Case {
            name: "spurious 416".into(),
            rules: vec![
                on(Cdn, blob, 1..=1, Fault::ResetAt(100_000)),
                on(Cdn, blob, 2..=2, Fault::Spurious416),
            ],
            expect: Ok,
        },
        Case {
            name: "redirect loop".into(),
            rules: vec![on(Hub, "/config.json", 1..=100, Fault::RedirectLoop)],
            expect: Err("redirect loop"),
        },
        Case {
            name: "expired CDN URL".into(),
            rules: vec![on(Cdn, blob, 1..=1, status(403))],
            expect: Ok,
        },
        Case {
            name: "missing X-Repo-Commit".into(),
            rules: vec![on(
                Hub,
                "/config.json",
                1..=1,
                Fault::StripHeader("x-repo-commit"),
            )],
            expect: Err("no X-Repo-Commit"),
        },
        Case {
            name: "hostile X-Repo-Commit".into(),
            rules: vec![on(
                Hub,
                "/config.json",
                1..=1,
                Fault::SetHeader("x-repo-commit", "../x".into()),
            )],
            expect: Err("X-Repo-Commit says"),
        },
        Case {
            name: "hostile etag".into(),
            rules: vec![on(
                Hub,
                WEIGHTS,
                1..=1,
                Fault::SetHeader("x-linked-etag", "\"../../x\"".into()),
            )],
            expect: Err("bad ETag"),
        },
        Case {
            name: "hostile commit id".into(),
            rules: vec![on(
                Hub,
                "/revision/",
                1..=1,
                Fault::ReplaceBody(r#"{"id":"org/tiny","sha":"../../../x"}"#.into()),
            )],
            expect: Err("not 40 hex digits"),
        },
        Case {
            name: "connection reset before headers".into(),
            rules: vec![on(Hub, "/tree/", 1..=1, Fault::ResetAt(0))],
            expect: Ok,
        },
    ]);
    for hostile in [
        "../evil",
        "/etc/evil",
        "C:\\\\evil",
        "D:evil",
        "\\\\\\\\host\\\\share\\\\evil",
        "a\\\\b",
        "a\\u0000b",
        "sub/../../evil",
    ] {
        let body = format!(
            r#"[{{"type":"file","oid":"ce013625030ba8dba906f756967f9e9ca394464a","size":6,"path":"{hostile}"}}]"#
        );
        v.push(Case {
            name: format!("hostile path {hostile:?} in listing"),
            rules: vec![on(Hub, "/tree/", 1..=1, Fault::ReplaceBody(body.into()))],
            expect: Err("refusing unsafe path"),
        });
    }
    // A hub whose answer never ends: a listing, a revision, an error body.
    for (path, status, needle) in [
        ("/tree/", 200, "passed 64 MiB"),
        ("/revision/", 200, "passed 64 MiB"),
        ("/revision/", 404, "HTTP 404"),
    ] {
        v.push(Case {
            name: format!("endless {status} body on {path}"),
            rules: vec![on(Hub, path, 1..=100, Fault::EndlessBody(status))],
            expect: Err(needle),
        });
    }
    let long = "x".repeat(300);
    let body = format!(
        r#"[{{"type":"file","oid":"ce013625030ba8dba906f756967f9e9ca394464a","size":6,"path":"{long}"}}]"#
    );
    v.push(Case {
        name: "over-long name in listing".into(),
        rules: vec![on(Hub, "/tree/", 1..=1, Fault::ReplaceBody(body.into()))],
        expect: Err("longer than 255"),
    });
    v
}

/// Every file or folder under `root` whose name contains `evil`.
fn evil_under(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().contains("evil") {
                found.push(path.clone());
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_ends_verified_or_precise() {
    let cases = cases();
    let mut names = std::collections::BTreeSet::new();
    for case in &cases {
        assert!(
            names.insert(case.name.clone()),
            "two cases named {}",
            case.name
        );
        let env = env().await;
        for r in &case.rules {
            env.hub.inject(r.clone());
        }
        let result = env.pull(&env.client(), REPO).await;
        match (&case.expect, &result) {
            (Expect::Ok, Ok(report)) => env.assert_complete(report),
            (Expect::Err(needle), Err(e)) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(needle),
                    "{}: wanted {needle:?} in {msg}",
                    case.name
                );
                assert!(!msg.contains(TOKEN), "{}: token in error", case.name);
                env.assert_clean("main");
            }
            (_, other) => panic!(
                "{}: unexpected outcome {:?}",
                case.name,
                other.as_ref().map(|r| r.commit.clone())
            ),
        }
        assert_eq!(
            env.hub.token_leaks(),
            0,
            "{}: token sent to the CDN",
            case.name
        );
        // Every rule of the case fired (the second rule of a two-rule case too).
        for (i, rule) in case.rules.iter().enumerate() {
            assert!(
                rule.fired() > 0,
                "{}: rule {} ({:?}) never fired",
                case.name,
                i + 1,
                rule.fault
            );
        }
        // Nothing landed where a hostile name points: `../evil` from the revision folder is
        // `<cache>/org--tiny/evil`, `../../evil` is `<cache>/evil`, one more is next to the
        // cache, and `/etc/evil` is absolute.
        let root = env.cache_dir.path();
        assert_eq!(
            evil_under(root),
            Vec::<std::path::PathBuf>::new(),
            "{}",
            case.name
        );
        assert!(
            !root.parent().unwrap().join("evil").exists(),
            "{}",
            case.name
        );
        assert!(!std::path::Path::new("/etc/evil").exists(), "{}", case.name);
        env.hub.stop().await;
    }
    println!(
        "fault suite: {} cases, each fault seen to fire",
        cases.len()
    );
    assert_eq!(
        names.len(),
        35,
        "the table changed: update this count with it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let env = env().await;
    env.hub.inject(on(
        Role::Hub,
        "/revision/",
        1..=1,
        Fault::Status {
            status: 429,
            retry_after: Some("1".into()),
        },
    ));
    env.pull(&env.client(), REPO).await.unwrap();
    let log: Vec<_> = env
        .hub
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/revision/"))
        .collect();
    assert_eq!(log.len(), 2);
    let gap = log[1].at - log[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "retried after {gap:?} despite Retry-After: 1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_uses_range_after_a_cut() {
    let env = env().await;
    env.hub
        .inject(on(Role::Cdn, "/blobs/", 1..=1, Fault::CloseAt(150_000)));
    let report = env.pull(&env.client(), REPO).await.unwrap();
    env.assert_complete(&report);
    let ranges: Vec<_> = env
        .hub
        .requests()
        .into_iter()
        .filter(|r| r.role == Role::Cdn)
        .filter_map(|r| r.range)
        .collect();
    assert_eq!(ranges.len(), 1, "{ranges:?}");
    let start: u64 = ranges[0]
        .trim_start_matches("bytes=")
        .trim_end_matches('-')
        .parse()
        .unwrap();
    assert!(start > 0 && start <= 150_000, "{ranges:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_retried_statuses_are_not_retried() {
    for s in [401u16, 403, 404] {
        let env = env().await;
        env.hub
            .inject(on(Role::Hub, "/revision/", 1..=100, status(s)));
        let err = env.pull(&env.client(), REPO).await.unwrap_err();
        let hits = env
            .hub
            .requests()
            .iter()
            .filter(|r| r.path.contains("/revision/"))
            .count();
        assert_eq!(hits, 1, "{s} was retried: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branch_moved_between_listing_and_download_keeps_one_commit() {
    let env = env().await;
    let old_commit = env
        .hub
        .mirror()
        .update_repo(REPO, |r| r.refs["main"].clone())
        .unwrap();
    let mirror = env.hub.mirror().clone();
    let mut moved = env.files.clone();
    moved.insert("config.json".into(), b"{\"moved\": true}".to_vec());
    let new_files = spice_hf_testkit::mirror_files(&moved);
    env.hub.inject(on(
        Role::Hub,
        "/tree/",
        1..=1,
        Fault::Hook(std::sync::Arc::new(move || {
            mirror.update_repo(REPO, |r| r.commit("main", new_files.clone()));
        })),
    ));
    let report = env.pull(&env.client(), REPO).await.unwrap();
    assert_eq!(report.commit, old_commit);
    env.assert_complete(&report);
    let resolved: Vec<_> = env
        .hub
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/resolve/"))
        .collect();
    assert!(
        resolved.iter().all(|r| r.path.contains(&old_commit)),
        "a file was fetched by branch name"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_redirect_keeps_token_cross_origin_drops_it() {
    let env = env().await;
    // A renamed repository: the hub answers 307 with a relative Location on the same origin.
    let commit = env
        .hub
        .mirror()
        .update_repo(REPO, |r| r.refs["main"].clone())
        .unwrap();
    let target = format!("/{REPO}/resolve/{commit}/config.json?renamed=1");
    env.hub.inject(on(
        Role::Hub,
        "/config.json",
        1..=1,
        Fault::RedirectTo(target),
    ));
    env.pull(&env.client(), REPO).await.unwrap();
    let log = env.hub.requests();
    let followed: Vec<_> = log
        .iter()
        .filter(|r| r.role == Role::Hub && r.path.ends_with("/config.json"))
        .collect();
    assert_eq!(followed.len(), 2);
    assert!(
        followed.iter().all(|r| r.authorization),
        "token dropped on a same-origin redirect"
    );
    assert!(log.iter().any(|r| r.role == Role::Cdn), "no CDN traffic");
    assert_eq!(env.hub.token_leaks(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_is_a_network_error_after_retries() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client = HubClient::new(fast_config(&format!("http://127.0.0.1:{port}"), None)).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let err = client
        .pull(
            &Cache::new(cache.path()),
            &ModelRef::parse(REPO).unwrap(),
            &PullOptions::default(),
            &NoProgress,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("connection failed") && err.contains("5 attempts"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_parallel_download_survives_a_reset_range() {
    let env = env().await;
    // The second range request to the CDN is cut; only that range is retried.
    env.hub
        .inject(on(Role::Cdn, "/blobs/", 2..=2, Fault::ResetAt(10_000)));
    let opts = PullOptions {
        range_parallel: Some(spice_hf_hub::RangeParallel {
            min_size: 100_000,
            chunk_size: 64 * 1024,
            connections: 3,
        }),
        ..PullOptions::default()
    };
    let report = env
        .client()
        .pull(
            &env.cache(),
            &ModelRef::parse(REPO).unwrap(),
            &opts,
            &NoProgress,
        )
        .await
        .unwrap();
    env.assert_complete(&report);
    let ranges: Vec<String> = env
        .hub
        .requests()
        .into_iter()
        .filter(|r| r.role == Role::Cdn)
        .filter_map(|r| r.range)
        .collect();
    let size = env.files[WEIGHTS].len() as u64;
    let chunks = size.div_ceil(64 * 1024) as usize;
    assert_eq!(
        ranges.len(),
        chunks + 1,
        "one range per chunk plus one retry: {ranges:?}"
    );
    assert!(
        ranges
            .iter()
            .all(|r| r.starts_with("bytes=") && r.contains('-') && !r.ends_with('-')),
        "{ranges:?}"
    );
    assert_eq!(env.hub.token_leaks(), 0);
}

//! Private and gated repositories, token handling, and errors told apart by `X-Error-Code`.

use spice_hf_hub::Error;
use spice_hf_mirror::{Mirror, Visibility};
use spice_hf_testkit::{FakeHub, Role, repo_with};

use super::*;

const GRANTED: &str = "hf_granted_token_abc";
const OTHER: &str = "hf_other_valid_token";

async fn restricted_hub() -> FakeHub {
    let files = source_files();
    let mirror = Mirror::new();
    for (id, vis) in [
        ("org/private", Visibility::Private),
        ("org/gated", Visibility::Gated),
    ] {
        let mut repo = repo_with(id, &files);
        repo.visibility = vis;
        repo.tokens.insert(GRANTED.to_string());
        mirror.add_repo(repo);
    }
    mirror.add_valid_tokens([OTHER.to_string()]);
    FakeHub::start(mirror).await.unwrap()
}

async fn pull_as(
    hub: &FakeHub,
    repo: &str,
    token: Option<&str>,
) -> (spice_hf_hub::Result<PullReport>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let client = HubClient::new(fast_config(hub.url(), token)).unwrap();
    let r = client
        .pull(
            &Cache::new(dir.path()),
            &ModelRef::parse(repo).unwrap(),
            &PullOptions::default(),
            &NoProgress,
        )
        .await;
    (r, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_and_gated_errors_say_what_to_do() {
    let hub = restricted_hub().await;
    type Check = fn(&Error) -> bool;
    let cases: [(&str, Option<&str>, Check, &str); 7] = [
        (
            "org/private",
            None,
            |e| {
                matches!(
                    e,
                    Error::RepoNotFound {
                        authenticated: false,
                        ..
                    }
                )
            },
            "set hf_token",
        ),
        (
            "org/private",
            Some(OTHER),
            |e| {
                matches!(
                    e,
                    Error::RepoNotFound {
                        authenticated: true,
                        ..
                    }
                )
            },
            "read access",
        ),
        (
            "org/private",
            Some("hf_wrong"),
            |e| matches!(e, Error::InvalidToken { .. }),
            "refused the Hugging Face token",
        ),
        (
            "org/gated",
            None,
            |e| {
                matches!(
                    e,
                    Error::Gated {
                        authenticated: false,
                        ..
                    }
                )
            },
            "accept its licence",
        ),
        (
            "org/gated",
            Some(OTHER),
            |e| {
                matches!(
                    e,
                    Error::Gated {
                        authenticated: true,
                        ..
                    }
                )
            },
            "accept its licence on the model page",
        ),
        (
            "org/missing",
            Some(OTHER),
            |e| matches!(e, Error::RepoNotFound { .. }),
            "not found",
        ),
        (
            "org/gated@nope",
            Some(GRANTED),
            |e| matches!(e, Error::RevisionNotFound { .. }),
            "pin a branch",
        ),
    ];
    for (repo, token, check, needle) in cases {
        let (r, _dir) = pull_as(&hub, repo, token).await;
        let err = r.expect_err(repo);
        let msg = err.to_string();
        assert!(check(&err), "{repo} {token:?}: {err:?}");
        assert!(msg.contains(needle), "{repo}: {msg}");
        assert!(
            msg.contains("request id mirror-"),
            "{repo}: no request id in {msg}"
        );
        for t in [GRANTED, OTHER, "hf_wrong"] {
            assert!(
                !msg.contains(t) && !format!("{err:?}").contains(t),
                "token in error: {msg}"
            );
        }
    }
    for repo in ["org/private", "org/gated"] {
        let (r, dir) = pull_as(&hub, repo, Some(GRANTED)).await;
        let report = r.unwrap();
        assert_eq!(report.files.len(), source_files().len());
        assert!(
            dir.path()
                .join(repo.replace('/', "--"))
                .join("main/model.safetensors")
                .exists()
        );
    }
    let log = hub.requests();
    assert!(
        log.iter()
            .filter(|r| r.role == Role::Hub)
            .all(|r| r.authorization || r.status == 401)
    );
    assert!(log.iter().any(|r| r.role == Role::Cdn));
    assert_eq!(hub.token_leaks(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entry_not_found_names_the_file() {
    let env = env().await;
    env.hub.inject(spice_hf_testkit::FaultRule::new(
        Role::Hub,
        "/config.json",
        1..=1,
        spice_hf_testkit::Fault::Status {
            status: 404,
            retry_after: None,
        },
    ));
    // A bare 404 without X-Error-Code is an HTTP error naming the file, not retried.
    let err = env.pull(&env.client(), REPO).await.unwrap_err().to_string();
    assert!(err.contains("config.json") && err.contains("404"), "{err}");
}

#[test]
fn endpoint_credentials_are_refused_and_never_shown() {
    for endpoint in [
        "http://alice:s3cr3t-pass@127.0.0.1:9",
        "https://s3cr3t-pass@hub.example/",
        "http://alice:s3cr3t-pass@",
    ] {
        let config = spice_hf_hub::HubConfig {
            endpoint: endpoint.to_string(),
            ..spice_hf_hub::HubConfig::default()
        };
        let err = spice_hf_hub::HubClient::new(config)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cr3t-pass"), "{endpoint}: {err}");
        assert!(err.contains("***@"), "{endpoint}: {err}");
    }
}

//! `spice-hf mirror serve --upstream URL` as a real process in front of the fake Hub (the
//! mirror with a fault layer), pulled from by real `spice-hf pull` processes: one upstream
//! download per file for two clients at once, a third pull with the upstream stopped, and a
//! gated repository refused or served exactly as the upstream decides for each client's token.

use std::io::{BufRead as _, BufReader};

use sha2::Digest as _;
use spice_hf_mirror::{Repo, Visibility};
use spice_hf_testkit::mirror_files;

use super::*;

/// The mirror binary in pull-through mode, killed on drop.
struct PullThrough {
    child: std::process::Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Drop for PullThrough {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pull_through(upstream: &str) -> PullThrough {
    let dir = tempfile::tempdir().unwrap();
    let mut c = spice("http://unused", dir.path());
    // The mirror's own environment has a token; it must never be what the upstream sees.
    c.env("HF_TOKEN", "hf_mirror_own_token_never_used");
    c.args(["mirror", "serve"]).arg(dir.path()).args([
        "--upstream",
        upstream,
        "--addr",
        "127.0.0.1:0",
    ]);
    c.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = c.spawn().unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let url = first
        .trim()
        .rsplit("HF_ENDPOINT=")
        .next()
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string();
    assert!(first.contains("pull-through"), "{first}");
    PullThrough { child, url, dir }
}

fn pull(endpoint: &str, cache: &Path, repo: &str, token: Option<&str>) -> Command {
    let mut c = spice(endpoint, cache);
    if let Some(t) = token {
        c.env("HF_TOKEN", t);
    }
    c.args(["pull", repo]);
    c
}

/// Upstream GETs of each file of `repo` (hub `resolve` for small files, CDN blobs for LFS).
fn upstream_file_gets(hub: &FakeHub, repo: &str) -> BTreeMap<String, usize> {
    let mut gets = BTreeMap::new();
    for r in hub.requests() {
        if r.method != "GET" {
            continue;
        }
        let key = match r.role {
            Role::Hub => match r.path.split_once(&format!("/{repo}/resolve/")) {
                Some((_, rest)) => rest.split_once('/').map(|(_, f)| f.to_string()),
                None => None,
            },
            Role::Cdn => r
                .path
                .strip_prefix("/blobs/")
                .map(|b| format!("blob {}", b.split('?').next().unwrap_or(b))),
        };
        if let Some(k) = key {
            *gets.entry(k).or_insert(0) += 1;
        }
    }
    gets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_one_upstream_download_then_served_with_the_upstream_down() {
    let files = fixtures::tiny_llama_files(6);
    let hub = hub_with(&files).await;
    // The first blob trickles, so the second client asks while the first fetch runs.
    hub.slow_downloads(1..=1, 32 * 1024, Duration::from_millis(10));
    let mirror = pull_through(hub.url());

    let caches = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let runs: Vec<_> = caches
        .iter()
        .map(|c| output(pull(&mirror.url, c.path(), REPO, None)))
        .collect();
    for out in futures_util::future::join_all(runs).await {
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    // Exactly one upstream GET per file, for two clients.
    let gets = upstream_file_gets(&hub, REPO);
    let lfs = files
        .iter()
        .filter(|(p, b)| spice_hf_mirror::is_lfs_name(p, b.len() as u64))
        .count();
    assert_eq!(
        gets.values().filter(|n| **n > 0).count(),
        files.len() + lfs,
        "one hub GET per file plus one CDN GET per LFS file: {gets:?}"
    );
    assert!(gets.values().all(|n| *n == 1), "{gets:?}");
    assert_eq!(hub.token_leaks(), 0);

    // The upstream goes away; a third client still gets every file, verified.
    hub.stop().await;
    let third = tempfile::tempdir().unwrap();
    let out = output(pull(&mirror.url, third.path(), REPO, None)).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dir = Cache::new(third.path()).revision(REPO, "main").unwrap();
    assert!(dir.verify().unwrap().is_clean());
    for (path, bytes) in &files {
        let got = std::fs::read(dir.file_path(path).unwrap()).unwrap();
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&got)),
            hex::encode(sha2::Sha256::digest(bytes)),
            "{path}"
        );
    }
    // A repository it never fetched cannot be served without the upstream: 503, said so.
    let resp = reqwest::get(format!(
        "{}/api/models/org/never-seen/revision/main",
        mirror.url
    ))
    .await
    .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let body = resp.text().await.unwrap();
    assert!(body.contains("upstream Hub is unavailable"), "{body}");
    drop(mirror);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gated_file_goes_only_to_clients_the_upstream_accepts() {
    let files = fixtures::tiny_llama_files(7);
    let upstream = Mirror::new();
    let mut gated = Repo::new("org/gated");
    gated.visibility = Visibility::Gated;
    gated.tokens.insert("hf_granted_user_token".into());
    gated.commit("main", mirror_files(&files));
    upstream.add_repo(gated);
    // A valid user who was not granted access.
    upstream.add_valid_tokens(["hf_other_user_token".to_string()]);
    let hub = FakeHub::start(upstream).await.unwrap();
    let mirror = pull_through(hub.url());

    let refused = [
        None,
        Some("hf_other_user_token"),
        Some("hf_not_a_user_token"),
    ];
    for token in refused {
        let cache = tempfile::tempdir().unwrap();
        let out = output(pull(&mirror.url, cache.path(), "org/gated", token)).await;
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{token:?} was served: {err}");
        assert!(
            err.contains("gated") || err.contains("restricted") || err.contains("token"),
            "{token:?}: {err}"
        );
        let dir = Cache::new(cache.path())
            .revision("org/gated", "main")
            .unwrap();
        assert!(!dir.file_path("model.safetensors").unwrap().exists());
    }
    // The granted user gets it, through the mirror, verified.
    let cache = tempfile::tempdir().unwrap();
    let out = output(pull(
        &mirror.url,
        cache.path(),
        "org/gated",
        Some("hf_granted_user_token"),
    ))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dir = Cache::new(cache.path())
        .revision("org/gated", "main")
        .unwrap();
    assert!(dir.verify().unwrap().is_clean());
    // Cached now, it is still refused to the others (the upstream decides per client).
    for token in refused {
        let other = tempfile::tempdir().unwrap();
        let out = output(pull(&mirror.url, other.path(), "org/gated", token)).await;
        assert!(!out.status.success(), "{token:?} was served from the cache");
    }
    // No token was written to the mirror's disk.
    let mut stack = vec![mirror.dir.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                let text = String::from_utf8_lossy(&bytes);
                assert!(
                    !text.contains("user_token") && !text.contains("mirror_own"),
                    "a token in {}",
                    p.display()
                );
            }
        }
    }
    assert_eq!(hub.token_leaks(), 0);
}

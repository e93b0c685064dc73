//! What the cache promises across pulls: no re-download, no network for a complete pinned
//! commit, offline mode, adoption of hand-placed files, resume of a crashed `.part`, a moving
//! branch, selection and pagination.

use spice_hf_hub::{PulledState, Selection};
use spice_hf_testkit::Role;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_pull_downloads_nothing_and_pinned_pull_makes_no_request() {
    let env = env().await;
    let client = env.client();
    let first = env.pull(&client, REPO).await.unwrap();
    assert!(
        first
            .files
            .iter()
            .all(|f| f.state == PulledState::Downloaded)
    );
    env.hub.faults().clear_log();

    let second = env.pull(&client, REPO).await.unwrap();
    assert!(second.files.iter().all(|f| f.state == PulledState::Cached));
    let log = env.hub.requests();
    assert!(
        log.iter().all(|r| r.path.contains("/api/")),
        "files fetched again: {log:?}"
    );

    // Pin the commit: first pull of the pinned revision downloads, the next makes no request.
    let pinned = format!("{REPO}@{}", first.commit);
    env.pull(&client, &pinned).await.unwrap();
    env.hub.faults().clear_log();
    let third = env.pull(&client, &pinned).await.unwrap();
    assert!(!third.used_network);
    assert!(env.hub.requests().is_empty(), "{:?}", env.hub.requests());
    assert_eq!(third.files.len(), env.files.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_serves_the_cache_or_names_the_missing_file() {
    let env = env().await;
    let mut cfg = fast_config(env.hub.url(), Some(TOKEN));
    cfg.offline = true;
    let offline = HubClient::new(cfg).unwrap();
    let err = env.pull(&offline, REPO).await.unwrap_err().to_string();
    assert!(
        err.contains("offline") && err.contains("not in the cache"),
        "{err}"
    );

    env.pull(&env.client(), REPO).await.unwrap();
    env.hub.faults().clear_log();
    let report = env.pull(&offline, REPO).await.unwrap();
    assert!(!report.used_network);
    assert_eq!(report.files.len(), env.files.len());

    std::fs::remove_file(report.dir.join("tokenizer.json")).unwrap();
    let err = env.pull(&offline, REPO).await.unwrap_err().to_string();
    assert!(err.contains("\"tokenizer.json\""), "{err}");
    assert!(env.hub.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_placed_files_are_adopted_and_wrong_ones_replaced() {
    let env = env().await;
    let dir = env.cache().revision(REPO, "main").unwrap();
    dir.create().unwrap();
    std::fs::write(
        dir.file_path("config.json").unwrap(),
        &env.files["config.json"],
    )
    .unwrap();
    std::fs::write(
        dir.file_path("tokenizer.json").unwrap(),
        b"not the tokenizer",
    )
    .unwrap();
    let report = env.pull(&env.client(), REPO).await.unwrap();
    let state = |p: &str| report.files.iter().find(|f| f.path == p).unwrap().state;
    assert_eq!(state("config.json"), PulledState::Adopted);
    assert_eq!(state("tokenizer.json"), PulledState::Downloaded);
    env.assert_complete(&report);
    assert!(
        !env.hub
            .requests()
            .iter()
            .any(|r| r.path.ends_with("/config.json"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_left_by_a_crash_is_resumed_with_range() {
    let env = env().await;
    let dir = env.cache().revision(REPO, "main").unwrap();
    dir.create().unwrap();
    let target = dir.file_path(WEIGHTS).unwrap();
    std::fs::write(
        spice_hf_cache::part_path(&target),
        &env.files[WEIGHTS][..123_456],
    )
    .unwrap();
    let report = env.pull(&env.client(), REPO).await.unwrap();
    env.assert_complete(&report);
    let ranges: Vec<_> = env
        .hub
        .requests()
        .into_iter()
        .filter(|r| r.role == Role::Cdn)
        .map(|r| r.range)
        .collect();
    assert_eq!(ranges, vec![Some("bytes=123456-".to_string())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_branch_refetches_only_changed_files() {
    let env = env().await;
    let client = env.client();
    let first = env.pull(&client, REPO).await.unwrap();
    let mut changed = env.files.clone();
    changed.insert("config.json".into(), b"{\"v\": 2}".to_vec());
    let files = spice_hf_testkit::mirror_files(&changed);
    env.hub
        .mirror()
        .update_repo(REPO, |r| r.commit("main", files));
    env.hub.faults().clear_log();
    let second = env.pull(&client, REPO).await.unwrap();
    assert_ne!(first.commit, second.commit);
    let downloaded: Vec<_> = second
        .files
        .iter()
        .filter(|f| f.state == PulledState::Downloaded)
        .map(|f| f.path.as_str())
        .collect();
    assert_eq!(downloaded, vec!["config.json"]);
    assert_eq!(
        std::fs::read(second.dir.join("config.json")).unwrap(),
        b"{\"v\": 2}"
    );
    let m = env
        .cache()
        .revision(REPO, "main")
        .unwrap()
        .manifest()
        .unwrap()
        .unwrap();
    assert_eq!(m.commit, second.commit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selection_and_pagination() {
    let env = env().await;
    env.hub.mirror().set_page_size(2);
    let opts = PullOptions {
        selection: Selection {
            include: vec!["*.json".into()],
            exclude: vec!["generation_config.json".into()],
            quant: None,
        },
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
    let got: Vec<_> = report.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        got,
        vec!["config.json", "tokenizer.json", "tokenizer_config.json"]
    );
    let pages = env
        .hub
        .requests()
        .iter()
        .filter(|r| r.path.contains("/tree/"))
        .count();
    assert!(pages >= 4, "listing was not paginated ({pages} pages)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_file_changed_on_disk_is_not_a_hit() {
    let env = env().await;
    let client = env.client();
    let first = env.pull(&client, REPO).await.unwrap();
    let (name, original) = env
        .files
        .iter()
        .max_by_key(|(_, b)| b.len())
        .map(|(n, b)| (n.clone(), b.clone()))
        .unwrap();
    let path = first.dir.join(&name);
    let flip = |p: &std::path::Path| {
        let mut bytes = std::fs::read(p).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        std::fs::write(p, &bytes).unwrap();
    };
    // Same size, one byte different: the next pull fetches it again.
    flip(&path);
    let second = env.pull(&client, REPO).await.unwrap();
    let state =
        |r: &spice_hf_hub::PullReport| r.files.iter().find(|f| f.path == name).unwrap().state;
    assert_eq!(state(&second), PulledState::Downloaded);
    assert_eq!(std::fs::read(&path).unwrap(), original);
    // Untouched, it is a hit again (no download).
    let third = env.pull(&client, REPO).await.unwrap();
    assert_eq!(state(&third), PulledState::Cached);
    // The pinned, network-free path proves the same before it answers from the cache.
    let pinned = format!("{REPO}@{}", first.commit);
    env.pull(&client, &pinned).await.unwrap();
    let pinned_path = env.pull(&client, &pinned).await.unwrap().dir.join(&name);
    flip(&pinned_path);
    let again = env.pull(&client, &pinned).await.unwrap();
    assert!(
        again.used_network,
        "a corrupt file was served from the cache"
    );
    assert_eq!(std::fs::read(&pinned_path).unwrap(), original);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_planted_in_the_cache_never_redirect_writes() {
    let env = env().await;
    let client = env.client();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, b"not yours").unwrap();
    let dir = env_cache_dir(&env);
    std::fs::create_dir_all(&dir).unwrap();
    // A `.part` name pointing outside: removed, the download goes into the cache.
    let (name, original) = env
        .files
        .iter()
        .next()
        .map(|(n, b)| (n.clone(), b.clone()))
        .unwrap();
    std::os::unix::fs::symlink(&victim, dir.join(format!("{name}.part"))).unwrap();
    let report = env.pull(&client, REPO).await.unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"not yours");
    assert_eq!(std::fs::read(report.dir.join(&name)).unwrap(), original);
    // The file itself replaced by a link: refused with a message naming it, nothing written.
    std::fs::remove_file(report.dir.join(&name)).unwrap();
    std::os::unix::fs::symlink(&victim, report.dir.join(&name)).unwrap();
    let err = env.pull(&client, REPO).await.unwrap_err().to_string();
    assert!(
        err.contains("symbolic link") && err.contains(&name),
        "{err}"
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"not yours");
}

fn env_cache_dir(env: &Env) -> std::path::PathBuf {
    spice_hf_cache::Cache::new(env.cache_dir.path())
        .revision(REPO, "main")
        .unwrap()
        .path()
        .to_path_buf()
}

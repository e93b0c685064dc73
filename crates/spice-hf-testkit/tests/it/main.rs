//! The real `hf-hub` crate downloads from the mirror (through the 302 to the CDN listener).

use spice_hf_mirror::Mirror;
use spice_hf_testkit::{FakeHub, Role, fixtures, hfhub, repo_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hf_hub_crate_downloads_from_the_mirror() {
    let mut files = fixtures::tiny_llama_files(11);
    files.insert("nested/dir/notes.txt".into(), b"hello\n".to_vec());
    let mirror = Mirror::new();
    mirror.add_repo(repo_with("org/tiny", &files));
    let hub = FakeHub::start(mirror).await.unwrap();
    let cache = tempfile::tempdir().unwrap();
    let dir = hfhub::snapshot(hub.url(), "org", "tiny", cache.path())
        .await
        .unwrap();
    for (name, bytes) in &files {
        assert_eq!(&std::fs::read(dir.join(name)).unwrap(), bytes, "{name}");
    }
    assert!(
        hub.requests().iter().any(|r| r.role == Role::Cdn),
        "the LFS file did not go through the CDN"
    );
    assert_eq!(hub.token_leaks(), 0);
}

//! Unit tests of the mirror's data model and directory loading.

use std::collections::BTreeMap;

use super::*;

#[test]
fn git_oid_matches_git() {
    // `printf 'hello\n' | git hash-object --stdin`
    assert_eq!(
        MirrorFile::from_bytes(&b"hello\n"[..], false).git_oid,
        "ce013625030ba8dba906f756967f9e9ca394464a"
    );
    let lfs = MirrorFile::from_bytes(&b"abc"[..], true);
    assert_eq!(
        lfs.etag(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn resolve_refs_commits_and_prefixes() {
    let mut repo = Repo::new("o/n");
    let a = repo.commit(
        "main",
        BTreeMap::from([("a".to_string(), MirrorFile::from_bytes(&b"1"[..], false))]),
    );
    let b = repo.commit(
        "refs/pr/1",
        BTreeMap::from([("a".to_string(), MirrorFile::from_bytes(&b"2"[..], false))]),
    );
    assert_ne!(a, b);
    assert_eq!(repo.resolve("main").unwrap().id, a);
    assert_eq!(repo.resolve("refs/pr/1").unwrap().id, b);
    assert_eq!(repo.resolve(&b.to_uppercase()).unwrap().id, b);
    assert_eq!(repo.resolve(&a[..8]).unwrap().id, a);
    assert!(repo.resolve("nope").is_none());
    assert!(repo.resolve(&a[..6]).is_none());
}

#[test]
fn load_dir_finds_orgs_single_ids_branches_and_access() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("org/model/sub")).unwrap();
    std::fs::write(d.join("org/model/config.json"), b"{}").unwrap();
    std::fs::write(d.join("org/model/sub/w.safetensors"), b"weights").unwrap();
    std::fs::write(d.join("org/model/.hidden"), b"x").unwrap();
    std::fs::create_dir_all(d.join("org/model@dev")).unwrap();
    std::fs::write(d.join("org/model@dev/config.json"), b"{\"dev\":1}").unwrap();
    std::fs::create_dir_all(d.join("gpt2")).unwrap();
    std::fs::write(d.join("gpt2/config.json"), b"{}").unwrap();
    let access: AccessConfig = serde_json::from_str(
        r#"{"repos": {"org/model": {"visibility": "gated", "tokens": ["hf_a"]}}}"#,
    )
    .unwrap();
    let repos = load_dir(d, &access).unwrap();
    let ids: Vec<&str> = repos.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, vec!["gpt2", "org/model"]);
    let m = &repos[1];
    assert_eq!(m.visibility, Visibility::Gated);
    assert!(m.tokens.contains("hf_a"));
    let main = m.resolve("main").unwrap();
    assert_eq!(
        main.files.keys().collect::<Vec<_>>(),
        vec!["config.json", "sub/w.safetensors"]
    );
    assert!(main.files["sub/w.safetensors"].lfs_sha256.is_some());
    assert!(main.files["config.json"].lfs_sha256.is_none());
    assert_eq!(m.resolve("dev").unwrap().files.len(), 1);
    let bad: Result<AccessConfig, _> = serde_json::from_str(r#"{"repoz": {}}"#);
    assert!(bad.is_err());
}

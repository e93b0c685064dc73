//! Unit tests for the cache: path rules, hashes, verified writes, locks, adoption, verify.

use std::time::Duration;

use super::*;

#[test]
fn checked_join_table() {
    let base = Path::new("/cache/rev");
    let ok = [
        ("config.json", "/cache/rev/config.json"),
        ("onnx/model.onnx", "/cache/rev/onnx/model.onnx"),
        ("a b/#1 [x] %+ü.txt", "/cache/rev/a b/#1 [x] %+ü.txt"),
        (".hidden", "/cache/rev/.hidden"),
    ];
    for (rel, want) in ok {
        assert_eq!(checked_join(base, rel).unwrap(), Path::new(want), "{rel}");
    }
    let long = "x".repeat(256);
    let bad = [
        "",
        "..",
        "../etc/passwd",
        "a/../../b",
        "./a",
        "/etc/passwd",
        "C:\\Windows\\x",
        "C:x",
        "d:/x",
        "\\\\host\\share\\x",
        "a\\b",
        "a\0b",
        "a//b",
        "a/",
        "CON",
        "dir/nul.txt",
        "com1",
        "file:stream",
        "trailing.",
        "trailing ",
        "a\nb",
        long.as_str(),
    ];
    for rel in bad {
        let err = checked_join(base, rel).unwrap_err();
        assert!(
            matches!(err, Error::UnsafePath { .. }),
            "{rel:?} gave {err}"
        );
    }
}

#[test]
fn unsafe_path_error_names_the_path() {
    let msg = checked_join(Path::new("/c"), "../x")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("../x") && msg.contains(".."), "{msg}");
}

#[test]
fn revision_dir_layout_and_reserved_names() {
    let cache = Cache::new("/root");
    // Revision folders never nest: `refs` would contain `refs/pr/1`.
    for nested in ["refs", "Refs", "REFS"] {
        let err = cache.revision("org/name", nested).unwrap_err().to_string();
        assert!(
            err.contains("refs/pr/N") && err.contains("commit id"),
            "{err}"
        );
    }
    let rev = cache.revision("org/name", "refs/pr/1").unwrap();
    assert_eq!(rev.path(), Path::new("/root/org--name/refs/pr/1"));
    assert!(cache.revision("org/name", "../x").is_err());
    assert!(cache.revision("../org", "main").is_err());
    for reserved in [MANIFEST_FILE, LOCK_FILE, "model.safetensors.part"] {
        assert!(rev.file_path(reserved).is_err(), "{reserved}");
    }
}

#[test]
fn hashes_match_git_and_sha256() {
    // `git hash-object` of "hello\n" and `sha256sum` of "abc".
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    std::fs::write(&p, b"hello\n").unwrap();
    let git = ContentHash::GitSha1("0".repeat(40));
    assert_eq!(
        hash_file(&p, &git).unwrap(),
        ContentHash::from_etag("ce013625030ba8dba906f756967f9e9ca394464a").unwrap()
    );
    std::fs::write(&p, b"abc").unwrap();
    let sha = ContentHash::Sha256("0".repeat(64));
    assert_eq!(
        hash_file(&p, &sha).unwrap().hex(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn etag_parsing() {
    let h = ContentHash::from_etag("W/\"CE013625030BA8DBA906F756967F9E9CA394464A\"").unwrap();
    assert_eq!(
        h,
        ContentHash::GitSha1("ce013625030ba8dba906f756967f9e9ca394464a".into())
    );
    for bad in ["\"../../x\"", "", "abc", &"g".repeat(40), &"a".repeat(41)] {
        assert!(ContentHash::from_etag(bad).is_err(), "{bad}");
    }
}

fn expected_for(data: &[u8]) -> Expected {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x");
    std::fs::write(&p, data).unwrap();
    let hash = hash_file(&p, &ContentHash::Sha256(String::new())).unwrap();
    Expected {
        size: data.len() as u64,
        hash,
    }
}

#[test]
fn part_file_resumes_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("sub/model.bin");
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let expected = expected_for(&data);

    let mut part = PartFile::open(&target, expected.clone()).unwrap();
    part.write(&data[..40_000]).unwrap();
    drop(part); // a crash: the .part stays

    let mut part = PartFile::open(&target, expected.clone()).unwrap();
    assert_eq!(part.offset(), 40_000);
    part.write(&data[40_000..]).unwrap();
    let done = part.finish().unwrap();
    assert_eq!(std::fs::read(done).unwrap(), data);
    assert!(!part_path(&target).exists());
}

#[test]
fn part_file_hash_mismatch_deletes_and_never_renames() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("model.bin");
    let data = vec![7u8; 4096];
    let expected = expected_for(&data);
    let mut corrupt = data.clone();
    corrupt[100] ^= 1;
    let mut part = PartFile::open(&target, expected).unwrap();
    part.write(&corrupt).unwrap();
    let err = part.finish().unwrap_err();
    assert!(matches!(err, Error::HashMismatch { .. }), "{err}");
    assert!(err.to_string().contains("model.bin"));
    assert!(!target.exists());
    assert!(!part_path(&target).exists());
}

#[test]
fn part_file_refuses_to_grow_past_size_and_short_files_fail() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("m");
    let expected = expected_for(&[1, 2, 3]);
    let mut part = PartFile::open(&target, expected.clone()).unwrap();
    assert!(matches!(
        part.write(&[1, 2, 3, 4]),
        Err(Error::SizeMismatch { .. })
    ));
    let mut part = PartFile::open(&target, expected).unwrap();
    part.write(&[1, 2]).unwrap();
    assert!(matches!(part.finish(), Err(Error::SizeMismatch { .. })));
    assert!(!target.exists());
}

#[test]
fn lock_is_exclusive_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let rev = Cache::new(dir.path()).revision("o/n", "main").unwrap();
    let held = rev.lock(None).unwrap();
    let err = rev.lock(Some(Duration::from_millis(200))).unwrap_err();
    assert!(matches!(err, Error::LockTimeout { .. }), "{err}");
    drop(held);
    rev.lock(Some(Duration::from_millis(200))).unwrap();
}

#[test]
fn state_adopts_hand_placed_files_and_verify_reports() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path());
    let rev = cache.revision("o/n", "main").unwrap();
    rev.create().unwrap();
    let good = b"{\"a\":1}".to_vec();
    let expected = expected_for(&good);
    let mut manifest = Manifest::new("o/n", "main", &"a".repeat(40));

    assert_eq!(
        rev.state("config.json", &expected, &mut manifest).unwrap(),
        FileState::Missing { partial: 0 }
    );
    // Same size, wrong content: not adopted.
    std::fs::write(rev.file_path("config.json").unwrap(), b"{\"a\":2}").unwrap();
    assert!(matches!(
        rev.state("config.json", &expected, &mut manifest).unwrap(),
        FileState::Missing { .. }
    ));
    std::fs::write(rev.file_path("config.json").unwrap(), &good).unwrap();
    assert_eq!(
        rev.state("config.json", &expected, &mut manifest).unwrap(),
        FileState::Adopted
    );
    assert_eq!(
        rev.state("config.json", &expected, &mut manifest).unwrap(),
        FileState::Cached
    );
    rev.save_manifest(&manifest).unwrap();

    let listed = cache.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].manifest, manifest);
    assert_eq!(listed[0].size, good.len() as u64);

    assert!(rev.verify().unwrap().is_clean());
    // A manifest write interrupted by a crash leaves the writer's temporary file: the cache's
    // own, not an extra file.
    std::fs::write(crate::manifest::temp_path(&rev.manifest_path()), b"{").unwrap();
    assert!(
        rev.verify().unwrap().is_clean(),
        "{:?}",
        rev.verify().unwrap()
    );
    std::fs::write(rev.file_path("config.json").unwrap(), b"{\"a\":3}").unwrap();
    std::fs::write(rev.file_path("stray.txt").unwrap(), b"x").unwrap();
    let report = rev.verify().unwrap();
    assert_eq!(report.corrupt, vec!["config.json".to_string()]);
    assert_eq!(report.extra, vec!["stray.txt".to_string()]);
    assert!(!report.is_clean());

    assert!(cache.remove("o/n", None).unwrap() > 0);
    assert!(cache.list().unwrap().is_empty());
}

#[test]
fn free_space_check_refuses_impossible_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let rev = Cache::new(dir.path()).revision("o/n", "main").unwrap();
    drop(rev.reserve_space(&[("a", 1)], 1).unwrap());
    let err = rev.reserve_space(&[("a", u64::MAX)], u64::MAX).unwrap_err();
    assert!(err.to_string().contains("not enough free space"), "{err}");
}

/// Two pulls into one cache (here in one process, through separate open files, as a server
/// fetching two models does) cannot both hold space only one of them can have; a dropped or
/// abandoned reservation frees it. The two-process version, on a filesystem of a set size,
/// is the binary test `concurrent_pulls_share_the_free_space`.
#[test]
fn reservations_add_up_across_pulls_and_stale_ones_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path());
    let (a, b) = (
        cache.revision("o/a", "main").unwrap(),
        cache.revision("o/b", "main").unwrap(),
    );
    // 60 % each: together more than the disk has, whatever else is writing meanwhile.
    let share = fs4::available_space(dir.path()).unwrap() / 10 * 6;
    let held = a.reserve_space(&[("w.bin", share)], share).unwrap();
    let err = b.reserve_space(&[("w.bin", share)], share).unwrap_err();
    match &err {
        Error::NoSpace {
            reserved, pulls, ..
        } => {
            assert_eq!((*reserved, *pulls), (share, 1), "{err}");
        }
        other => panic!("expected NoSpace, got {other}"),
    }
    assert!(
        err.to_string().contains("reserved by another pull"),
        "{err}"
    );

    // Bytes the first pull has written are no longer counted as still to come.
    a.create().unwrap();
    std::fs::write(
        part_path(&a.file_path("w.bin").unwrap()),
        vec![7u8; 1 << 20],
    )
    .unwrap();
    let others = crate::reserve::others(&dir.path().join(RESERVATIONS_DIR)).unwrap();
    assert_eq!(others.pulls, 1);
    assert_eq!(others.bytes, share - (1 << 20));

    drop(held);
    let second = b.reserve_space(&[("w.bin", share)], share).unwrap();
    drop(second);

    // A reservation nobody holds (its process died) is removed, not counted.
    let stale = dir.path().join(RESERVATIONS_DIR).join("1-1.resv");
    std::fs::write(
        &stale,
        format!(r#"{{"pid":1,"files":[{{"path":"/x","size":{share}}}]}}"#),
    )
    .unwrap();
    let third = a.reserve_space(&[("w.bin", share)], share).unwrap();
    assert!(!stale.exists(), "the stale reservation is still there");
    drop(third);
    let left: Vec<_> = std::fs::read_dir(dir.path().join(RESERVATIONS_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".resv"))
        .collect();
    assert!(left.is_empty(), "reservations left behind: {left:?}");
}

#[test]
fn corrupt_manifest_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let rev = Cache::new(dir.path()).revision("o/n", "main").unwrap();
    rev.create().unwrap();
    std::fs::write(rev.manifest_path(), b"{not json").unwrap();
    let err = rev.manifest().unwrap_err();
    assert!(err.to_string().contains("cache verify"), "{err}");
}

#[test]
fn repo_id_table() {
    for ok in [
        "gpt2",
        "org/name",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "a.b_c/d-e.f",
    ] {
        validate_repo_id(ok).unwrap();
    }
    for bad in [
        "",
        "../org",
        "a/b/c",
        "a--b/c",
        "a/.b",
        "-a/b",
        "a /b",
        "a/b\0",
        "/a",
        "a/",
        &"x".repeat(97),
    ] {
        assert!(
            matches!(validate_repo_id(bad), Err(Error::InvalidRepoId { .. })),
            "{bad:?}"
        );
    }
}

#[test]
fn ranged_part_writes_at_offsets_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("big.bin");
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
    let expected = expected_for(&data);
    let part = RangedPart::create(&target, expected.clone()).unwrap();
    for chunk in [3, 0, 2, 1] {
        let a = chunk * 2500;
        part.write_at(a as u64, &data[a..a + 2500]).unwrap();
    }
    assert!(part.write_at(9_999, &[1, 2]).is_err());
    assert_eq!(std::fs::read(part.finish().unwrap()).unwrap(), data);

    // A hole (a range never written) fails verification and leaves nothing behind.
    let part = RangedPart::create(&target.with_extension("b"), expected).unwrap();
    part.write_at(0, &data[..5000]).unwrap();
    assert!(matches!(part.finish(), Err(Error::HashMismatch { .. })));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

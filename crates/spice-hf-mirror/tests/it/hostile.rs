//! The mirror against an attacker who knows a private file's hash, plants symbolic links or
//! stray files in the served directory, or sends their own `Host` and `cursor`: each case fails
//! on a mirror that signs links without a key, follows links out of its root, lets a public
//! one-segment repository swallow a private one, or builds `Link` from the request.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use sha1::Digest as _;
use spice_hf_mirror::{AccessConfig, Error, Mirror, MirrorFile, Repo, Visibility};

use crate::{client, header};

const SECRET: &[u8] = b"private weights: never without a token";

fn private_mirror() -> (Mirror, String) {
    let file = MirrorFile::from_bytes(SECRET, true);
    let sha = file.lfs_sha256.clone().unwrap();
    let mut repo = Repo::new("org/private");
    repo.visibility = Visibility::Private;
    repo.tokens.insert("hf_owner".into());
    repo.commit(
        "main",
        BTreeMap::from([("w.safetensors".to_string(), file)]),
    );
    let mirror = Mirror::new();
    mirror.add_repo(repo);
    (mirror, sha)
}

/// The link the mirror signed before it had a key: SHA-1 of public values only.
fn unkeyed_link(cdn: &str, sha: &str, exp: u64) -> String {
    let mut h = sha1::Sha1::new();
    h.update(format!("spice-hf-mirror:{sha}:{exp}").as_bytes());
    format!(
        "{cdn}/blobs/{sha}?sig={}&exp={exp}",
        hex::encode(h.finalize())
    )
}

#[tokio::test]
async fn cdn_links_cannot_be_forged_from_a_files_hash() {
    let (mirror, sha) = private_mirror();
    let m = mirror
        .spawn("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    // The owner's real link works.
    let r = client()
        .get(format!(
            "{}/org/private/resolve/main/w.safetensors",
            m.hub_url()
        ))
        .bearer_auth("hf_owner")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let real = header(&r, "location").to_string();
    let got = client().get(&real).send().await.unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.bytes().await.unwrap().as_ref(), SECRET);

    let sig = real
        .split("sig=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let real_exp: u64 = real.split("exp=").nth(1).unwrap().parse().unwrap();
    let mut flipped = sig.to_string().into_bytes();
    flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
    let flipped = String::from_utf8(flipped).unwrap();
    let cases = [
        (
            "unkeyed sha1 of hash and expiry",
            unkeyed_link(m.cdn_url(), &sha, exp),
        ),
        ("one hex digit changed", real.replace(sig, &flipped)),
        (
            "expiry moved later",
            real.replace(
                &format!("exp={real_exp}"),
                &format!("exp={}", real_exp + 86_400),
            ),
        ),
        (
            "signature truncated",
            real.replace(sig, &sig[..sig.len() - 2]),
        ),
        ("not hex", real.replace(sig, &"zz".repeat(32))),
        (
            "no signature",
            format!("{}/blobs/{sha}?exp={exp}", m.cdn_url()),
        ),
    ];
    for (case, url) in cases {
        let r = client().get(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{case}: {url}");
        assert!(
            !r.bytes()
                .await
                .unwrap()
                .windows(SECRET.len())
                .any(|w| w == SECRET),
            "{case}"
        );
    }
}

#[tokio::test]
async fn replicas_sharing_a_key_accept_each_others_links_and_others_do_not() {
    let key = [7u8; 32];
    let (a, _) = private_mirror();
    a.set_cdn_key(&key).unwrap();
    let (b, _) = private_mirror();
    b.set_cdn_key(&key).unwrap();
    let (c, _) = private_mirror();
    assert!(matches!(
        c.set_cdn_key(b"short"),
        Err(Error::WeakKey { len: 5 })
    ));
    let (a, b, c) = (
        a.spawn("127.0.0.1:0".parse().unwrap(), None).await.unwrap(),
        b.spawn("127.0.0.1:0".parse().unwrap(), None).await.unwrap(),
        c.spawn("127.0.0.1:0".parse().unwrap(), None).await.unwrap(),
    );
    let r = client()
        .get(format!(
            "{}/org/private/resolve/main/w.safetensors",
            a.hub_url()
        ))
        .bearer_auth("hf_owner")
        .send()
        .await
        .unwrap();
    let link = header(&r, "location").to_string();
    let on = |other: &str| link.replace(a.cdn_url(), other);
    assert_eq!(
        client().get(on(b.cdn_url())).send().await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        client().get(on(c.cdn_url())).send().await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
}

/// A served directory with one repository and what an attacker (or a careless operator)
/// planted next to it.
struct Planted {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
}

fn planted() -> Planted {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("served");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(root.join("org/m/sub")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), b"outside the served root").unwrap();
    std::fs::write(root.join("org/m/config.json"), b"{}").unwrap();
    std::fs::write(root.join("org/m/sub/a.txt"), b"a").unwrap();
    let link = |target: &std::path::Path, at: &str| {
        std::os::unix::fs::symlink(target, root.join(at)).unwrap();
    };
    link(&outside.join("secret.txt"), "org/m/leak.txt");
    link(&outside, "org/m/outdir");
    link(&root.join("org/m"), "org/m/sub/loop");
    link(
        std::path::Path::new("../config.json"),
        "org/m/sub/inside.json",
    );
    link(&root.join("org/m/nowhere"), "org/m/dangling.txt");
    link(&outside, "org2");
    Planted { _dir: dir, root }
}

#[tokio::test]
async fn symbolic_links_leaving_the_root_dangling_or_looping_are_not_served() {
    let p = planted();
    let mirror = Mirror::from_dir(&p.root, &AccessConfig::default()).unwrap();
    let m = mirror
        .spawn("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    let tree: serde_json::Value = client()
        .get(format!(
            "{}/api/models/org/m/tree/main?recursive=true",
            m.hub_url()
        ))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap();
    let mut paths: Vec<&str> = tree
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "file")
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    paths.sort_unstable();
    assert_eq!(paths, ["config.json", "sub/a.txt", "sub/inside.json"]);
    for (path, want) in [
        ("leak.txt", StatusCode::NOT_FOUND),
        ("outdir/secret.txt", StatusCode::NOT_FOUND),
        ("sub/loop/config.json", StatusCode::NOT_FOUND),
        ("dangling.txt", StatusCode::NOT_FOUND),
        ("sub/inside.json", StatusCode::OK),
    ] {
        let r = client()
            .get(format!("{}/org/m/resolve/main/{path}", m.hub_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "{path}");
    }
    // The linked organisation folder that leaves the root is no repository at all.
    let r = client()
        .get(format!("{}/api/models/org2/outside", m.hub_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[test]
fn a_layout_that_would_publish_a_private_repository_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("org/private")).unwrap();
    std::fs::write(root.join("org/private/secret.bin"), b"secret").unwrap();
    std::fs::write(root.join("org/README.md"), b"stray").unwrap();
    let access: AccessConfig = serde_json::from_str(
        r#"{"repos": {"org/private": {"visibility": "private", "tokens": ["hf_owner"]}}}"#,
    )
    .unwrap();
    let err = Mirror::from_dir(root, &access).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Layout { .. }), "{msg}");
    assert!(
        msg.contains("README.md") && msg.contains("org/private"),
        "{msg}"
    );

    // Without the stray file the layout is clear and the repository private.
    std::fs::remove_file(root.join("org/README.md")).unwrap();
    assert!(Mirror::from_dir(root, &access).is_ok());

    // A rule for a repository that is not there (a typo) would leave the real one public.
    let typo: AccessConfig = serde_json::from_str(
        r#"{"repos": {"org/privat": {"visibility": "private", "tokens": ["hf_owner"]}}}"#,
    )
    .unwrap();
    let msg = Mirror::from_dir(root, &typo).unwrap_err().to_string();
    assert!(
        msg.contains("org/privat") && msg.contains("not a repository"),
        "{msg}"
    );
}

#[tokio::test]
async fn links_and_cursors_come_from_the_mirror_not_the_request() {
    let files: BTreeMap<String, MirrorFile> = (0..3)
        .map(|i| {
            (
                format!("f{i}.txt"),
                MirrorFile::from_bytes(&b"x"[..], false),
            )
        })
        .collect();
    let mut repo = Repo::new("org/m");
    repo.commit("main", files);
    let mirror = Mirror::new();
    mirror.add_repo(repo);
    mirror.set_page_size(1);
    let m = mirror
        .spawn("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    let tree = format!("{}/api/models/org/m/tree/main", m.hub_url());
    let r = client()
        .get(&tree)
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    let link = header(&r, "link").to_string();
    assert!(
        link.starts_with(&format!(
            "<{}/api/models/org/m/tree/main?cursor=1",
            m.hub_url()
        )),
        "{link}"
    );
    for (cursor, want, entries) in [
        ("18446744073709551615", StatusCode::OK, Some(0)),
        ("2", StatusCode::OK, Some(1)),
        ("-1", StatusCode::BAD_REQUEST, None),
        ("99999999999999999999999", StatusCode::BAD_REQUEST, None),
    ] {
        let r = client()
            .get(format!("{tree}?cursor={cursor}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "cursor {cursor}");
        assert!(r.headers().get("link").is_none(), "cursor {cursor}");
        if let Some(n) = entries {
            let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
            assert_eq!(v.as_array().unwrap().len(), n, "cursor {cursor}");
        }
    }
    m.stop().await;

    // Behind a proxy or on 0.0.0.0: the configured public URLs.
    let (mirror, _) = private_mirror();
    mirror.set_public_url("https://mirror.example/");
    mirror.set_cdn_base("https://cdn.mirror.example");
    let m = mirror
        .spawn("0.0.0.0:0".parse().unwrap(), None)
        .await
        .unwrap();
    let hub = m.hub_url().replace("0.0.0.0", "127.0.0.1");
    let r = client()
        .get(format!("{hub}/org/private/resolve/main/w.safetensors"))
        .bearer_auth("hf_owner")
        .send()
        .await
        .unwrap();
    let location = header(&r, "location");
    assert!(
        location.starts_with("https://cdn.mirror.example/blobs/"),
        "{location}"
    );
    assert_eq!(m.cdn_url(), "https://cdn.mirror.example");
}

//! The mirror's HTTP surface, checked with a plain HTTP client on loopback: the headers and
//! status codes the Hub protocol promises (reference/hub-protocol.md §5.4).

use std::collections::BTreeMap;
use std::sync::Arc;

use reqwest::StatusCode;
use reqwest::redirect::Policy;
use spice_hf_mirror::{Mirror, MirrorFile, Repo, RunningMirror, Visibility};

mod hostile;

const TOKEN: &str = "hf_reader";

async fn start() -> (RunningMirror, String) {
    let mut files = BTreeMap::new();
    files.insert(
        "config.json".to_string(),
        MirrorFile::from_bytes(Arc::<[u8]>::from(&b"{\"a\":1}"[..]), false),
    );
    let weights: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    files.insert(
        "model.safetensors".to_string(),
        MirrorFile::from_bytes(weights, true),
    );
    files.insert(
        "sub dir/[x] #1.txt".to_string(),
        MirrorFile::from_bytes(&b"odd\n"[..], false),
    );
    let mut repo = Repo::new("org/m");
    let commit = repo.commit("main", files.clone());
    repo.refs.insert("refs/pr/1".into(), commit.clone());
    let mirror = Mirror::new();
    mirror.add_repo(repo);
    let mut private = Repo::new("org/private");
    private.visibility = Visibility::Private;
    private.tokens.insert(TOKEN.into());
    private.commit("main", files);
    mirror.add_repo(private);
    let running = mirror
        .spawn("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    (running, commit)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn resolve_regular_files_with_ranges_and_etags() {
    let (m, commit) = start().await;
    let url = format!("{}/org/m/resolve/main/config.json", m.hub_url());
    let r = client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "x-repo-commit"), commit);
    let etag = header(&r, "etag").to_string();
    assert_eq!(etag.len(), 42);
    assert_eq!(header(&r, "content-length"), "7");
    assert_eq!(header(&r, "accept-ranges"), "bytes");
    assert!(header(&r, "x-request-id").starts_with("mirror-"));
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"{\"a\":1}");

    let r = client()
        .get(&url)
        .header("range", "bytes=2-4")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&r, "content-range"), "bytes 2-4/7");
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"a\":");
    let r = client()
        .get(&url)
        .header("range", "bytes=7-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&r, "content-range"), "bytes */7");
    let r = client()
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = client().head(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), "7");

    // Revisions as one encoded segment, short commits, both spellings of odd paths.
    for rev in ["refs%2Fpr%2F1", &commit[..10], commit.as_str()] {
        let r = client()
            .get(format!("{}/org/m/resolve/{rev}/config.json", m.hub_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{rev}");
    }
    for path in ["sub%20dir/%5Bx%5D%20%231.txt", "sub%20dir/[x]%20%231.txt"] {
        let r = client()
            .get(format!("{}/org/m/resolve/main/{path}", m.hub_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.bytes().await.unwrap().as_ref(), b"odd\n", "{path}");
    }
}

#[tokio::test]
async fn lfs_files_redirect_to_the_cdn_which_refuses_tokens_and_expired_links() {
    let (m, commit) = start().await;
    let r = client()
        .get(format!(
            "{}/org/m/resolve/main/model.safetensors",
            m.hub_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(header(&r, "x-repo-commit"), commit);
    assert_eq!(header(&r, "x-linked-size"), "100000");
    assert_eq!(header(&r, "x-linked-etag").len(), 66);
    let location = header(&r, "location").to_string();
    assert!(location.starts_with("http://localhost:"), "{location}");
    let body = r.bytes().await.unwrap();
    assert!(!body.is_empty() && body.len() < 100);

    let cdn = client()
        .get(&location)
        .header("range", "bytes=99990-")
        .send()
        .await
        .unwrap();
    assert_eq!(cdn.status(), StatusCode::PARTIAL_CONTENT);
    assert!(cdn.headers().get("x-repo-commit").is_none());
    assert_eq!(cdn.bytes().await.unwrap().len(), 10);
    let leak = client()
        .get(&location)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(leak.status(), StatusCode::BAD_REQUEST);
    assert_eq!(m.mirror().token_leaks(), 1);
    let expired = location.replace("exp=", "exp=1");
    assert_eq!(
        client().get(&expired).send().await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn apis_errors_and_access() {
    let (m, commit) = start().await;
    let get = |path: String, token: Option<&str>| {
        let mut req = client().get(format!("{}{path}", m.hub_url()));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let info: serde_json::Value = serde_json::from_slice(
        &get("/api/models/org/m/revision/main".into(), None)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(info["sha"], commit.as_str());
    assert_eq!(info["id"], "org/m");
    assert_eq!(info["siblings"].as_array().unwrap().len(), 3);

    m.mirror().set_page_size(2);
    let r = get("/api/models/org/m/tree/main?recursive=true".into(), None)
        .await
        .unwrap();
    let link = header(&r, "link").to_string();
    assert!(
        link.starts_with("<http://127.0.0.1:") && link.ends_with("rel=\"next\""),
        "{link}"
    );
    let page: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(page.as_array().unwrap().len(), 2);
    assert!(
        page.as_array()
            .unwrap()
            .iter()
            .any(|e| e["lfs"]["size"] == 100000 && e["lfs"]["oid"].as_str().unwrap().len() == 64)
    );
    let next = get(
        format!("/api/models/org/m/tree/{commit}?recursive=true&cursor=2"),
        None,
    )
    .await
    .unwrap();
    let page: serde_json::Value = serde_json::from_slice(&next.bytes().await.unwrap()).unwrap();
    let kinds: Vec<&str> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["directory", "file"]);

    let refs: serde_json::Value = serde_json::from_slice(
        &get("/api/models/org/m/refs".into(), None)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(refs["pullRequests"][0]["name"], "refs/pr/1");
    for body in [
        r#"{"paths":["config.json"]}"#.to_string(),
        "paths=config.json&paths=nope".to_string(),
    ] {
        let r = client()
            .post(format!("{}/api/models/org/m/paths-info/main", m.hub_url()))
            .body(body)
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 1);
    }

    let cases: [(String, Option<&str>, u16, &str); 7] = [
        (
            "/api/models/org/m/revision/nope".into(),
            None,
            404,
            "RevisionNotFound",
        ),
        (
            "/api/models/org/none/revision/main".into(),
            Some(TOKEN),
            404,
            "RepoNotFound",
        ),
        (
            "/org/m/resolve/main/missing.txt".into(),
            None,
            404,
            "EntryNotFound",
        ),
        (
            "/org/private/resolve/main/config.json".into(),
            None,
            401,
            "RepoNotFound",
        ),
        (
            "/org/private/resolve/main/config.json".into(),
            Some("hf_bad"),
            401,
            "",
        ),
        (
            "/org/private/resolve/main/config.json".into(),
            Some(TOKEN),
            200,
            "",
        ),
        ("/api/whoami-v2".into(), Some(TOKEN), 200, ""),
    ];
    for (path, token, status, code) in cases {
        let r = get(path.clone(), token).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{path}");
        assert_eq!(header(&r, "x-error-code"), code, "{path}");
        if code == "EntryNotFound" {
            assert_eq!(header(&r, "x-repo-commit"), commit);
        }
    }
}

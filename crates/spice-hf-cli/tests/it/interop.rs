//! `spice-hf mirror serve` as a real process, and the real Python `huggingface_hub` client
//! downloading from it.

use std::io::{BufRead as _, BufReader};

use super::*;

struct Served {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes the tiny Llama under `DIR/org/tiny` and serves it with the binary.
fn serve_dir() -> Served {
    let dir = tempfile::tempdir().unwrap();
    fixtures::write_tiny_llama(&dir.path().join("org/tiny"), 5).unwrap();
    std::fs::create_dir_all(dir.path().join("org/tiny/sub dir")).unwrap();
    std::fs::write(dir.path().join("org/tiny/sub dir/notes #1.txt"), b"hello\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = spice("http://unused", dir.path());
    c.args(["mirror", "serve"])
        .arg(dir.path())
        .args(["--addr", &format!("127.0.0.1:{port}")]);
    c.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("serving"), "{first}");
    Served {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_serve_binary_feeds_spice_hf_pull() {
    let served = serve_dir();
    let cache = tempfile::tempdir().unwrap();
    let out = output({
        let mut c = spice(&served.url, cache.path());
        c.args(["pull", REPO]);
        c
    })
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dir = Cache::new(cache.path()).revision(REPO, "main").unwrap();
    assert!(dir.verify().unwrap().is_clean());
    assert_eq!(
        std::fs::read(dir.file_path("sub dir/notes #1.txt").unwrap()).unwrap(),
        b"hello\n"
    );
}

/// The `hf` command from pip's `huggingface_hub`, if installed (`.ci/run` installs it).
fn hf_cli() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|p| p.join("hf"))
        .find(|p| p.is_file())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_huggingface_hub_downloads_from_the_mirror() {
    let Some(hf) = hf_cli() else {
        // .ci/run installs it.
        spice_hf_testkit::fixtures::missing(
            "the `hf` command",
            "run `python3 -m pip install huggingface_hub`",
        );
        return;
    };
    let served = serve_dir();
    let home = tempfile::tempdir().unwrap();
    let local = home.path().join("local");
    #[allow(clippy::disallowed_methods)] // Reason: the test drives the real Python client.
    let mut c = Command::new(hf);
    c.args(["download", REPO, "--local-dir"])
        .arg(&local)
        .env("HF_ENDPOINT", &served.url)
        .env("HF_HOME", home.path())
        .env("HF_HUB_DISABLE_XET", "1")
        .env("HF_HUB_DISABLE_UPDATE_CHECK", "1")
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("HF_TOKEN");
    let out = output(c).await;
    assert!(
        out.status.success(),
        "hf download failed: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let expected = fixtures::tiny_llama_files(5);
    for (name, bytes) in &expected {
        assert_eq!(&std::fs::read(local.join(name)).unwrap(), bytes, "{name}");
    }
    assert_eq!(
        std::fs::read(local.join("sub dir/notes #1.txt")).unwrap(),
        b"hello\n"
    );

    // The same files, placed by `hf download --local-dir` into our cache layout, are adopted.
    let cache = tempfile::tempdir().unwrap();
    let rev_dir = Cache::new(cache.path()).revision(REPO, "main").unwrap();
    rev_dir.create().unwrap();
    for name in expected.keys() {
        std::fs::copy(local.join(name), rev_dir.file_path(name).unwrap()).unwrap();
    }
    let out = output({
        let mut c = spice(&served.url, cache.path());
        c.args(["pull", REPO, "--json"]);
        c
    })
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    let adopted = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["state"] == "adopted")
        .count();
    assert_eq!(adopted, expected.len());
}

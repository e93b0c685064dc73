//! End-to-end tests of the `spice-hf` binary against the fake Hub: pull output and exit codes,
//! a process killed mid-file and resumed, two processes pulling at once (one model, and two
//! models sharing a small disk), the cache commands and
//! `mirror serve`, and `spice-hf serve` end to end (serve.rs).
#![allow(clippy::print_stdout)] // Reason: tests print what they measured.

mod embeddings;
mod interop;
mod k8s;
mod pull_through;
mod serve;
mod sizing;
mod slow_clients;
mod status_page;
mod structured;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use spice_hf_cache::Cache;
use spice_hf_mirror::Mirror;
use spice_hf_testkit::{FakeHub, Fault, FaultRule, Role, fixtures, repo_with};

const BIN: &str = env!("CARGO_BIN_EXE_spice-hf");
const REPO: &str = "org/tiny";

fn files_with_big(big: usize) -> BTreeMap<String, Vec<u8>> {
    let mut files = fixtures::tiny_llama_files(3);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let data: Vec<u8> = (0..big)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 56) as u8
        })
        .collect();
    files.insert("big.safetensors".into(), data);
    files
}

async fn hub_with(files: &BTreeMap<String, Vec<u8>>) -> FakeHub {
    let mirror = Mirror::new();
    mirror.add_repo(repo_with(REPO, files));
    FakeHub::start(mirror).await.unwrap()
}

/// A `spice-hf` command with a clean environment pointing at `endpoint` and `cache`.
fn spice(endpoint: &str, cache: &Path) -> Command {
    #[allow(clippy::disallowed_methods)] // Reason: the test drives the real binary.
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", cache)
        .env("HF_ENDPOINT", endpoint)
        .env("SPICE_MODELS_DIR", cache)
        .env("SPICE_HF_LOG", "info")
        .stdin(Stdio::null());
    c
}

async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// Fails the test, saying how to install it, when `program` is not on PATH (CI installs every
/// tool a test needs; a missing one is never a skip).
fn require(program: &str, install: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()));
    assert!(found, "{program} is not on PATH: {install}");
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_prints_commit_and_dir_and_fails_loudly() {
    let files = files_with_big(10_000);
    let hub = hub_with(&files).await;
    let cache = tempfile::tempdir().unwrap();
    let out = output({
        let mut c = spice(hub.url(), cache.path());
        c.args(["pull", REPO]);
        c
    })
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let commit = hub
        .mirror()
        .update_repo(REPO, |r| r.refs["main"].clone())
        .unwrap();
    assert!(stdout.contains(&format!("commit {commit}")), "{stdout}");
    assert!(
        stdout.contains(&cache.path().join("org--tiny/main").display().to_string()),
        "{stdout}"
    );
    // No progress bar escape codes when stdout is not a terminal.
    assert!(!stdout.contains('\u{1b}'));

    let out = output({
        let mut c = spice(hub.url(), cache.path());
        c.args(["pull", REPO, "--json", "--include", "*.json"]);
        c
    })
    .await;
    let v: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(v["commit"], commit.as_str());
    assert!(
        v["files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["state"] == "cached")
    );

    let out = output({
        let mut c = spice(hub.url(), cache.path());
        c.args(["pull", "org/missing"]);
        c
    })
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("repository org/missing not found"),
        "{}",
        text(&out.stderr)
    );

    let out = output({
        let mut c = spice(hub.url(), cache.path());
        c.args(["pull", "org/tiny@../../etc"]);
        c
    })
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("invalid revision"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_file_then_resumed_with_range() {
    let files = files_with_big(8 << 20);
    let hub = hub_with(&files).await;
    // Slow the first CDN download so the kill lands mid-file.
    hub.slow_downloads(1..=1, 64 * 1024, Duration::from_millis(25));
    let cache = tempfile::tempdir().unwrap();
    let mut first = spice(hub.url(), cache.path());
    first
        .args(["pull", REPO, "--include", "big.safetensors"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = first.spawn().unwrap();
    let part = Cache::new(cache.path())
        .revision(REPO, "main")
        .unwrap()
        .path()
        .join("big.safetensors.part");
    let start = Instant::now();
    loop {
        let len = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        if len >= 1 << 20 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "download never started"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "pull finished before it could be killed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let left = std::fs::metadata(&part).unwrap().len();
    assert!(left > 0 && left < 8 << 20);

    let out = output({
        let mut c = spice(hub.url(), cache.path());
        c.args(["pull", REPO, "--include", "big.safetensors"]);
        c
    })
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("resuming a partial download"),
        "{}",
        text(&out.stderr)
    );
    let ranges: Vec<u64> = hub
        .requests()
        .into_iter()
        .filter(|r| r.role == Role::Cdn)
        .filter_map(|r| r.range)
        .map(|r| {
            r.trim_start_matches("bytes=")
                .trim_end_matches('-')
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(ranges.len(), 1, "{ranges:?}");
    assert!(ranges[0] >= 1 << 20, "resumed from {}", ranges[0]);
    let dir = Cache::new(cache.path()).revision(REPO, "main").unwrap();
    assert!(dir.verify().unwrap().is_clean());
    assert_eq!(
        std::fs::read(dir.file_path("big.safetensors").unwrap()).unwrap(),
        files["big.safetensors"]
    );
    println!(
        "killed with {left} bytes on disk; resumed with Range from byte {}",
        ranges[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_download_each_file_once() {
    let files = files_with_big(4 << 20);
    let hub = hub_with(&files).await;
    // ~2 s per file, so the second process is still starting while the first downloads.
    hub.slow_downloads(1..=10, 64 * 1024, Duration::from_millis(30));
    let cache = tempfile::tempdir().unwrap();
    let spawn = || {
        let mut c = spice(hub.url(), cache.path());
        c.args(["pull", REPO])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn().unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = tokio::task::spawn_blocking(move || {
        (a.wait_with_output().unwrap(), b.wait_with_output().unwrap())
    })
    .await
    .unwrap();
    assert!(a.status.success(), "{}", text(&a.stderr));
    assert!(b.status.success(), "{}", text(&b.stderr));
    // They overlapped: exactly one of them found the revision locked and waited for it.
    let waited = [&a, &b]
        .iter()
        .filter(|o| text(&o.stderr).contains("waiting for its lock"))
        .count();
    assert_eq!(
        waited,
        1,
        "the pulls did not contend for the lock:\n{}\n{}",
        text(&a.stderr),
        text(&b.stderr)
    );
    let log = hub.requests();
    let mut gets: BTreeMap<String, usize> = BTreeMap::new();
    for r in log
        .iter()
        .filter(|r| r.method == "GET" && (r.role == Role::Cdn || r.path.contains("/resolve/")))
    {
        *gets.entry(r.path.clone()).or_default() += 1;
    }
    assert!(
        gets.values().all(|&n| n == 1),
        "files downloaded more than once: {gets:?}"
    );
    let lfs = log.iter().filter(|r| r.role == Role::Cdn).count();
    assert_eq!(lfs, 2, "two LFS files, one CDN GET each");
    assert!(
        Cache::new(cache.path())
            .revision(REPO, "main")
            .unwrap()
            .verify()
            .unwrap()
            .is_clean()
    );
}

/// Two pulls of different models into one cache on a 10 MiB filesystem (a tmpfs mounted in a
/// private mount namespace with `unshare`), each needing 6 MiB: while the first is downloading
/// (its body stalled after 1 MiB) the second is refused up front, naming the space the first
/// holds, instead of both starting and one failing with a full disk. Once the first is
/// killed, its reservation is stale and the second pull goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_share_the_free_space() {
    const SIZE: usize = 6 << 20;
    let weights = |seed: u8| -> BTreeMap<String, Vec<u8>> {
        let mut files = BTreeMap::new();
        files.insert(
            "w.safetensors".to_string(),
            (0..SIZE).map(|i| (i as u8) ^ seed).collect(),
        );
        files
    };
    let mirror = Mirror::new();
    mirror.add_repo(repo_with("org/a", &weights(1)));
    mirror.add_repo(repo_with("org/b", &weights(2)));
    let hub = FakeHub::start(mirror).await.unwrap();
    hub.inject(FaultRule::new(
        Role::Cdn,
        "/blobs/",
        1..=1,
        Fault::StallAt(1 << 20),
    ));
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let script = r#"
        set -u
        mount -t tmpfs -o size=10m tmpfs "$CACHE" || exit 97
        "$BIN" pull org/a >"$OUT/a.out" 2>"$OUT/a.err" &
        A=$!
        i=0
        until [ -s "$CACHE/org--a/main/w.safetensors.part" ]; do
            sleep 0.05; i=$((i + 1)); [ "$i" -lt 1200 ] || exit 98
        done
        "$BIN" pull org/b >"$OUT/b1.out" 2>"$OUT/b1.err"; echo "first b: $?"
        kill -9 "$A"; wait "$A"
        "$BIN" pull org/b >"$OUT/b2.out" 2>"$OUT/b2.err"; echo "second b: $?"
    "#;
    #[allow(clippy::disallowed_methods)] // Reason: the test drives the real binary.
    let mut cmd = Command::new("unshare");
    cmd.args(["--user", "--map-root-user", "--mount", "sh", "-c", script])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", cache.path())
        .env("HF_ENDPOINT", hub.url())
        .env("SPICE_MODELS_DIR", cache.path())
        .env("SPICE_HF_LOG", "info")
        .env("BIN", BIN)
        .env("CACHE", cache.path())
        .env("OUT", out.path())
        .stdin(Stdio::null());
    let done = output(cmd).await;
    let read = |name: &str| std::fs::read_to_string(out.path().join(name)).unwrap_or_default();
    let said = text(&done.stdout);
    assert!(
        done.status.success(),
        "the script failed ({:?}; 97: no tmpfs in a user namespace here, 98: the first pull never started): {}{}",
        done.status,
        said,
        text(&done.stderr)
    );
    assert!(
        said.contains("first b: 1"),
        "the second pull was not refused while the first held the space: {said}\n{}",
        read("b1.err")
    );
    let refused = read("b1.err");
    assert!(
        refused.contains("not enough free space")
            && refused.contains("reserved by another pull in progress"),
        "{refused}"
    );
    assert!(
        said.contains("second b: 0"),
        "after the first pull died its reservation still held the space: {said}\n{}",
        read("b2.err")
    );
    // Nothing of the second model was downloaded while it was refused.
    let cdn_gets = hub
        .requests()
        .iter()
        .filter(|r| r.role == Role::Cdn && r.method == "GET")
        .count();
    assert_eq!(cdn_gets, 2, "one CDN GET for a, one for b's second pull");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_ls_verify_rm() {
    let files = files_with_big(1000);
    let hub = hub_with(&files).await;
    let cache = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut c = spice(hub.url(), cache.path());
        c.args(args);
        c
    };
    assert!(output(run(&["pull", REPO])).await.status.success());
    let ls = text(&output(run(&["cache", "ls"])).await.stdout);
    assert!(ls.contains("org/tiny") && ls.contains("main"), "{ls}");
    let ok = output(run(&["cache", "verify"])).await;
    assert!(ok.status.success(), "{}", text(&ok.stdout));
    let dir = Cache::new(cache.path()).revision(REPO, "main").unwrap();
    std::fs::write(dir.file_path("config.json").unwrap(), b"{}").unwrap();
    std::fs::remove_file(dir.file_path("tokenizer.json").unwrap()).unwrap();
    std::fs::write(dir.path().join("stray.bin"), b"x").unwrap();
    let bad = output(run(&["cache", "verify", REPO])).await;
    assert!(!bad.status.success());
    let report = text(&bad.stdout);
    for line in [
        "corrupt: config.json",
        "missing: tokenizer.json",
        "extra: stray.bin",
    ] {
        assert!(report.contains(line), "{report}");
    }
    // A pull repairs it.
    assert!(output(run(&["pull", REPO])).await.status.success());
    assert!(output(run(&["cache", "verify"])).await.status.success());
    // A hand-edited manifest with a non-ASCII commit is listed, not a crash.
    let manifest_path = dir.manifest_path();
    let edited = std::fs::read_to_string(&manifest_path).unwrap();
    let commit = dir.manifest().unwrap().unwrap().commit;
    std::fs::write(&manifest_path, edited.replace(&commit, "ééééééééééééé")).unwrap();
    let ls = output(run(&["cache", "ls"])).await;
    assert!(ls.status.success(), "{}", text(&ls.stderr));
    assert!(
        text(&ls.stdout).contains("éééééééééééé "),
        "{}",
        text(&ls.stdout)
    );
    let rm = text(&output(run(&["cache", "rm", REPO])).await.stdout);
    assert!(rm.contains("removed org/tiny"), "{rm}");
    assert!(text(&output(run(&["cache", "ls"])).await.stdout).contains("no models"));
}

/// Sampling flags get the server's range checks, before anything is pulled: the hub is never
/// asked (it would be unreachable here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_out_of_range_sampling_flags_before_pulling() {
    let cache = tempfile::tempdir().unwrap();
    for (flag, value) in [
        ("--temperature", "5"),
        ("--top-p", "0"),
        ("--min-p", "1.5"),
        ("--repetition-penalty", "0"),
    ] {
        let out = output({
            let mut c = spice("http://127.0.0.1:9", cache.path());
            c.args(["run", REPO, "--prompt", "hi", flag, value]);
            c
        })
        .await;
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{flag} {value}: {err}");
        assert!(err.contains(flag), "{flag} {value}: {err}");
        assert!(
            err.contains("out of range") || err.contains("greater than 0"),
            "{flag} {value}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_pulls_a_hub_model_and_prints_json() {
    let mut files = fixtures::tiny_llama_files(4);
    files.insert("README.md".into(), b"tiny".to_vec());
    let hub = hub_with(&files).await;
    let cache = tempfile::tempdir().unwrap();
    let out = output({
        let mut c = spice(hub.url(), cache.path());
        c.args([
            "run",
            REPO,
            "--prompt",
            "hello",
            "--max-tokens",
            "5",
            "--seed",
            "1",
            "--temperature",
            "0.8",
            "--json",
            "--backend",
            "cpu",
        ]);
        c
    })
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let last = stdout.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(v["backend"], "cpu");
    let ids = v["token_ids"].as_array().unwrap();
    assert!(!ids.is_empty() && ids.len() <= 5);
    assert_eq!(
        v["usage"]["completion_tokens"].as_u64().unwrap() as usize,
        ids.len()
    );
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 5);
    assert!(v["memory"]["estimated_bytes"].as_u64().unwrap() > 0);
    assert!(["stop", "length"].contains(&v["finish_reason"].as_str().unwrap()));
    // Only the model files were pulled (README.md was not selected).
    assert!(!cache.path().join("org--tiny/main/README.md").exists());
    // Same seed, same output.
    let again = output({
        let mut c = spice(hub.url(), cache.path());
        c.args([
            "run",
            REPO,
            "--prompt",
            "hello",
            "--max-tokens",
            "5",
            "--seed",
            "1",
            "--temperature",
            "0.8",
            "--json",
            "--offline",
        ]);
        c
    })
    .await;
    let v2: serde_json::Value =
        serde_json::from_str(text(&again.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(v2["token_ids"], v["token_ids"]);
    // A forced backend that this build lacks is an error, not a fallback.
    let forced = output({
        let mut c = spice(hub.url(), cache.path());
        c.args([
            "run",
            REPO,
            "--prompt",
            "x",
            "--backend",
            "cuda",
            "--offline",
        ]);
        c
    })
    .await;
    assert!(!forced.status.success());
    assert!(
        text(&forced.stderr).contains("not compiled into this build"),
        "{}",
        text(&forced.stderr)
    );
}

/// Builds `lib{name}` from C `code` with the system compiler.
fn build_c_library(dir: &Path, name: &str, code: &str) -> std::path::PathBuf {
    let src = dir.join(format!("{name}.c"));
    let lib = dir.join(format!("lib{name}"));
    std::fs::write(&src, code).unwrap();
    #[allow(clippy::disallowed_methods)] // Reason: the test builds its fake drivers with `cc`.
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .status()
        .expect("the C compiler `cc` builds the fake drivers");
    assert!(status.success());
    lib
}

/// Drivers that never answer: a `libcuda.so.1` whose `cuInit` blocks for ever (found through
/// `LD_LIBRARY_PATH`, as the real one is) and, in a wgpu build, a Vulkan driver (an ICD named by
/// `VK_ICD_FILENAMES`) that blocks in its first call from the loader. `spice-hf backends` still
/// answers, after the probe time box (`SPICE_HF_PROBE_TIMEOUT=3`, not the 60 s default; the CPU
/// probe must still start within it on a busy CI host), with
/// each hung backend skipped and the reason, and the CPU chosen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_drivers_are_skipped_with_their_reasons() {
    let dir = tempfile::tempdir().unwrap();
    build_c_library(
        dir.path(),
        "cuda.so.1",
        "#include <unistd.h>\n\
         int cuInit(unsigned int f) { (void)f; for (;;) pause(); }\n\
         int cuDeviceGetCount(int *n) { *n = 1; return 0; }\n\
         int cuDriverGetVersion(int *v) { *v = 12040; return 0; }\n",
    );
    let icd = build_c_library(
        dir.path(),
        "hung_vulkan.so",
        "#include <unistd.h>\n\
         int vk_icdNegotiateLoaderICDInterfaceVersion(unsigned int *v) { (void)v; for (;;) pause(); }\n\
         void *vk_icdGetInstanceProcAddr(void *i, const char *n) { (void)i; (void)n; for (;;) pause(); }\n",
    );
    let manifest = dir.path().join("hung_icd.json");
    std::fs::write(
        &manifest,
        serde_json::json!({"file_format_version": "1.0.0", "ICD": {"library_path": icd, "api_version": "1.3.0"}}).to_string(),
    )
    .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut c = spice("http://127.0.0.1:9", cache.path());
    c.arg("backends")
        .env("LD_LIBRARY_PATH", dir.path())
        .env("VK_ICD_FILENAMES", &manifest)
        .env("VK_DRIVER_FILES", &manifest)
        .env("SPICE_HF_PROBE_TIMEOUT", "3");
    let out = output(c).await;
    let listing = text(&out.stdout);
    assert!(out.status.success(), "{listing}{}", text(&out.stderr));
    let cuda_row = listing
        .lines()
        .find(|l| l.starts_with("cuda "))
        .unwrap_or_else(|| panic!("no cuda row: {listing}"));
    assert!(
        cuda_row.contains("timed out after 3 s checking the CUDA driver (a hung driver?)"),
        "{listing}"
    );
    if cfg!(feature = "wgpu") {
        assert!(
            listing.contains(
                "wgpu    yes       unavailable: timed out after 3 s listing the wgpu adapters (a hung driver?)"
            ),
            "{listing}"
        );
        assert!(
            listing.contains("  skipped wgpu: timed out after 3 s listing the wgpu adapters"),
            "{listing}"
        );
    }
    assert!(
        listing.contains("would use: cpu on flex (best available)"),
        "{listing}"
    );
    assert!(listing.contains("  skipped cuda: "), "{listing}");
}

/// A probe that panics, for real: a Vulkan layer (`failing_vulkan_layer.c`, built here) over
/// Mesa's software driver makes it look like a discrete GPU, so automatic selection starts it,
/// and fails its memory after the first allocation. Burn's device thread panics ("wgpu error:
/// Out of Memory") and so does the probe's self-test reading its result; `spice-hf backends`
/// answers with wgpu skipped, the panic as its reason, and the CPU chosen.
#[cfg(feature = "wgpu")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_probe_is_skipped_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let layer = build_c_library(
        dir.path(),
        "failing_vulkan_layer.so",
        include_str!("failing_vulkan_layer.c"),
    );
    std::fs::write(
        dir.path().join("failing_vulkan_layer.json"),
        serde_json::json!({"file_format_version": "1.1.2", "layer": {
            "name": "VK_LAYER_SPICE_HF_failing", "type": "GLOBAL", "library_path": layer,
            "api_version": "1.3.0", "implementation_version": "1",
            "description": "a discrete GPU whose memory runs out"}})
        .to_string(),
    )
    .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut c = spice("http://127.0.0.1:9", cache.path());
    c.arg("backends")
        .env("VK_LAYER_PATH", dir.path())
        .env("VK_INSTANCE_LAYERS", "VK_LAYER_SPICE_HF_failing")
        .env("FAKE_DISCRETE", "1")
        .env("FAIL_ALLOC_AFTER", "1")
        .env("SPICE_HF_LOG", "error");
    let out = output(c).await;
    let listing = text(&out.stdout);
    assert!(out.status.success(), "{listing}{}", text(&out.stderr));
    assert!(
        listing.contains("wgpu    yes       unavailable: panicked while starting wgpu on ")
            && listing.contains("(vulkan, discrete GPU)"),
        "{listing}"
    );
    assert!(
        listing.contains("would use: cpu on flex (best available)"),
        "{listing}"
    );
    assert!(
        listing.contains("  skipped wgpu: panicked while starting wgpu on "),
        "{listing}"
    );
}

/// `spice-hf backends` explains itself, and `--backend wgpu` runs the model on wgpu (Mesa's
/// software Vulkan in CI) with the same greedy answer as the CPU.
#[cfg(feature = "wgpu")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_explain_the_choice_and_a_forced_wgpu_runs() {
    let hub = hub_with(&fixtures::tiny_llama_files(4)).await;
    let cache = tempfile::tempdir().unwrap();
    // `spice-hf backends`, optionally forced, optionally on a host without any Vulkan driver
    // (the loader pointed at none).
    let backends_on = |forced: Option<&str>, no_vulkan: bool| {
        let mut c = spice(hub.url(), cache.path());
        c.arg("backends");
        if let Some(f) = forced {
            c.env("SPICE_HF_BACKEND", f);
        }
        if no_vulkan {
            c.env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
                .env("VK_DRIVER_FILES", "/nonexistent/icd.json");
        }
        output(c)
    };
    let backends = |forced: Option<&str>| backends_on(forced, false);
    let auto = backends(None).await;
    assert!(auto.status.success(), "{}", text(&auto.stderr));
    let listing = text(&auto.stdout);
    assert!(
        listing.contains("cpu     yes       available: flex"),
        "{listing}"
    );
    assert!(listing.contains("wgpu    yes       "), "{listing}");
    assert!(
        listing.contains("cuda    no        unavailable: not compiled in"),
        "{listing}"
    );
    assert!(listing.contains("\nwgpu adapters:\n  "), "{listing}");
    let only_software = !listing.contains("GPU)  [driver");
    if only_software {
        // The CI machine: the software adapter is listed but never picked on its own.
        assert!(
            listing.contains("wgpu    yes       unavailable: no GPU adapter, only "),
            "{listing}"
        );
        assert!(
            listing.contains("would use: cpu on flex (best available)"),
            "{listing}"
        );
        assert!(
            text(&auto.stderr).contains("falling back"),
            "{}",
            text(&auto.stderr)
        );
    }
    let forced = backends(Some("wgpu")).await;
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    assert!(
        text(&forced.stdout).contains("would use: wgpu on ")
            && text(&forced.stdout).contains("(forced by SPICE_HF_BACKEND)"),
        "{}",
        text(&forced.stdout)
    );
    let cuda = backends(Some("cuda")).await;
    assert!(!cuda.status.success());
    assert!(
        text(&cuda.stderr).contains("rebuild with `--features cuda`"),
        "{}",
        text(&cuda.stderr)
    );
    // A host without any Vulkan driver: a clear reason, and a forced wgpu fails instead of
    // falling back.
    let none = backends_on(None, true).await;
    assert!(none.status.success(), "{}", text(&none.stderr));
    assert!(
        text(&none.stdout)
            .contains("wgpu    yes       unavailable: no Vulkan adapter (no GPU driver found)")
            && text(&none.stdout).contains("would use: cpu on flex"),
        "{}",
        text(&none.stdout)
    );
    let refused = backends_on(Some("wgpu"), true).await;
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr)
            .contains("backend wgpu was requested but is unavailable: no Vulkan adapter"),
        "{}",
        text(&refused.stderr)
    );
    let typo = backends(Some("tpu")).await;
    assert!(!typo.status.success());
    assert!(
        text(&typo.stderr).contains("unknown backend \"tpu\""),
        "{}",
        text(&typo.stderr)
    );

    let run = |backend: &'static str| {
        let mut c = spice(hub.url(), cache.path());
        c.args([
            "run",
            REPO,
            "--prompt",
            "hello",
            "--max-tokens",
            "6",
            "--temperature",
            "0",
            "--json",
            "--backend",
            backend,
        ]);
        output(c)
    };
    let on_cpu = run("cpu").await;
    assert!(on_cpu.status.success(), "{}", text(&on_cpu.stderr));
    let on_wgpu = run("wgpu").await;
    assert!(on_wgpu.status.success(), "{}", text(&on_wgpu.stderr));
    let json = |o: &Output| -> serde_json::Value {
        serde_json::from_str(text(&o.stdout).lines().last().unwrap()).unwrap()
    };
    let (cpu, wgpu) = (json(&on_cpu), json(&on_wgpu));
    assert_eq!(cpu["backend"].as_str(), Some("cpu"));
    assert!(
        cpu["device"]
            .as_str()
            .is_some_and(|d| d.starts_with("cpu kernels: ")),
        "{cpu}"
    );
    assert_eq!(wgpu["backend"], "wgpu");
    assert!(
        wgpu["device"].as_str().unwrap().contains("(vulkan, ") || !only_software,
        "{wgpu}"
    );
    assert_eq!(wgpu["token_ids"], cpu["token_ids"]);
    assert_eq!(wgpu["text"], cpu["text"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_smollm2_gguf_answers_paris() {
    let Some(gguf) = fixtures::smollm2_gguf_or_skip() else {
        return;
    };
    // The golden answer on every backend this binary has (wgpu forced: Mesa's software Vulkan
    // in CI, where it takes about a minute).
    let backends: &[&str] = if cfg!(feature = "wgpu") {
        &["cpu", "wgpu"]
    } else {
        &["cpu"]
    };
    for backend in backends {
        let cache = tempfile::tempdir().unwrap();
        let out = ask_the_golden_question(&gguf, cache.path(), &["--backend", backend]).await;
        assert!(out.status.success(), "{backend}: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(
            stdout.starts_with("The capital of France is Paris."),
            "{backend}: {stdout}"
        );
        let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(v["backend"], *backend);
        assert_eq!(
            v["token_ids"],
            serde_json::json!([504, 3575, 282, 4649, 314, 7042, 30, 2])
        );
        assert_eq!(v["finish_reason"], "stop");
        assert_eq!(v["usage"]["prompt_tokens"], 37);
        assert!(v["memory"]["peak_rss_bytes"].as_u64().unwrap() > 100 << 20);
    }
}

/// `spice-hf run GGUF` on the golden question with `extra` flags, `--json`.
async fn ask_the_golden_question(gguf: &Path, cache: &Path, extra: &[&str]) -> Output {
    output({
        let mut c = spice("http://127.0.0.1:9", cache);
        c.args(["run"]).arg(gguf).args([
            "--prompt",
            "What is the capital of France?",
            "--json",
            "--context",
            "256",
        ]);
        c.args(extra);
        c
    })
    .await
}

/// The CPU kernels' options through the binary: the 8-bit activation path with an f32 KV cache
/// answers and says what it ran on (an f32 cache alone keeps the golden answer); an unknown value names the ones it takes. (Its logits move
/// by up to 8 % on this model, past the golden answer's near-tie between "The" and "L": how far
/// they move is the models crate's `smollm2_on_the_q8_path_stays_within_its_stated_distance_of_the_f32_path`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_takes_q8_activations_and_an_f32_kv_cache() {
    let Some(gguf) = fixtures::smollm2_gguf_or_skip() else {
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    let flags = [
        "--backend",
        "cpu",
        "--activations",
        "q8",
        "--kv-cache",
        "f32",
    ];
    // The f32 KV cache alone keeps the f32 path's answer.
    let out = ask_the_golden_question(
        &gguf,
        cache.path(),
        &flags[..2]
            .iter()
            .chain(&flags[4..])
            .copied()
            .collect::<Vec<_>>(),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Paris"), "{}", text(&out.stdout));
    let out = ask_the_golden_question(&gguf, cache.path(), &flags).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let device = v["device"].as_str().unwrap();
    assert!(device.contains("q8 activations, f32 KV cache"), "{device}");
    assert!(
        v["usage"]["completion_tokens"].as_u64().unwrap() > 0
            && !v["text"].as_str().unwrap().is_empty(),
        "{stdout}"
    );
    let bad = output({
        let mut c = spice("http://127.0.0.1:9", cache.path());
        c.args(["run"])
            .arg(&gguf)
            .args(["--prompt", "hi", "--activations", "q4"]);
        c
    })
    .await;
    assert!(!bad.status.success());
    let err = text(&bad.stderr);
    assert!(err.contains("\"q4\" are not f32 or q8"), "{err}");
}

/// Runs `spice-hf` with `stdin` piped in.
async fn with_stdin(mut cmd: Command, input: &'static str) -> Output {
    tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_keeps_the_conversation() {
    let Some(gguf) = fixtures::smollm2_gguf_or_skip() else {
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    let mut c = spice("http://127.0.0.1:9", cache.path());
    c.arg("chat")
        .arg(&gguf)
        .args(["--max-tokens", "40", "--context", "512"]);
    let out = with_stdin(
        c,
        "What is the capital of France?\nAnd of Germany?\n/reset\nAnd of Germany?\n",
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(lines[0], "The capital of France is Paris.");
    // The second question only makes sense with the first one in the history.
    assert_eq!(lines[1], "The capital of Germany is Berlin.");
    // After /reset the same words lack that context, so the answer differs.
    assert_ne!(lines[2], lines[1], "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_without_a_template_refuses_chat_but_completes_raw() {
    let dir = tempfile::tempdir().unwrap();
    fixtures::write_tiny_llama(dir.path(), 2).unwrap();
    let cfg_path = dir.path().join("tokenizer_config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg.as_object_mut().unwrap().remove("chat_template");
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let run = |args: &[&str]| {
        let mut c = spice("http://127.0.0.1:9", dir.path());
        c.args(args);
        c
    };
    let model = dir.path().to_str().unwrap();
    let chat = with_stdin(run(&["chat", model]), "hi\n").await;
    assert!(!chat.status.success());
    assert!(
        text(&chat.stderr).contains("has no chat template"),
        "{}",
        text(&chat.stderr)
    );
    let plain = output(run(&["run", model, "--prompt", "hi"])).await;
    assert!(!plain.status.success());
    assert!(
        text(&plain.stderr).contains("pass --raw"),
        "{}",
        text(&plain.stderr)
    );
    let raw = output(run(&[
        "run",
        model,
        "--prompt",
        "hi",
        "--raw",
        "--max-tokens",
        "3",
        "--json",
    ]))
    .await;
    assert!(raw.status.success(), "{}", text(&raw.stderr));
}

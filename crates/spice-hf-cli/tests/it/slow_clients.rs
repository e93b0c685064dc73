//! Slowloris against both servers, as the real binaries under a small descriptor limit
//! (`ulimit -n 64`): 80 connections that never finish their headers must not keep a
//! well-behaved client out. Without header timeouts and a connection cap, the idle sockets
//! hold every descriptor for ever and `/health` is never answered.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use spice_hf_testkit::fixtures;
use tokio::io::AsyncWriteExt as _;

use super::serve::launch;
use super::spice;

/// `cmd` run under `ulimit -n {nofile}` (through `sh`, the way an operator would).
fn with_fd_limit(cmd: &Command, nofile: u32) -> Command {
    #[allow(clippy::disallowed_methods)] // Reason: the test drives the real binary.
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .env_clear()
        .stdin(Stdio::null());
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c
}

/// Opens `n` connections that send half a request head and then nothing.
async fn slowloris(addr: &str, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        // Past the descriptor limit the kernel still completes handshakes into the backlog.
        if let Ok(Ok(mut s)) =
            tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await
        {
            let _ = s
                .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nx-slow: ")
                .await;
            held.push(s);
        }
    }
    held
}

/// `GET {url}` within 20 s.
async fn answered(url: &str) -> reqwest::StatusCode {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url} unanswered behind idle connections: {e}"))
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_health_behind_80_idle_connections() {
    let home = tempfile::tempdir().unwrap();
    let model = home.path().join("tiny");
    fixtures::write_tiny_llama(&model, 5).unwrap();
    let mut cmd = spice("http://127.0.0.1:9", home.path());
    cmd.arg("serve")
        .arg(&model)
        .args(["--addr", "127.0.0.1:0", "--task-history", "off"])
        .args(["--max-connections", "24", "--header-timeout", "1"]);
    let served = launch(with_fd_limit(&cmd, 64)).await;
    served.wait_ready().await;
    let addr = served.base.trim_start_matches("http://").to_string();
    let _held = slowloris(&addr, 80).await;
    let status = answered(&format!("{}/health", served.base)).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_serve_answers_behind_80_idle_connections() {
    let dir = tempfile::tempdir().unwrap();
    fixtures::write_tiny_llama(&dir.path().join("org/tiny"), 5).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = spice("http://unused", dir.path());
    cmd.args(["mirror", "serve"])
        .arg(dir.path())
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .args(["--max-connections", "24", "--header-timeout", "1"]);
    let mut cmd = with_fd_limit(&cmd, 64);
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("serving"), "{first}");
    let addr = format!("127.0.0.1:{port}");
    let _held = slowloris(&addr, 80).await;
    let status = answered(&format!("http://{addr}/api/models/org/tiny")).await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 200);
}

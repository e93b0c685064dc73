//! The listener against clients that hold connections open: sockets that never finish their
//! headers, a body that stalls, and more connections than the cap, all over real TCP on
//! loopback. Each fails on `axum::serve`, which has no timeouts and no cap.

use std::time::{Duration, Instant};

use spice_hf_listen::{Limits, serve};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

async fn start(
    limits: Limits,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "hello" }))
        .route(
            "/echo",
            axum::routing::post(|body: axum::body::Bytes| async move { body.len().to_string() }),
        );
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        serve(listener, app, limits, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    (addr, tx, task)
}

/// One request on a new connection; the status line, or an error.
async fn get(addr: std::net::SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

/// Reads until the peer closes; how long that took.
async fn closed_after(mut s: TcpStream) -> Duration {
    let t = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return t.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the server kept the connection open for 20 s"),
        }
    }
}

#[tokio::test]
async fn slow_headers_and_idle_sockets_are_closed_and_others_still_served() {
    let limits = Limits::default()
        .with_max_connections(8)
        .with_header_timeout(Duration::from_millis(500));
    let (addr, _stop, _task) = start(limits).await;
    // Twice the cap of clients that start a request and never finish its headers, and a few
    // that send nothing at all.
    let mut slow = Vec::new();
    for i in 0..16 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        if i % 4 != 0 {
            s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: ")
                .await
                .unwrap();
        }
        slow.push(s);
    }
    // A real client is answered once the slow ones have timed out (two rounds of the cap).
    let answer = tokio::time::timeout(Duration::from_secs(15), get(addr))
        .await
        .expect("a well-behaved client waited 15 s behind idle sockets")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("hello"), "{answer}");
    // Every slow socket was closed by the server.
    for s in slow {
        closed_after(s).await;
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let (addr, _stop, _task) =
        start(Limits::default().with_header_timeout(Duration::from_millis(300))).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Kept alive after the answer, then idle: closed.
    let took = closed_after(s).await;
    assert!(
        took >= Duration::from_millis(200),
        "closed before the idle timeout: {took:?}"
    );
}

#[tokio::test]
async fn a_stalled_body_ends_the_request() {
    let (addr, _stop, _task) =
        start(Limits::default().with_body_timeout(Duration::from_millis(300))).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nonly part")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .expect("a stalled body held the request for 10 s")
        .unwrap();
    assert!(!out.starts_with("HTTP/1.1 200"), "{out}");
    // A complete body is fine.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 5\r\n\r\nhello",
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(
        out.starts_with("HTTP/1.1 200") && out.ends_with('5'),
        "{out}"
    );
}

#[tokio::test]
async fn shutdown_waits_for_a_request_in_flight_then_returns() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            "slow"
        }),
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, app, Limits::default(), async {
        let _ = rx.await;
    }));
    let request = tokio::spawn(get(addr));
    tokio::time::sleep(Duration::from_millis(100)).await;
    tx.send(()).unwrap();
    let answer = request.await.unwrap().unwrap();
    assert!(answer.ends_with("slow"), "{answer}");
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("serve returned after its connections closed")
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

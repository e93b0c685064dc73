//! The TCP listener behind spice-hf's HTTP servers (`spice-hf serve` and `spice-hf mirror
//! serve`), so that a stranger's idle or slow sockets cannot keep anyone else out.
//!
//! `axum::serve` has no timeouts and no connection cap: a client that opens connections and
//! never finishes its headers holds each one, and the file descriptors with it, for ever.
//! [`serve`] runs the same axum router over hyper's HTTP/1 connection with:
//! - a cap on open connections ([`Limits::max_connections`]): at the cap, new connections wait
//!   in the kernel's backlog until one closes, instead of failing with `EMFILE`;
//! - a header-read timeout ([`Limits::header_timeout`]), which is also the keep-alive idle
//!   timeout: hyper starts it whenever it waits for a request head, so a connection that sends
//!   nothing, or a header a byte at a time, is closed when it runs out;
//! - a body timeout ([`Limits::body_timeout`]): a request body that stalls for longer ends the
//!   request with an error (tower-http's `RequestBodyTimeout`, reset at every frame);
//! - graceful shutdown: when the shutdown future resolves, it stops accepting, lets requests in
//!   flight finish, and returns once every connection is closed.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let app = axum::Router::new();
//! spice_hf_listen::serve(listener, app, spice_hf_listen::Limits::default(), std::future::pending()).await
//! # }
//! ```
//!
//! This crate has no cargo features.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

/// How much one client may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Open connections at most; more wait in the backlog. Keep it below the process's file
    /// descriptor limit (`ulimit -n`), which the model files and the task history also use.
    pub max_connections: usize,
    /// Time to send a request's headers, counted from when the server starts waiting for them
    /// (so also the idle time allowed between keep-alive requests).
    pub header_timeout: Duration,
    /// Longest pause inside a request body.
    pub body_timeout: Duration,
}

impl Default for Limits {
    /// 512 connections, 10 s for headers (and idle keep-alive), 30 s of body silence.
    fn default() -> Self {
        Self {
            max_connections: 512,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
        }
    }
}

impl Limits {
    /// These limits with another connection cap (at least 1).
    pub fn with_max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// These limits with another header-read and idle timeout.
    pub fn with_header_timeout(mut self, t: Duration) -> Self {
        self.header_timeout = t;
        self
    }

    /// These limits with another body timeout.
    pub fn with_body_timeout(mut self, t: Duration) -> Self {
        self.body_timeout = t;
        self
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` resolves, then stops
/// accepting, lets open requests finish and returns when every connection has closed.
///
/// Errors only if the listener's address cannot be read; accept errors (a client that reset,
/// a full descriptor table) are logged and retried after a pause.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut warned_full = false;
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                warned_full = false;
                slot
            }
            Err(_) => {
                if !warned_full {
                    tracing::warn!(%addr, max = limits.max_connections, "connection cap reached; new connections wait");
                    warned_full = true;
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(MapBody {
            router: router.clone(),
            body_timeout: limits.body_timeout,
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Hands hyper's requests to the router, their bodies under the body timeout.
#[derive(Clone)]
struct MapBody {
    router: axum::Router,
    body_timeout: Duration,
}

impl tower_service::Service<hyper::Request<Incoming>> for MapBody {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = <axum::Router as tower_service::Service<axum::extract::Request>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        tower_service::Service::<axum::extract::Request>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, req: hyper::Request<Incoming>) -> Self::Future {
        let timeout = self.body_timeout;
        self.router
            .call(req.map(|b| Body::new(tower_http::timeout::TimeoutBody::new(timeout, b))))
    }
}

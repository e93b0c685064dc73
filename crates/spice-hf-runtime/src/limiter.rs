//! The per-model rate limiter: at most `max_concurrency` requests generate at once, at most
//! `max_queue` wait (first come, first served) for at most `queue_timeout`, and optionally at
//! most `requests_per_minute` are admitted. A request that cannot queue is refused at once with
//! a retry-after hint instead of piling up.

use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use spice_hf_telemetry::names;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::{Error, Result};

/// Limits for one model: [`LimiterConfig::default`] and the `with_` setters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimiterConfig {
    /// Requests generating at once (default 1: a local model saturates the machine alone).
    pub max_concurrency: NonZeroUsize,
    /// Requests allowed to wait for a permit (default 16); beyond it requests are refused.
    pub max_queue: usize,
    /// Longest wait in the queue before the request is refused (default 60 s).
    pub queue_timeout: Duration,
    /// Requests admitted per minute (default: no limit).
    pub requests_per_minute: Option<NonZeroU32>,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        Self {
            max_concurrency: NonZeroUsize::MIN,
            max_queue: 16,
            queue_timeout: Duration::from_secs(60),
            requests_per_minute: None,
        }
    }
}

impl LimiterConfig {
    /// With `n` requests generating at once.
    pub fn with_max_concurrency(mut self, n: NonZeroUsize) -> Self {
        self.max_concurrency = n;
        self
    }

    /// With `n` requests allowed to wait.
    pub fn with_max_queue(mut self, n: usize) -> Self {
        self.max_queue = n;
        self
    }

    /// With the longest wait in the queue.
    pub fn with_queue_timeout(mut self, timeout: Duration) -> Self {
        self.queue_timeout = timeout;
        self
    }

    /// With at most `limit` requests admitted per minute (`None`: no limit).
    pub fn with_requests_per_minute(mut self, limit: Option<NonZeroU32>) -> Self {
        self.requests_per_minute = limit;
        self
    }
}

/// Admission control for one model. Share it in an [`Arc`].
#[derive(Debug)]
pub struct Limiter {
    config: LimiterConfig,
    model: String,
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    running: AtomicUsize,
    /// Requests refused since the start (full queue, rate limit, queue timeout).
    refused: AtomicU64,
    /// Moving average of how long a permit is held, in ms (for the retry-after hint).
    held_ms: Mutex<Option<f64>>,
    per_minute: Option<DefaultDirectRateLimiter>,
}

/// The right to generate; dropping it frees the slot for the next queued request.
#[derive(Debug)]
pub struct Permit {
    _permit: OwnedSemaphorePermit,
    limiter: Arc<Limiter>,
    since: Instant,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let running = self.limiter.running.fetch_sub(1, Ordering::SeqCst) - 1;
        metrics::gauge!(names::RUNNING, names::MODEL => self.limiter.model.clone())
            .set(running as f64);
        let held = self.since.elapsed().as_secs_f64() * 1000.0;
        let mut avg = self
            .limiter
            .held_ms
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *avg = Some(match *avg {
            Some(a) => 0.8 * a + 0.2 * held,
            None => held,
        });
    }
}

/// Decrements the waiting count however the wait ends (permit, timeout, or the caller gone).
struct Waiting<'a>(&'a Limiter);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let waiting = self.0.waiting.fetch_sub(1, Ordering::SeqCst) - 1;
        metrics::gauge!(names::WAITING, names::MODEL => self.0.model.clone()).set(waiting as f64);
    }
}

impl Limiter {
    /// A limiter for `model` (the name is only used as a metric label).
    pub fn new(model: &str, config: LimiterConfig) -> Arc<Self> {
        let per_minute = config
            .requests_per_minute
            .map(|n| governor::RateLimiter::direct(Quota::per_minute(n)));
        // Both gauges exist from the start, at 0: an autoscaler reading the queue of an idle
        // replica must find 0, not nothing.
        metrics::gauge!(names::RUNNING, names::MODEL => model.to_string()).set(0.0);
        metrics::gauge!(names::WAITING, names::MODEL => model.to_string()).set(0.0);
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(config.max_concurrency.get())),
            config,
            model: model.to_string(),
            waiting: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            held_ms: Mutex::new(None),
            per_minute,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LimiterConfig {
        &self.config
    }

    /// Requests holding a permit now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// Requests waiting now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Requests refused since the start: a full queue, the per-minute limit, a queue timeout.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// How long a refused client should wait: the queue ahead of it divided among the slots,
    /// times the average time a request holds a slot; at least 1 s, at most 10 minutes.
    pub fn retry_after(&self) -> Duration {
        let avg = self
            .held_ms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or(1000.0);
        let ahead = (self.waiting() + self.running()) as f64;
        let ms = avg * ahead / self.config.max_concurrency.get() as f64;
        Duration::from_secs((ms / 1000.0).ceil().clamp(1.0, 600.0) as u64)
    }

    fn granted(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Permit {
        let running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        metrics::gauge!(names::RUNNING, names::MODEL => self.model.clone()).set(running as f64);
        Permit {
            _permit: permit,
            limiter: self.clone(),
            since: Instant::now(),
        }
    }

    /// Takes a permit without waiting (health probes use this: a busy model is evidently
    /// working): [`Error::Overloaded`] when every slot is taken, [`Error::ShuttingDown`] once
    /// the limiter is closed. Neither the queue nor the per-minute limit is involved.
    pub fn try_acquire(self: &Arc<Self>) -> Result<Permit> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Ok(self.granted(permit)),
            Err(TryAcquireError::NoPermits) => Err(Error::Overloaded {
                model: self.model.clone(),
                queued: self.waiting(),
                retry_after: self.retry_after(),
            }),
            Err(TryAcquireError::Closed) => Err(Error::ShuttingDown),
        }
    }

    /// Waits for a permit. Fails at once with [`Error::RateLimited`] or [`Error::Overloaded`],
    /// or after the queue timeout with [`Error::QueueTimeout`]. Dropping the future leaves the
    /// queue. Returns the permit and how long it waited.
    pub async fn acquire(self: &Arc<Self>) -> Result<(Permit, Duration)> {
        if let Some(limit) = &self.per_minute
            && let Err(not_until) = limit.check()
        {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Error::RateLimited {
                model: self.model.clone(),
                retry_after: Duration::from_secs(wait.as_secs_f64().ceil().max(1.0) as u64),
            });
        }
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok((self.granted(permit), Duration::ZERO));
        }
        let queued = self.waiting.fetch_add(1, Ordering::SeqCst);
        let guard = Waiting(self);
        if queued >= self.config.max_queue {
            drop(guard);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Error::Overloaded {
                model: self.model.clone(),
                queued,
                retry_after: self.retry_after(),
            });
        }
        metrics::gauge!(names::WAITING, names::MODEL => self.model.clone())
            .set((queued + 1) as f64);
        let start = Instant::now();
        let permit = tokio::time::timeout(
            self.config.queue_timeout,
            self.permits.clone().acquire_owned(),
        )
        .await;
        drop(guard);
        match permit {
            Ok(Ok(permit)) => Ok((self.granted(permit), start.elapsed())),
            Ok(Err(_closed)) => Err(Error::ShuttingDown),
            Err(_elapsed) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(Error::QueueTimeout {
                    model: self.model.clone(),
                    waited: start.elapsed(),
                    retry_after: self.retry_after(),
                })
            }
        }
    }

    /// Refuses every waiting and future request (shutdown).
    pub fn close(&self) {
        self.permits.close();
    }
}

//! The one retry policy every HTTP call and body read goes through.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, FibonacciBuilder};

/// The shape of the delays between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Schedule {
    /// Doubling delays (the default).
    #[default]
    Exponential,
    /// Fibonacci delays (gentler growth).
    Fibonacci,
}

/// Retry settings: schedule, first delay, cap per delay, number of retries, jitter.
///
/// Retried: connect errors, timeouts, 408, 429, 500, 502, 503, 504, a CDN URL that expired
/// (403 from a host other than the hub) and bodies cut short (resumed with `Range`). Never
/// retried: 401, 403 and 404 from the hub. A `Retry-After` header sets the next delay (at
/// least), capped by `max_retry_after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Schedule of delays.
    pub schedule: Schedule,
    /// First delay.
    pub min_delay: Duration,
    /// Cap on any one delay.
    pub max_delay: Duration,
    /// Retries after the first attempt.
    pub max_retries: usize,
    /// Randomise delays so many clients do not retry in lockstep.
    pub jitter: bool,
    /// The longest `Retry-After` honoured; a server asking for more fails the request.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            schedule: Schedule::Exponential,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
            max_retries: 5,
            jitter: true,
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The sequence of delays (one per retry) built by `backon`.
    pub fn delays(&self) -> Box<dyn Iterator<Item = Duration> + Send> {
        match self.schedule {
            Schedule::Exponential => {
                let mut b = ExponentialBuilder::default()
                    .with_min_delay(self.min_delay)
                    .with_max_delay(self.max_delay)
                    .with_max_times(self.max_retries);
                if self.jitter {
                    b = b.with_jitter();
                }
                Box::new(b.build())
            }
            Schedule::Fibonacci => {
                let mut b = FibonacciBuilder::default()
                    .with_min_delay(self.min_delay)
                    .with_max_delay(self.max_delay)
                    .with_max_times(self.max_retries);
                if self.jitter {
                    b = b.with_jitter();
                }
                Box::new(b.build())
            }
        }
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP date.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

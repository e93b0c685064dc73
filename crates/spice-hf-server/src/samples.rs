//! The status page's live data: a ring of samples (one a second, the last ten minutes) of each
//! model's generation rate and queue, taken from what the runtime reports, served as JSON at
//! `GET /v1/status/samples`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use spice_hf_runtime::Runtime;

/// Time between samples.
pub(crate) const EVERY: Duration = Duration::from_secs(1);
/// Samples kept: ten minutes.
pub(crate) const KEPT: usize = 600;

/// One model at one instant.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ModelSample {
    model: String,
    /// Tokens generated per second since the previous sample.
    tokens_per_s: f64,
    running: usize,
    waiting: usize,
    refused: u64,
}

/// Every model at one instant.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sample {
    /// Unix time, milliseconds.
    t_ms: u64,
    models: Vec<ModelSample>,
}

/// When a sample was taken, and each model's generated-token count then.
type Counts = (Instant, Vec<(String, u64)>);

/// The ring, and what the rate is computed from.
#[derive(Debug, Default)]
pub(crate) struct Samples {
    ring: Mutex<VecDeque<Sample>>,
    /// The previous sample's instant and each model's token count.
    last: Mutex<Option<Counts>>,
}

impl Samples {
    /// Takes one sample of `runtime` now.
    pub(crate) fn take(&self, runtime: &Runtime) {
        let now = Instant::now();
        let infos: Vec<_> = runtime.models().map(|m| m.info()).collect();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let models = infos
            .iter()
            .map(|m| {
                let tokens_per_s = last
                    .as_ref()
                    .and_then(|(at, counts)| {
                        let (_, before) = counts.iter().find(|(n, _)| *n == m.name)?;
                        let dt = now.duration_since(*at).as_secs_f64();
                        (dt > 0.0).then(|| m.generated_tokens.saturating_sub(*before) as f64 / dt)
                    })
                    .unwrap_or(0.0);
                ModelSample {
                    model: m.name.clone(),
                    tokens_per_s,
                    running: m.running,
                    waiting: m.waiting,
                    refused: m.refused,
                }
            })
            .collect();
        *last = Some((
            now,
            infos
                .iter()
                .map(|m| (m.name.clone(), m.generated_tokens))
                .collect(),
        ));
        let t_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == KEPT {
            ring.pop_front();
        }
        ring.push_back(Sample { t_ms, models });
    }

    /// The samples, oldest first.
    pub(crate) fn all(&self) -> Vec<Sample> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_ring_keeps_the_last_ten_minutes() {
        let samples = super::Samples::default();
        let runtime = spice_hf_runtime::Runtime::new(vec![]).unwrap();
        for _ in 0..super::KEPT + 5 {
            samples.take(&runtime);
        }
        assert_eq!(samples.all().len(), super::KEPT);
    }
}

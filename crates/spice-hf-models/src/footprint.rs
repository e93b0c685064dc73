//! Memory footprint: what a model will take once loaded (weights as this build stores them,
//! the KV cache for the context, headroom), and the memory the host has free.

use crate::weights::LlamaConfig;

/// Bytes a model needs, by component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// Parameters.
    pub parameters: u64,
    /// Weights in memory (this build dequantizes to f32: 4 bytes per parameter).
    pub weights_bytes: u64,
    /// Bytes the weights take on disk (quantized).
    pub file_bytes: u64,
    /// KV cache for the context (f32 keys and values, every layer).
    pub kv_cache_bytes: u64,
    /// Headroom for activations and the allocator.
    pub headroom_bytes: u64,
}

impl Footprint {
    /// Estimates the footprint of `cfg` for `context` positions, with `headroom` (e.g. 0.25).
    pub fn estimate(
        cfg: &LlamaConfig,
        parameters: u64,
        file_bytes: u64,
        context: usize,
        headroom: f64,
    ) -> Self {
        let weights_bytes = parameters * 4
            + if cfg.tie_embeddings {
                (cfg.vocab * cfg.hidden * 4) as u64
            } else {
                0
            };
        let kv_cache_bytes =
            2 * cfg.layers as u64 * (cfg.kv_heads * cfg.head_dim()) as u64 * context as u64 * 4;
        let headroom_bytes = ((weights_bytes + kv_cache_bytes) as f64 * headroom) as u64;
        Self {
            parameters,
            weights_bytes,
            file_bytes,
            kv_cache_bytes,
            headroom_bytes,
        }
    }

    /// Everything together.
    pub fn total(&self) -> u64 {
        self.weights_bytes + self.kv_cache_bytes + self.headroom_bytes
    }
}

/// Memory the host can give a new allocation now (`MemAvailable` on Linux).
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The process's peak resident memory (`VmHWM` on Linux).
pub fn peak_rss() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

//! Memory footprint: what a model will take once loaded (weights as the engine keeps them, the
//! KV cache of every concurrent sequence, headroom). What the host has free is the backend
//! crate's to say (`spice_hf_backend::host`).

use crate::config::LlamaConfig;
use crate::llama::{Compute, KvDtype};

/// How the weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WeightStorage {
    /// As the file stores them, memory-mapped (the CPU kernels); the KV cache in
    /// [`Usage::kv`].
    Packed,
    /// Decoded to f32 (the Burn graph); f32 KV cache.
    F32,
    /// Decoded to f16 (the Burn graph on a GPU that computes in f16); f32 KV cache.
    F16,
}

impl WeightStorage {
    /// How `compute` holds the weights.
    pub fn of(compute: &Compute) -> Self {
        match compute {
            Compute::Cpu(_) => Self::Packed,
            Compute::Burn(_) => Self::F32,
            Compute::BurnF16(_) => Self::F16,
        }
    }

    /// Bytes per parameter of a decoded graph; `None` when packed (the file's own size).
    const fn decoded_bytes(self) -> Option<u64> {
        match self {
            Self::Packed => None,
            Self::F32 => Some(4),
            Self::F16 => Some(2),
        }
    }
}

/// What the model will be asked to hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// Positions (prompt plus answer) each sequence may use.
    pub context: usize,
    /// Sequences at once (the server's `max_concurrency`).
    pub sequences: usize,
    /// Headroom for activations and the allocator, as a fraction (e.g. 0.25).
    pub headroom: f64,
    /// How the weights are held.
    pub storage: WeightStorage,
    /// How the packed engine stores keys and values (the Burn graph always uses f32).
    pub kv: KvDtype,
}

impl Usage {
    /// One sequence of `context` positions, packed weights, 25 % headroom.
    pub fn new(context: usize) -> Self {
        Self {
            context,
            sequences: 1,
            headroom: 0.25,
            storage: WeightStorage::Packed,
            kv: KvDtype::F16,
        }
    }
}

/// Bytes a model needs, by component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// Parameters.
    pub parameters: u64,
    /// Weights in memory: the file's tensor bytes when packed, 4 (f32) or 2 (f16) bytes per
    /// parameter, plus the transposed LM head of a tied embedding, when decoded.
    pub weights_bytes: u64,
    /// Bytes the weights take on disk.
    pub file_bytes: u64,
    /// KV cache: keys and values of every layer for `context` positions of every sequence (a
    /// sliding-window layer on the packed engine: at most two windows).
    pub kv_cache_bytes: u64,
    /// Headroom for activations and the allocator.
    pub headroom_bytes: u64,
}

impl Footprint {
    /// Estimates the footprint of `cfg` for `usage`.
    pub fn estimate(cfg: &LlamaConfig, parameters: u64, file_bytes: u64, usage: &Usage) -> Self {
        let (weights_bytes, kv_element) = match usage.storage.decoded_bytes() {
            None => (file_bytes, usage.kv.bytes() as u64),
            Some(per_parameter) => (
                parameters
                    .saturating_add(if cfg.tie_embeddings {
                        (cfg.vocab as u64).saturating_mul(cfg.hidden as u64)
                    } else {
                        0
                    })
                    .saturating_mul(per_parameter),
                4,
            ),
        };
        // Positions each layer holds: the context, or on the packed engine at most two windows
        // for a sliding-window layer (the steady state: a prompt longer than that holds its
        // own length while it is prefilled). The Burn graph keeps every layer's whole context.
        // (Counted, not iterated: `layers` comes from the file and may be absurd.)
        let packed = usage.storage.decoded_bytes().is_none();
        let (windowed, window) = match (&cfg.gemma, cfg.sliding_window) {
            (_, None) => (0, 0),
            (Some(g), Some(w)) => (g.local_layers.iter().filter(|l| **l).count() as u64, w),
            (None, Some(w)) => (cfg.layers as u64, w),
        };
        let windowed = if packed {
            windowed.min(cfg.layers as u64)
        } else {
            0
        };
        let context = usage.context as u64;
        let positions = (cfg.layers as u64 - windowed)
            .saturating_mul(context)
            .saturating_add(
                windowed.saturating_mul(context.min((window as u64).saturating_mul(2))),
            );
        let kv_cache_bytes = [
            2,
            positions,
            (cfg.kv_heads as u64).saturating_mul(cfg.head_dim() as u64),
            usage.sequences.max(1) as u64,
            kv_element,
        ]
        .into_iter()
        .fold(1u64, u64::saturating_mul);
        let headroom_bytes =
            (weights_bytes.saturating_add(kv_cache_bytes) as f64 * usage.headroom) as u64;
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
        self.weights_bytes
            .saturating_add(self.kv_cache_bytes)
            .saturating_add(self.headroom_bytes)
    }
}

//! The Llama family (SmolLM/SmolLM2, TinyLlama, Llama 2/3): one public [`Llama`] over two
//! engines, chosen by [`Compute`]:
//!
//! - [`Compute::Cpu`]: weights stay in the file's format in the memory mapping and
//!   `spice-hf-kernels` multiplies them on a thread pool (`packed`); the KV cache is f16 and
//!   grows with the sequence.
//! - [`Compute::Burn`]: a Burn graph on the given device with its matrices in f32 (on the CPU
//!   device it is the dequantized f32 path the packed engine is tested against);
//!   [`Compute::BurnF16`] keeps them in f16, half the device memory ([`Compute::gpu`] picks it
//!   for a GPU that computes in f16).

mod burn;
mod packed;

use std::sync::Arc;

use ::burn::tensor::Device;
use spice_hf_kernels::matrix::Pool;

use crate::config::LlamaConfig;
use crate::tensors::TensorSet;
use crate::weights::decode;
use crate::{Error, Result};

pub(crate) use packed::inv_freqs;

/// How the packed engine stores keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvDtype {
    /// Half the memory; logits move by a few 1e-4 relative against an f32 cache.
    #[default]
    F16,
    /// Exactly the f32 path's attention.
    F32,
}

/// What the packed engine multiplies the weights with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activations {
    /// f32 activations, weights decoded in registers: the answers of the f32 reference.
    #[default]
    F32,
    /// Activations quantized to 8 bits per block of 32, multiplied in integers (llama.cpp's
    /// way) for the formats that have the kernel (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K;
    /// the others stay on f32). Faster; logits move by about 1 % of their spread, so greedy
    /// answers can differ from the f32 path's.
    Q8,
}

impl Activations {
    /// `f32` or `q8`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Q8 => "q8",
        }
    }
}

impl std::str::FromStr for Activations {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Self::F32),
            "q8" => Ok(Self::Q8),
            other => Err(Error::Config(format!(
                "activations {other:?} are not f32 or q8"
            ))),
        }
    }
}

impl KvDtype {
    /// Bytes per stored value.
    pub const fn bytes(self) -> usize {
        match self {
            Self::F16 => 2,
            Self::F32 => 4,
        }
    }

    /// `f16` or `f32`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::F16 => "f16",
            Self::F32 => "f32",
        }
    }
}

impl std::str::FromStr for KvDtype {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f16" => Ok(Self::F16),
            "f32" => Ok(Self::F32),
            other => Err(Error::Config(format!(
                "KV cache type {other:?} is not f16 or f32"
            ))),
        }
    }
}

/// How the packed CPU engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CpuOptions {
    /// Threads (at least one; [`Compute::cpu_default`] uses the physical cores).
    pub threads: usize,
    /// Keys and values in f16 (the default) or f32.
    pub kv: KvDtype,
    /// f32 activations (the default) or the 8-bit opt-in.
    pub activations: Activations,
}

impl Default for CpuOptions {
    /// Every physical core, f16 KV cache, f32 activations.
    fn default() -> Self {
        Self::new(Pool::default_threads())
    }
}

impl CpuOptions {
    /// `threads` threads, f16 KV cache, f32 activations.
    pub fn new(threads: usize) -> Self {
        Self {
            threads,
            kv: KvDtype::F16,
            activations: Activations::F32,
        }
    }

    /// With `threads` threads.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// With keys and values stored as `kv`.
    pub fn with_kv(mut self, kv: KvDtype) -> Self {
        self.kv = kv;
        self
    }

    /// With `activations`.
    pub fn with_activations(mut self, activations: Activations) -> Self {
        self.activations = activations;
        self
    }
}

/// How the Burn engine keeps its large matrices (linear weights, embedding, LM head) on its
/// device. Products run in f32 either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BurnWeights {
    /// 4 bytes per parameter: the reference.
    F32,
    /// 2 bytes per parameter, widened to f32 as each product reads it.
    F16,
}

/// Where and how a model computes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Compute {
    /// The CPU kernels over packed weights.
    Cpu(CpuOptions),
    /// A Burn graph on `device`, weights decoded to f32 at load (one tensor at a time).
    Burn(Device),
    /// A Burn graph on `device` with its matrices (linear weights, embedding, LM head) stored
    /// in f16: half the device memory of [`Compute::Burn`]; products still run in f32. The
    /// device must compute in f16 ([`Compute::gpu`] checks).
    BurnF16(Device),
}

impl Compute {
    /// The CPU kernels on every physical core.
    pub fn cpu_default() -> Self {
        Self::cpu(Pool::default_threads())
    }

    /// The CPU kernels on `threads` threads, f16 KV cache, f32 activations.
    pub fn cpu(threads: usize) -> Self {
        Self::Cpu(CpuOptions::new(threads))
    }

    /// A Burn graph on a GPU `device`: matrices in f16 where the device computes in f16
    /// ([`Compute::BurnF16`]), else in f32.
    pub fn gpu(device: Device) -> Self {
        if device.supports_dtype(::burn::tensor::DType::F16) {
            Self::BurnF16(device)
        } else {
            Self::Burn(device)
        }
    }
}

// Boxed: one lives per loaded model, and the variants differ in size.
enum Engine {
    Packed(Box<packed::Packed>),
    Burn(Box<burn::BurnLlama>),
}

/// A loaded Llama model.
pub struct Llama {
    cfg: LlamaConfig,
    engine: Engine,
    max_context: usize,
}

impl std::fmt::Debug for Llama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llama")
            .field("cfg", &self.cfg)
            .field("engine", &self.engine_name())
            .finish_non_exhaustive()
    }
}

enum CacheState {
    Packed(Box<packed::PackedCache>),
    Burn(burn::BurnCache),
}

/// Keys and values of past positions (one per sequence).
pub struct KvCache {
    state: CacheState,
    len: usize,
    capacity: usize,
}

impl KvCache {
    /// Positions already in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Most positions it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes its keys and values take now on the packed engine, which grows the cache with the
    /// sequence; `None` on the Burn engine, whose cache holds the whole context on its device
    /// from the start.
    pub fn bytes(&self) -> Option<usize> {
        match &self.state {
            CacheState::Packed(c) => Some(c.bytes()),
            CacheState::Burn(_) => None,
        }
    }
}

impl Llama {
    /// Builds the model from mapped tensors. `max_context` bounds the positions a cache holds
    /// (at most the model's own limit).
    pub fn load(
        cfg: LlamaConfig,
        tensors: &TensorSet,
        max_context: usize,
        compute: &Compute,
    ) -> Result<Self> {
        cfg.validate()?;
        let max_context = max_context.clamp(1, cfg.max_positions.max(1));
        let engine = match compute {
            Compute::Cpu(opts) => {
                let pool =
                    Pool::new(opts.threads).map_err(|e| Error::Unsupported(e.to_string()))?;
                Engine::Packed(Box::new(packed::Packed::load(
                    cfg.clone(),
                    tensors,
                    Arc::new(pool),
                    *opts,
                )?))
            }
            Compute::Burn(device) | Compute::BurnF16(device) => {
                let matrices = if matches!(compute, Compute::BurnF16(_)) {
                    BurnWeights::F16
                } else {
                    BurnWeights::F32
                };
                let mut source = |name: &str| tensors.get(name).map(|t| decode(tensors, t, &cfg));
                Engine::Burn(Box::new(burn::BurnLlama::new(
                    cfg.clone(),
                    &mut source,
                    max_context,
                    device,
                    matrices,
                )?))
            }
        };
        Ok(Self {
            cfg,
            engine,
            max_context,
        })
    }

    /// Builds the Burn graph from f32 host weights (tests, and the f32 reference).
    pub fn from_weights(
        cfg: LlamaConfig,
        mut weights: crate::weights::Weights,
        max_context: usize,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        let max_context = max_context.clamp(1, cfg.max_positions.max(1));
        Ok(Self {
            engine: Engine::Burn(Box::new(burn::BurnLlama::new(
                cfg.clone(),
                &mut |name: &str| weights.remove(name),
                max_context,
                device,
                BurnWeights::F32,
            )?)),
            cfg,
            max_context,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// Longest context this instance was built for.
    pub fn max_context(&self) -> usize {
        self.max_context
    }

    /// `packed` (the CPU kernels) or `burn`.
    pub fn engine_name(&self) -> &'static str {
        match self.engine {
            Engine::Packed(_) => "packed",
            Engine::Burn(_) => "burn",
        }
    }

    /// Threads the CPU kernels run on (`None` on the Burn engine).
    pub fn threads(&self) -> Option<usize> {
        match &self.engine {
            Engine::Packed(p) => Some(p.threads()),
            Engine::Burn(_) => None,
        }
    }

    /// What computes on the packed engine (`cpu kernels: avx2, 2 threads`); `None` on Burn,
    /// whose device says it.
    pub fn compute_detail(&self) -> Option<String> {
        let Engine::Packed(p) = &self.engine else {
            return None;
        };
        let (threads, opts) = (p.threads(), p.options());
        let isa = spice_hf_kernels::isa::current().isa;
        Some(format!(
            "cpu kernels: {isa}, {threads} thread{}, {} activations, {} KV cache",
            if threads == 1 { "" } else { "s" },
            opts.activations.name(),
            opts.kv.name()
        ))
    }

    /// Bytes of weights the packed engine reads from the mapping (`None` on Burn).
    pub fn packed_weight_bytes(&self) -> Option<usize> {
        match &self.engine {
            Engine::Packed(p) => Some(p.weight_bytes()),
            Engine::Burn(_) => None,
        }
    }

    /// An empty cache.
    pub fn new_cache(&self) -> KvCache {
        let state = match &self.engine {
            Engine::Packed(p) => CacheState::Packed(Box::new(p.new_cache())),
            Engine::Burn(b) => CacheState::Burn(b.new_cache()),
        };
        KvCache {
            state,
            len: 0,
            capacity: self.max_context,
        }
    }

    fn check(&self, ids: &[u32], cache: &KvCache) -> Result<()> {
        if ids.is_empty() {
            return Err(Error::Config("no tokens to run".into()));
        }
        if cache.len + ids.len() > cache.capacity {
            return Err(Error::ContextFull {
                needed: cache.len + ids.len(),
                capacity: cache.capacity,
            });
        }
        if let Some(&id) = ids.iter().find(|&&t| t as usize >= self.cfg.vocab) {
            return Err(Error::TokenOutOfVocabulary {
                id,
                vocab: self.cfg.vocab,
            });
        }
        Ok(())
    }

    fn run(&self, ids: &[u32], cache: &mut KvCache, all: bool) -> Result<Vec<f32>> {
        self.check(ids, cache)?;
        let out = match (&self.engine, &mut cache.state) {
            (Engine::Packed(p), CacheState::Packed(c)) => p.run(ids, c, cache.len, all)?,
            (Engine::Burn(b), CacheState::Burn(c)) if all => b.forward_all(ids, c)?,
            (Engine::Burn(b), CacheState::Burn(c)) => b.forward(ids, c)?,
            _ => {
                return Err(Error::Config(
                    "this cache belongs to a model on another engine".into(),
                ));
            }
        };
        cache.len += ids.len();
        Ok(out)
    }

    /// Runs `ids` after what the cache holds; returns the logits of the last position.
    pub fn forward(&self, ids: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        self.run(ids, cache, false)
    }

    /// Runs `ids` and returns the logits of every position, row-major `[S, vocab]`.
    pub fn forward_all(&self, ids: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        self.run(ids, cache, true)
    }
}

//! spice-hf's backend selection: the only crate that constructs Burn devices.
//!
//! Burn 0.22 picks its backend through a run-time [`Device`]. This crate probes the backends in
//! order — CUDA, then wgpu (Metal on macOS, Vulkan elsewhere), then the CPU — or takes the one
//! forced by `SPICE_HF_BACKEND`, configuration or `--backend`, and records why every skipped
//! backend was skipped so the fallback can be logged, printed and exposed as a metric label.
//! A forced backend that is unavailable is an error, never a silent fallback. A probe never
//! panics the process.
//!
//! ```
//! let choice = spice_hf_backend::choose(Some(spice_hf_backend::BackendKind::Cpu)).unwrap();
//! assert_eq!(choice.kind, spice_hf_backend::BackendKind::Cpu);
//! ```
//!
//! # Features
//!
//! - `cpu` (default, always compiled): Burn's pure-Rust `flex` backend.
//!
//! The GPU backends (`cuda`, `wgpu`, `metal`, `vulkan`) are not compiled into this build yet:
//! their variants exist and answer [`Error::BackendNotCompiled`].

#[cfg(test)]
mod tests;

use std::fmt;

pub use burn::tensor::Device;

/// Errors of backend selection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backend exists but this binary was built without it.
    #[error("backend {0} is not compiled into this build; rebuild with `--features {feature}`", feature = .0.feature())]
    BackendNotCompiled(BackendKind),
    /// The backend was forced but is not usable here.
    #[error("backend {kind} was requested but is unavailable: {reason}")]
    Unavailable {
        /// The backend.
        kind: BackendKind,
        /// Why.
        reason: String,
    },
    /// `SPICE_HF_BACKEND` or `--backend` names no backend.
    #[error("unknown backend {0:?}; use one of cpu, wgpu, cuda")]
    UnknownBackend(String),
}

/// The backend's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every backend spice-hf knows, whether or not this build has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BackendKind {
    /// NVIDIA CUDA.
    Cuda,
    /// wgpu: Metal on macOS, Vulkan elsewhere.
    Wgpu,
    /// Burn's `flex` CPU backend.
    Cpu,
}

impl BackendKind {
    /// Probe order.
    pub const ORDER: [Self; 3] = [Self::Cuda, Self::Wgpu, Self::Cpu];

    /// Its lowercase name (`cuda`, `wgpu`, `cpu`), also the metric label.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cuda => "cuda",
            Self::Wgpu => "wgpu",
            Self::Cpu => "cpu",
        }
    }

    /// The cargo feature that compiles it in.
    pub fn feature(self) -> &'static str {
        self.name()
    }

    /// Whether this build has it.
    pub fn compiled(self) -> bool {
        match self {
            Self::Cpu => true,
            Self::Cuda | Self::Wgpu => false,
        }
    }

    /// Parses a name (`cpu`, `wgpu`, `vulkan`, `metal`, `cuda`, any case).
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" | "flex" => Ok(Self::Cpu),
            "wgpu" | "vulkan" | "metal" | "gpu" => Ok(Self::Wgpu),
            "cuda" => Ok(Self::Cuda),
            other => Err(Error::UnknownBackend(other.to_string())),
        }
    }

    /// The device, if this build has the backend (without probing it).
    pub fn device(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::flex()),
            other => Err(Error::BackendNotCompiled(other)),
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What probing one backend found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// The backend.
    pub kind: BackendKind,
    /// `Ok` when usable, else why not.
    pub status: Result<(), String>,
}

/// A backend that was passed over, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The backend.
    pub kind: BackendKind,
    /// Why it was not used.
    pub reason: String,
}

/// The outcome of selection, without the device (the pure, testable part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The backend chosen.
    pub kind: BackendKind,
    /// Backends before it in the order that were not usable (empty when forced).
    pub skipped: Vec<Skipped>,
    /// Whether the choice was forced.
    pub forced: bool,
}

impl Selection {
    /// Whether a better backend was passed over (the case logged at warn).
    pub fn fell_back(&self) -> bool {
        !self.skipped.is_empty()
    }
}

/// Picks a backend from probe results: the forced one (an error if unusable), else the first
/// usable in [`BackendKind::ORDER`].
pub fn select(forced: Option<BackendKind>, probes: &[ProbeResult]) -> Result<Selection> {
    let status = |kind: BackendKind| {
        probes
            .iter()
            .find(|p| p.kind == kind)
            .map(|p| p.status.clone())
            .unwrap_or_else(|| Err("not probed".to_string()))
    };
    if let Some(kind) = forced {
        if !kind.compiled() {
            return Err(Error::BackendNotCompiled(kind));
        }
        return match status(kind) {
            Ok(()) => Ok(Selection {
                kind,
                skipped: Vec::new(),
                forced: true,
            }),
            Err(reason) => Err(Error::Unavailable { kind, reason }),
        };
    }
    let mut skipped = Vec::new();
    for kind in BackendKind::ORDER {
        match status(kind) {
            Ok(()) => {
                return Ok(Selection {
                    kind,
                    skipped,
                    forced: false,
                });
            }
            Err(reason) => skipped.push(Skipped { kind, reason }),
        }
    }
    let reason = skipped
        .iter()
        .map(|s| format!("{}: {}", s.kind, s.reason))
        .collect::<Vec<_>>()
        .join("; ");
    Err(Error::Unavailable {
        kind: BackendKind::Cpu,
        reason,
    })
}

/// Probes one backend for real. Never panics: a backend that panics while starting is
/// reported as unavailable with the panic message.
pub fn probe(kind: BackendKind) -> ProbeResult {
    let status = if !kind.compiled() {
        Err("not compiled in".to_string())
    } else {
        match std::panic::catch_unwind(|| probe_compiled(kind)) {
            Ok(r) => r,
            Err(panic) => Err(format!(
                "panicked while starting: {}",
                panic_message(&panic)
            )),
        }
    };
    ProbeResult { kind, status }
}

fn probe_compiled(kind: BackendKind) -> Result<(), String> {
    let device = kind.device().map_err(|e| e.to_string())?;
    // A tiny computation proves the backend runs, not just that it was compiled.
    let t = burn::tensor::Tensor::<1>::from_floats([1.0f32, 2.0], &device);
    let sum: f32 = t.sum().into_scalar();
    if sum == 3.0 {
        Ok(())
    } else {
        Err(format!("self-test computed {sum} instead of 3"))
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

/// Probes every backend in order.
pub fn probe_all() -> Vec<ProbeResult> {
    BackendKind::ORDER.into_iter().map(probe).collect()
}

/// The chosen backend and its device.
#[derive(Debug, Clone)]
pub struct Choice {
    /// The backend.
    pub kind: BackendKind,
    /// Its device, for models and the runtime.
    pub device: Device,
    /// What was passed over and why.
    pub skipped: Vec<Skipped>,
    /// Whether it was forced.
    pub forced: bool,
}

/// Probes and chooses; logs every skipped backend at warn when falling back.
pub fn choose(forced: Option<BackendKind>) -> Result<Choice> {
    let probes = match forced {
        Some(kind) => vec![probe(kind)],
        None => probe_all(),
    };
    let selection = select(forced, &probes)?;
    for s in &selection.skipped {
        tracing::warn!(backend = %s.kind, reason = %s.reason, chosen = %selection.kind, "backend unavailable; falling back");
    }
    tracing::info!(backend = %selection.kind, forced = selection.forced, "backend selected");
    Ok(Choice {
        kind: selection.kind,
        device: selection.kind.device()?,
        skipped: selection.skipped,
        forced: selection.forced,
    })
}

/// The backend forced by `SPICE_HF_BACKEND`, if set (`auto` or empty means none).
pub fn forced_from_env() -> Result<Option<BackendKind>> {
    match std::env::var("SPICE_HF_BACKEND") {
        Ok(v) if !v.trim().is_empty() && !v.trim().eq_ignore_ascii_case("auto") => {
            BackendKind::parse(&v).map(Some)
        }
        _ => Ok(None),
    }
}

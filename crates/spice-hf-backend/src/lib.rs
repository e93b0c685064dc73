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
//! Additive; forwarded to Burn 0.22 (the `spice-hf` facade forwards its own features here).
//!
//! - `cpu` (default, always compiled): Burn's pure-Rust `flex` backend.
//! - `wgpu`: wgpu on whatever graphics API the host has (Vulkan on Linux and Windows, Metal on
//!   macOS, DX12), with Burn's WGSL compiler.
//! - `vulkan`: `wgpu` plus Burn's SPIR-V compiler for Vulkan adapters (its kernels crash Mesa's
//!   software Vulkan, lavapipe 22.3.6, so CI compile-checks it but runs wgpu with WGSL).
//! - `metal`: `wgpu` plus Burn's native MSL compiler for Metal adapters.
//! - `cuda`: NVIDIA CUDA. The driver (`libcuda.so.1`, `nvcuda.dll`) is loaded at run time and
//!   no toolkit is needed to build, but Burn's CUDA stack (cubecl-llvm) downloads an LLVM bundle
//!   in its build script, so the build needs network access.
//!
//! The only items that need a feature, `wgpu_adapters` and its `Adapter` types (`wgpu`), are
//! marked with it in these docs. A backend that is not compiled in keeps its [`BackendKind`]
//! variant and answers [`Error::BackendNotCompiled`] naming the feature to enable. The CUDA
//! driver check is compiled into every build, so even a CPU-only binary says when the host has
//! a CUDA GPU it is not using.
//!
//! # Never pick a software GPU
//!
//! wgpu lists software rasterizers (Mesa's lavapipe, Windows' WARP) as adapters. They run
//! correctly but hundreds of times slower than the `cpu` backend, so automatic selection asks
//! for a discrete, integrated or virtual GPU; a software adapter is used only when wgpu is
//! forced. Driver start-up (the CUDA driver check included) runs on a helper thread,
//! time-boxed to [`PROBE_TIMEOUT`] (or [`PROBE_TIMEOUT_ENV`]), with any panic caught.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod cuda;
mod exit;
#[cfg(feature = "wgpu")]
mod gpu;
pub mod host;
#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

pub use burn::tensor::Device;
pub use exit::{exit_now_if_a_driver_is_stuck, stuck_probes};

/// How long one backend may take to start (driver load, adapter listing, first kernel) before
/// the probe gives up on it and moves on, unless [`PROBE_TIMEOUT_ENV`] says otherwise.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// Seconds (a decimal number, above 0 and at most 3600) that replace [`PROBE_TIMEOUT`]: shorter
/// on hosts whose broken driver should not delay every start, longer where a GPU is slow to
/// wake. An invalid value is reported and the default used.
pub const PROBE_TIMEOUT_ENV: &str = "SPICE_HF_PROBE_TIMEOUT";

/// The probe time box in force ([`PROBE_TIMEOUT_ENV`] or [`PROBE_TIMEOUT`]).
pub fn probe_timeout() -> Duration {
    let Some(raw) = std::env::var_os(PROBE_TIMEOUT_ENV) else {
        return PROBE_TIMEOUT;
    };
    match raw
        .to_str()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| *s > 0.0 && *s <= 3600.0)
    {
        Some(secs) => Duration::from_secs_f64(secs),
        None => {
            tracing::warn!(value = ?raw, default_s = PROBE_TIMEOUT.as_secs(), "{PROBE_TIMEOUT_ENV} is not a number of seconds in (0, 3600]; using the default");
            PROBE_TIMEOUT
        }
    }
}

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
            Self::Wgpu => cfg!(feature = "wgpu"),
            Self::Cuda => cfg!(feature = "cuda"),
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

    /// Its device, as when forced: a GPU backend is probed first (once per process; a
    /// software wgpu adapter is accepted when there is no GPU). An error when this build lacks
    /// it or the host cannot run it.
    pub fn device(self) -> Result<Device> {
        if !self.compiled() {
            return Err(Error::BackendNotCompiled(self));
        }
        start(self, true)
            .map(|(device, _)| device)
            .map_err(|reason| Error::Unavailable { kind: self, reason })
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(feature = "wgpu")]
#[cfg_attr(docsrs, doc(cfg(feature = "wgpu")))]
/// What kind of device a wgpu adapter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdapterKind {
    /// A discrete GPU.
    DiscreteGpu,
    /// A GPU sharing memory with the CPU.
    IntegratedGpu,
    /// A virtualised or hosted GPU.
    VirtualGpu,
    /// A software rasterizer running on the CPU (lavapipe, llvmpipe, WARP).
    Software,
    /// Anything else the driver reports.
    Other,
}

#[cfg(feature = "wgpu")]
impl fmt::Display for AdapterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::DiscreteGpu => "discrete GPU",
            Self::IntegratedGpu => "integrated GPU",
            Self::VirtualGpu => "virtual GPU",
            Self::Software => "software",
            Self::Other => "other",
        })
    }
}

#[cfg(feature = "wgpu")]
#[cfg_attr(docsrs, doc(cfg(feature = "wgpu")))]
/// One adapter wgpu reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adapter {
    /// The device's name (`NVIDIA GeForce RTX 4090`, `llvmpipe (LLVM 15.0.6, 256 bits)`).
    pub name: String,
    /// What kind of device it is.
    pub kind: AdapterKind,
    /// The graphics API it is reached through, as wgpu names it (`vulkan`, `metal`, `dx12`).
    pub api: String,
    /// Driver name and version, when reported.
    pub driver: String,
}

#[cfg(feature = "wgpu")]
impl fmt::Display for Adapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, {})", self.name, self.api, self.kind)
    }
}

#[cfg(feature = "wgpu")]
#[cfg_attr(docsrs, doc(cfg(feature = "wgpu")))]
/// The adapters wgpu sees on the graphics APIs Burn uses, software ones included.
pub fn wgpu_adapters() -> Result<Vec<Adapter>> {
    time_boxed("listing the wgpu adapters", gpu::adapters).map_err(|reason| Error::Unavailable {
        kind: BackendKind::Wgpu,
        reason,
    })
}

/// What probing one backend found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// The backend.
    pub kind: BackendKind,
    /// `Ok` when usable, else why not.
    pub status: Result<(), String>,
    /// What it runs on, when usable (`llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan, software)`,
    /// `1 CUDA device, driver 12.4`, `flex`).
    pub detail: Option<String>,
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
    select_from(forced, &BackendKind::ORDER, probes)
}

fn select_from(
    forced: Option<BackendKind>,
    order: &[BackendKind],
    probes: &[ProbeResult],
) -> Result<Selection> {
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
    for &kind in order {
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

/// Probes one backend for real, as automatic selection does (a software wgpu adapter does not
/// count). Never panics: a backend that panics or hangs while starting is reported as
/// unavailable with the panic message or the time-out.
pub fn probe(kind: BackendKind) -> ProbeResult {
    probe_with(kind, false)
}

fn probe_with(kind: BackendKind, forced: bool) -> ProbeResult {
    probe_device(kind, forced).0
}

/// Probes one backend and keeps the device it started, so choosing does not start it twice.
fn probe_device(kind: BackendKind, forced: bool) -> (ProbeResult, Option<Device>) {
    let (status, detail, device) = if kind.compiled() {
        match start(kind, forced) {
            Ok((device, detail)) => (Ok(()), Some(detail), Some(device)),
            Err(reason) => (Err(reason), None, None),
        }
    } else {
        (Err(not_compiled_reason(kind)), None, None)
    };
    let result = ProbeResult {
        kind,
        status,
        detail,
    };
    (result, device)
}

/// "not compiled in", with what the host offers that this build cannot use.
fn not_compiled_reason(kind: BackendKind) -> String {
    match (kind, cuda::driver_status()) {
        (BackendKind::Cuda, Ok(found)) => format!(
            "not compiled in, although this host has {found}: rebuild with `--features cuda`"
        ),
        // A driver that hangs or crashes its check is worth telling even to a CPU-only build.
        (BackendKind::Cuda, Err(reason))
            if reason.starts_with("timed out") || reason.starts_with("panicked") =>
        {
            format!("not compiled in; the host's CUDA driver is broken: {reason}")
        }
        _ => "not compiled in".to_string(),
    }
}

/// Starts a compiled-in backend and self-tests it: its device and a description.
fn start(kind: BackendKind, allow_software: bool) -> Result<(Device, String), String> {
    match kind {
        BackendKind::Cpu => {
            // Time-boxed like every other probe: the CPU backend is the fallback of last resort,
            // and a hang or a panic there must still end in an error, not a dead process.
            let device = time_boxed("starting the CPU backend", || {
                let device = Device::flex();
                self_test(&device)?;
                Ok::<_, String>(device)
            })??;
            Ok((device, "flex".to_string()))
        }
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => {
            gpu::device(allow_software).map(|ready| (ready.device, ready.adapter.to_string()))
        }
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => {
            let found = cuda::driver_status()?;
            let device = time_boxed("starting CUDA", || {
                let device = cuda::device()?;
                self_test(&device)?;
                Ok::<_, String>(device)
            })??;
            Ok((device, found))
        }
        #[allow(unreachable_patterns)] // Reason: reachable only in builds without a GPU feature.
        other => {
            let _ = allow_software;
            Err(not_compiled_reason(other))
        }
    }
}

/// A tiny computation proves the backend runs, not just that it was compiled.
fn self_test(device: &Device) -> Result<(), String> {
    let t = burn::tensor::Tensor::<1>::from_floats([1.0f32, 2.0], device);
    let sum: f32 = t.sum().into_scalar();
    if sum == 3.0 {
        Ok(())
    } else {
        Err(format!("self-test computed {sum} instead of 3"))
    }
}

/// Runs `f` on a helper thread: a panic becomes an error naming `what`, and so does taking
/// longer than [`probe_timeout`] (the thread is then left to finish on its own).
fn time_boxed<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    time_boxed_for(what, probe_timeout(), f)
}

fn time_boxed_for<T: Send + 'static>(
    what: &str,
    timeout: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let probe = exit::Probe::new();
    let worker = probe.clone();
    let spawned = std::thread::Builder::new()
        .name("spice-hf-probe".into())
        .spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            worker.finished();
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        return Err(format!("{what}: could not start a probe thread: {e}"));
    }
    match rx.recv_timeout(timeout) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(panic)) => Err(format!("panicked while {what}: {}", panic_message(&panic))),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            probe.abandoned();
            Err(format!(
                "timed out after {} s {what} (a hung driver?)",
                timeout.as_secs_f32()
            ))
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            Err(format!("{what}: the probe thread ended without an answer"))
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

/// Probes every backend in order, as automatic selection does.
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
    /// What it runs on (`flex`, the wgpu adapter, the CUDA devices and driver).
    pub detail: String,
    /// What was passed over and why.
    pub skipped: Vec<Skipped>,
    /// Whether it was forced.
    pub forced: bool,
}

/// Probes and chooses; logs every skipped backend at warn when falling back. A forced backend
/// that is unavailable is an error, never a fallback.
pub fn choose(forced: Option<BackendKind>) -> Result<Choice> {
    choose_from(forced, &BackendKind::ORDER)
}

/// CUDA when it is compiled in and works, else the CPU (wgpu is not considered); the reason
/// CUDA was skipped is in [`Choice::skipped`].
pub fn cuda_if_available() -> Choice {
    match choose_from(None, &[BackendKind::Cuda, BackendKind::Cpu]) {
        Ok(choice) => choice,
        Err(e) => {
            // Only reachable if the CPU backend itself fails its self-test.
            tracing::error!(error = %e, "no backend passed its self-test; using flex anyway");
            Choice {
                kind: BackendKind::Cpu,
                device: Device::flex(),
                detail: "flex (self-test failed)".to_string(),
                skipped: Vec::new(),
                forced: false,
            }
        }
    }
}

fn choose_from(forced: Option<BackendKind>, order: &[BackendKind]) -> Result<Choice> {
    // Probe in order and stop at the first usable backend: nothing after it is started.
    let mut probes = Vec::new();
    let mut started = None;
    let candidates = match forced {
        Some(kind) => vec![kind],
        None => order.to_vec(),
    };
    for kind in candidates {
        let (result, device) = probe_device(kind, forced.is_some());
        probes.push(result);
        if let Some(device) = device {
            started = Some(device);
            break;
        }
    }
    let selection = select_from(forced, order, &probes)?;
    for s in &selection.skipped {
        tracing::warn!(backend = %s.kind, reason = %s.reason, chosen = %selection.kind, "backend unavailable; falling back");
    }
    let chosen = probes.last().filter(|p| p.kind == selection.kind);
    let (Some(device), Some(detail)) = (started, chosen.and_then(|p| p.detail.clone())) else {
        // `select_from` only chooses a backend whose probe succeeded, which is the last one.
        return Err(Error::Unavailable {
            kind: selection.kind,
            reason: "the chosen backend's probe kept no device".to_string(),
        });
    };
    tracing::info!(backend = %selection.kind, device = %detail, forced = selection.forced, "backend selected");
    Ok(Choice {
        kind: selection.kind,
        device,
        detail,
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

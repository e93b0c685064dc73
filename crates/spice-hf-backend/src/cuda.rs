//! CUDA: the driver check, compiled into every build so that even a CPU-only binary can say
//! whether a CUDA driver is present, and (with the `cuda` feature) Burn's CUDA device.
//!
//! Burn panics rather than returning an error when it cannot load the driver, so the device is
//! never touched before `dlopen` of the driver library and `cuInit` have succeeded here.

// Reason: the driver check calls three C entry points of the CUDA driver after `dlopen`.
#![allow(unsafe_code)]

use std::sync::OnceLock;

/// The driver library's name on this platform, or why CUDA cannot exist here.
pub(crate) fn driver_library() -> Result<&'static str, String> {
    if cfg!(target_os = "linux") {
        Ok("libcuda.so.1")
    } else if cfg!(target_os = "windows") {
        Ok("nvcuda.dll")
    } else {
        Err("CUDA is not available on this operating system (use wgpu/metal)".to_string())
    }
}

/// Keeps the driver loaded once checked: Burn loads it again, and unloading a library after
/// `cuInit` is asking for trouble.
static DRIVER: OnceLock<Result<String, String>> = OnceLock::new();

/// Whether the platform's CUDA driver is usable: loaded, initialised, with at least one device.
/// `Ok` describes it ("1 CUDA device, driver 12.4"); `Err` says why not. Cached.
/// The check is time-boxed like a probe: a driver whose `cuInit` never returns costs one
/// skipped backend, in every build, not a hung process.
pub(crate) fn driver_status() -> Result<String, String> {
    DRIVER
        .get_or_init(|| {
            let lib = driver_library()?;
            crate::time_boxed("checking the CUDA driver", move || check_driver(lib, true))?
        })
        .clone()
}

/// Loads `lib` and asks it for its devices. `keep` leaks the handle so the driver stays
/// loaded for Burn; tests pass `false` for their fake drivers.
pub(crate) fn check_driver(lib: &str, keep: bool) -> Result<String, String> {
    // SAFETY: loading a shared library runs its initialisers; the CUDA driver's (or a test's
    // fake driver's) are sound to run on any thread.
    let library = unsafe { libloading::Library::new(lib) }
        .map_err(|e| format!("no CUDA driver: {lib} not found ({e})"))?;
    type Init = unsafe extern "C" fn(u32) -> i32;
    type GetInt = unsafe extern "C" fn(*mut i32) -> i32;
    let not_cuda = |sym: &str| format!("{lib} has no {sym}: not a CUDA driver");
    // SAFETY: the signatures are those of the CUDA driver API (`CUresult cuInit(unsigned int)`,
    // `CUresult cuDeviceGetCount(int*)`, `CUresult cuDriverGetVersion(int*)`).
    let (init, count, version) = unsafe {
        (
            *library
                .get::<Init>(b"cuInit\0")
                .map_err(|_| not_cuda("cuInit"))?,
            *library
                .get::<GetInt>(b"cuDeviceGetCount\0")
                .map_err(|_| not_cuda("cuDeviceGetCount"))?,
            *library
                .get::<GetInt>(b"cuDriverGetVersion\0")
                .map_err(|_| not_cuda("cuDriverGetVersion"))?,
        )
    };
    // SAFETY: `cuInit(0)` takes no pointers; the out-parameters point at live locals.
    let rc = unsafe { init(0) };
    if rc != 0 {
        return Err(format!(
            "CUDA driver {lib} loaded but cuInit failed with {} ({rc}){}",
            error_name(rc),
            hint(rc)
        ));
    }
    let (mut n, mut v) = (0i32, 0i32);
    // SAFETY: as above.
    let (rc_n, rc_v) = unsafe { (count(&mut n), version(&mut v)) };
    if rc_n != 0 {
        return Err(format!(
            "CUDA driver {lib} loaded but cuDeviceGetCount failed with {} ({rc_n})",
            error_name(rc_n)
        ));
    }
    if n <= 0 {
        return Err(format!(
            "CUDA driver {lib} loaded but it sees no CUDA device"
        ));
    }
    if keep {
        std::mem::forget(library);
    }
    let driver = if rc_v == 0 {
        format!(", driver {}.{}", v / 1000, (v % 1000) / 10)
    } else {
        String::new()
    };
    Ok(format!(
        "{n} CUDA device{}{driver}",
        if n == 1 { "" } else { "s" }
    ))
}

fn error_name(rc: i32) -> &'static str {
    match rc {
        1 => "CUDA_ERROR_INVALID_VALUE",
        2 => "CUDA_ERROR_OUT_OF_MEMORY",
        3 => "CUDA_ERROR_NOT_INITIALIZED",
        34 => "CUDA_ERROR_STUB_LIBRARY",
        35 => "CUDA_ERROR_INSUFFICIENT_DRIVER",
        100 => "CUDA_ERROR_NO_DEVICE",
        101 => "CUDA_ERROR_INVALID_DEVICE",
        804 => "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE",
        999 => "CUDA_ERROR_UNKNOWN",
        _ => "a CUDA error",
    }
}

fn hint(rc: i32) -> &'static str {
    match rc {
        100 => ": no GPU is visible (in a container, run with --gpus all / the NVIDIA runtime)",
        34 => ": this is the toolkit's stub library, not the driver; install the NVIDIA driver",
        35 => ": the driver is older than the CUDA version this build needs; update the driver",
        _ => "",
    }
}

/// Burn's CUDA device 0, once the driver check passed.
#[cfg(feature = "cuda")]
pub(crate) fn device() -> Result<burn::tensor::Device, String> {
    driver_status()?;
    Ok(burn::tensor::Device::cuda(0))
}

//! The wgpu probe: which adapters the host has, and Burn's wgpu device on a real GPU.
//!
//! wgpu reports software rasterizers (Mesa's lavapipe/llvmpipe, Windows' WARP) as adapters
//! like any other. They run Burn's kernels correctly but hundreds of times slower than the
//! `cpu` backend, so automatic selection asks for a discrete, integrated or virtual GPU only;
//! a software adapter is used when wgpu is forced (`SPICE_HF_BACKEND=wgpu`, `--backend wgpu`).

use std::sync::OnceLock;

use burn::tensor::wgpu::wgpu;
use burn::tensor::{Device, DeviceKind};

use crate::{Adapter, AdapterKind};

/// The adapters of the graphics APIs Burn uses (Vulkan, Metal, DX12), in wgpu's order.
pub(crate) fn adapters() -> Vec<Adapter> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::PRIMARY,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    futures_lite::future::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY))
        .iter()
        .map(|a| {
            let info = a.get_info();
            Adapter {
                name: info.name,
                kind: match info.device_type {
                    wgpu::DeviceType::DiscreteGpu => AdapterKind::DiscreteGpu,
                    wgpu::DeviceType::IntegratedGpu => AdapterKind::IntegratedGpu,
                    wgpu::DeviceType::VirtualGpu => AdapterKind::VirtualGpu,
                    wgpu::DeviceType::Cpu => AdapterKind::Software,
                    wgpu::DeviceType::Other => AdapterKind::Other,
                },
                api: info.backend.to_string(),
                driver: [info.driver, info.driver_info]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" "),
            }
        })
        .collect()
}

/// A wgpu device that passed its self-test, and the adapter it runs on.
#[derive(Clone)]
pub(crate) struct Ready {
    pub(crate) device: Device,
    pub(crate) adapter: Adapter,
}

// Burn initialises a wgpu runtime once per adapter kind, so each outcome is kept.
static HARDWARE: OnceLock<Result<Ready, String>> = OnceLock::new();
static SOFTWARE: OnceLock<Result<Ready, String>> = OnceLock::new();

/// The first GPU adapter (discrete, then integrated, then virtual) as a Burn device; with
/// `allow_software`, a software adapter when there is no GPU.
pub(crate) fn device(allow_software: bool) -> Result<Ready, String> {
    let hardware = HARDWARE.get_or_init(|| init(&GPU_KINDS)).clone();
    match hardware {
        Ok(ready) => Ok(ready),
        Err(reason) if !allow_software => Err(reason),
        Err(reason) => SOFTWARE
            .get_or_init(|| init(&[AdapterKind::Software]))
            .clone()
            .map_err(|software| {
                if software == reason {
                    reason
                } else {
                    format!("{reason}; {software}")
                }
            }),
    }
}

const GPU_KINDS: [AdapterKind; 3] = [
    AdapterKind::DiscreteGpu,
    AdapterKind::IntegratedGpu,
    AdapterKind::VirtualGpu,
];

fn init(kinds: &[AdapterKind]) -> Result<Ready, String> {
    let all = crate::time_boxed("listing the wgpu adapters", adapters)?;
    let Some(adapter) = kinds
        .iter()
        .find_map(|k| all.iter().find(|a| a.kind == *k))
        .cloned()
    else {
        return Err(no_adapter(kinds, &all));
    };
    let kind = match adapter.kind {
        AdapterKind::DiscreteGpu => DeviceKind::DiscreteGpu(0),
        AdapterKind::IntegratedGpu => DeviceKind::IntegratedGpu(0),
        AdapterKind::VirtualGpu => DeviceKind::VirtualGpu(0),
        AdapterKind::Software | AdapterKind::Other => DeviceKind::Cpu,
    };
    let what = format!("starting wgpu on {adapter}");
    let on = adapter.clone();
    let device = crate::time_boxed(&what, move || {
        let device = Device::wgpu_options()
            .device_kind(kind)
            .init()
            .map_err(|e| format!("wgpu could not start on {on}: {e}"))?;
        crate::self_test(&device)?;
        Ok::<_, String>(device)
    })??;
    Ok(Ready { device, adapter })
}

fn no_adapter(kinds: &[AdapterKind], all: &[Adapter]) -> String {
    let api = if cfg!(target_os = "macos") {
        "Metal"
    } else {
        "Vulkan"
    };
    if all.is_empty() {
        return format!("no {api} adapter (no GPU driver found)");
    }
    let seen = all
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if kinds.contains(&AdapterKind::Software) {
        format!("no software adapter either (wgpu sees {seen})")
    } else {
        format!(
            "no GPU adapter, only {seen}: a software adapter is slower than the cpu backend; \
             force it with SPICE_HF_BACKEND=wgpu or --backend wgpu to use it anyway"
        )
    }
}

//! Selection logic with fake probe results, the time box, the CUDA driver check against fake
//! driver libraries built here with `cc`, the real CPU backend and (with the `wgpu` feature)
//! the real wgpu backend on whatever adapter the host has: Mesa's software Vulkan in CI.

use super::*;

fn probes(
    cuda: Result<(), &str>,
    wgpu: Result<(), &str>,
    cpu: Result<(), &str>,
) -> Vec<ProbeResult> {
    [
        (BackendKind::Cuda, cuda),
        (BackendKind::Wgpu, wgpu),
        (BackendKind::Cpu, cpu),
    ]
    .into_iter()
    .map(|(kind, s)| ProbeResult {
        kind,
        status: s.map_err(str::to_string),
        detail: None,
    })
    .collect()
}

#[test]
fn order_and_fallback_reasons() {
    let all_ok = probes(Ok(()), Ok(()), Ok(()));
    let s = select(None, &all_ok).unwrap();
    assert_eq!((s.kind, s.fell_back()), (BackendKind::Cuda, false));

    let no_cuda = probes(Err("no CUDA driver: libcuda.so not found"), Ok(()), Ok(()));
    let s = select(None, &no_cuda).unwrap();
    assert_eq!(s.kind, BackendKind::Wgpu);
    assert_eq!(
        s.skipped,
        vec![Skipped {
            kind: BackendKind::Cuda,
            reason: "no CUDA driver: libcuda.so not found".into()
        }]
    );

    let cpu_only = probes(Err("not compiled in"), Err("no Vulkan adapter"), Ok(()));
    let s = select(None, &cpu_only).unwrap();
    assert_eq!(s.kind, BackendKind::Cpu);
    assert!(s.fell_back());
    assert_eq!(
        s.skipped
            .iter()
            .map(|k| k.reason.as_str())
            .collect::<Vec<_>>(),
        vec!["not compiled in", "no Vulkan adapter"]
    );

    let nothing = probes(Err("a"), Err("b"), Err("c"));
    let err = select(None, &nothing).unwrap_err().to_string();
    assert!(
        err.contains("cuda: a") && err.contains("wgpu: b") && err.contains("cpu: c"),
        "{err}"
    );
}

#[test]
fn forced_backends_never_fall_back() {
    let cpu_only = probes(Err("x"), Err("no Vulkan adapter"), Ok(()));
    let s = select(Some(BackendKind::Cpu), &cpu_only).unwrap();
    assert_eq!(
        (s.kind, s.forced, s.fell_back()),
        (BackendKind::Cpu, true, false)
    );
    // Not compiled in this build (CUDA never is in CI): a clear error naming the feature.
    for kind in BackendKind::ORDER.into_iter().filter(|k| !k.compiled()) {
        let err = select(Some(kind), &cpu_only).unwrap_err();
        assert_eq!(err, Error::BackendNotCompiled(kind));
        assert!(err.to_string().contains(&format!("--features {kind}")));
        assert_eq!(kind.device().unwrap_err(), Error::BackendNotCompiled(kind));
        assert!(matches!(choose(Some(kind)), Err(Error::BackendNotCompiled(k)) if k == kind));
    }
    // A compiled backend that is forced but fails its probe is an error, not the CPU.
    let err = select(
        Some(BackendKind::Cpu),
        &probes(Ok(()), Ok(()), Err("broken")),
    )
    .unwrap_err();
    assert_eq!(
        err,
        Error::Unavailable {
            kind: BackendKind::Cpu,
            reason: "broken".into()
        }
    );
}

#[test]
fn names_parse() {
    for (s, k) in [
        ("cpu", BackendKind::Cpu),
        ("CUDA", BackendKind::Cuda),
        (" vulkan ", BackendKind::Wgpu),
        ("metal", BackendKind::Wgpu),
    ] {
        assert_eq!(BackendKind::parse(s).unwrap(), k);
    }
    assert!(
        BackendKind::parse("tpu")
            .unwrap_err()
            .to_string()
            .contains("cpu, wgpu, cuda")
    );
}

#[test]
fn real_probes_on_this_build() {
    let results = probe_all();
    assert_eq!(
        results.iter().map(|r| r.kind).collect::<Vec<_>>(),
        BackendKind::ORDER
    );
    assert_eq!(
        results[2],
        ProbeResult {
            kind: BackendKind::Cpu,
            status: Ok(()),
            detail: Some("flex".into())
        }
    );
    if !BackendKind::Cuda.compiled() {
        let reason = results[0].status.clone().unwrap_err();
        assert!(reason.starts_with("not compiled in"), "{reason}");
    }
    // Whatever the host has, the choice is the first usable backend, and every one before it
    // is listed with its reason.
    let choice = choose(None).unwrap();
    let first_ok = results.iter().position(|r| r.status.is_ok()).unwrap();
    assert_eq!(choice.kind, results[first_ok].kind);
    assert_eq!(
        choice
            .skipped
            .iter()
            .map(|s| (s.kind, Err(s.reason.clone())))
            .collect::<Vec<_>>(),
        results[..first_ok]
            .iter()
            .map(|r| (r.kind, r.status.clone()))
            .collect::<Vec<_>>()
    );
    let t = burn::tensor::Tensor::<1>::from_floats([2.0f32, 3.0], &choice.device);
    assert_eq!(t.sum().into_scalar::<f32>(), 5.0);
    // The CPU-only shortcut of the style guide.
    let cpu_or_cuda = cuda_if_available();
    assert!(
        cpu_or_cuda.kind == BackendKind::Cuda || cpu_or_cuda.skipped[0].kind == BackendKind::Cuda
    );
}

#[test]
fn the_time_box_turns_panics_and_hangs_into_reasons() {
    assert_eq!(time_boxed("adding", || 1 + 1), Ok(2));
    let panicked = time_boxed("starting a driver", || -> u8 { panic!("driver exploded") });
    assert_eq!(
        panicked,
        Err("panicked while starting a driver: driver exploded".to_string())
    );
    let hung = time_boxed_for("starting a driver", Duration::from_millis(100), || {
        std::thread::sleep(Duration::from_secs(3));
    });
    assert_eq!(
        hung,
        Err("timed out after 0.1 s starting a driver (a hung driver?)".to_string())
    );
}

/// Builds a shared library standing in for the CUDA driver: `cuInit` returns `init_rc`,
/// `cuDeviceGetCount` reports `devices`, and the driver version is 12.4. With `symbols`
/// false, the library exports nothing CUDA.
fn fake_driver(dir: &std::path::Path, init_rc: i32, devices: i32, symbols: bool) -> String {
    let name = format!("fake-cuda-{init_rc}-{devices}-{symbols}");
    let src = dir.join(format!("{name}.c"));
    let lib = dir.join(format!("lib{name}.so"));
    let code = if symbols {
        format!(
            "int cuInit(unsigned int f) {{ (void)f; return {init_rc}; }}\n\
             int cuDeviceGetCount(int *n) {{ *n = {devices}; return 0; }}\n\
             int cuDriverGetVersion(int *v) {{ *v = 12040; return 0; }}\n"
        )
    } else {
        "int not_cuda = 1;\n".to_string()
    };
    std::fs::write(&src, code).unwrap();
    #[allow(clippy::disallowed_methods)] // Reason: the test builds its fake drivers with `cc`.
    let status = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .status()
        .expect("the C compiler `cc` builds the fake CUDA drivers");
    assert!(status.success());
    lib.to_str().unwrap().to_string()
}

#[cfg(target_os = "linux")]
#[test]
fn cuda_driver_check_explains_each_failure() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("libcuda.so.1");
    let missing = missing.to_str().unwrap();
    let err = cuda::check_driver(missing, false).unwrap_err();
    assert!(
        err.starts_with(&format!("no CUDA driver: {missing} not found")),
        "{err}"
    );

    let not_cuda = fake_driver(dir.path(), 0, 0, false);
    assert_eq!(
        cuda::check_driver(&not_cuda, false).unwrap_err(),
        format!("{not_cuda} has no cuInit: not a CUDA driver")
    );

    let no_device = fake_driver(dir.path(), 100, 0, true);
    let err = cuda::check_driver(&no_device, false).unwrap_err();
    assert!(
        err.contains("cuInit failed with CUDA_ERROR_NO_DEVICE (100)") && err.contains("--gpus all"),
        "{err}"
    );

    let zero = fake_driver(dir.path(), 0, 0, true);
    assert!(
        cuda::check_driver(&zero, false)
            .unwrap_err()
            .ends_with("sees no CUDA device")
    );

    let two = fake_driver(dir.path(), 0, 2, true);
    assert_eq!(
        cuda::check_driver(&two, false),
        Ok("2 CUDA devices, driver 12.4".to_string())
    );
}

/// The real wgpu backend. CI has Mesa's software Vulkan (lavapipe) and no GPU, so there the
/// automatic probe must refuse the software adapter and a forced one must run on it.
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_on_the_hosts_adapters() {
    let adapters = wgpu_adapters().unwrap();
    assert!(
        !adapters.is_empty(),
        "wgpu sees no adapter: install a Vulkan driver (Debian: apt-get install mesa-vulkan-drivers; `cargo xtask ci` does)"
    );
    let gpu = adapters.iter().find(|a| {
        matches!(
            a.kind,
            AdapterKind::DiscreteGpu | AdapterKind::IntegratedGpu | AdapterKind::VirtualGpu
        )
    });
    let auto = probe(BackendKind::Wgpu);
    match gpu {
        Some(gpu) => {
            assert_eq!(auto.status, Ok(()));
            assert_eq!(auto.detail, Some(gpu.to_string()));
        }
        None => {
            let reason = auto.status.unwrap_err();
            let software = adapters
                .iter()
                .find(|a| a.kind == AdapterKind::Software)
                .expect("an adapter that is neither a GPU nor software");
            assert!(
                reason.starts_with("no GPU adapter, only ")
                    && reason.contains(&software.to_string())
                    && reason.contains("SPICE_HF_BACKEND=wgpu"),
                "{reason}"
            );
            // Automatic selection falls back to the CPU and says why.
            let choice = choose(None).unwrap();
            assert_eq!(choice.kind, BackendKind::Cpu);
            assert!(
                choice
                    .skipped
                    .iter()
                    .any(|s| s.kind == BackendKind::Wgpu && s.reason == reason)
            );
        }
    }
    // Forced, it runs on the best adapter there is, software included, and computes.
    let forced = choose(Some(BackendKind::Wgpu)).unwrap();
    assert!(forced.forced && forced.skipped.is_empty());
    let best = gpu
        .or_else(|| adapters.iter().find(|a| a.kind == AdapterKind::Software))
        .unwrap();
    assert_eq!(forced.detail, best.to_string());
    let a = burn::tensor::Tensor::<2>::from_floats([[1.0f32, 2.0], [3.0, 4.0]], &forced.device);
    let b = burn::tensor::Tensor::<2>::from_floats([[5.0f32], [6.0]], &forced.device);
    let product: Vec<f32> = a.matmul(b).into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(product, vec![17.0, 39.0]);
    // The same device again, from the cache (Burn starts a wgpu runtime once per process).
    assert!(BackendKind::Wgpu.device().is_ok());
}

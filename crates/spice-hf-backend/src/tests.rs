//! Selection logic with fake probe results, and the real CPU backend.

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
    // Not compiled in this build: a clear error naming the feature.
    let err = select(Some(BackendKind::Wgpu), &cpu_only).unwrap_err();
    assert_eq!(err, Error::BackendNotCompiled(BackendKind::Wgpu));
    assert!(err.to_string().contains("--features wgpu"));
    assert!(matches!(
        BackendKind::Cuda.device(),
        Err(Error::BackendNotCompiled(BackendKind::Cuda))
    ));
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
    assert_eq!(results.len(), 3);
    assert_eq!(
        results[2],
        ProbeResult {
            kind: BackendKind::Cpu,
            status: Ok(())
        }
    );
    assert_eq!(results[0].status, Err("not compiled in".to_string()));
    let choice = choose(None).unwrap();
    assert_eq!(choice.kind, BackendKind::Cpu);
    assert_eq!(choice.skipped.len(), 2);
    let t = burn::tensor::Tensor::<1>::from_floats([2.0f32, 3.0], &choice.device);
    assert_eq!(t.sum().into_scalar::<f32>(), 5.0);
    assert!(matches!(
        choose(Some(BackendKind::Cuda)),
        Err(Error::BackendNotCompiled(BackendKind::Cuda))
    ));
}

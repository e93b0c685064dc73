//! The Kubernetes package (deploy/k8s) against the binary it deploys: every overlay renders
//! with `kubectl kustomize` and validates against the Kubernetes schemas offline
//! (`kubernetes-validate --strict`); the probe paths, port and grace period agree with the
//! binary's routes and settings; the CPU overlay's init container and server container run for
//! real (their args, env and config file, paths mapped into a temporary directory, the Hub
//! being the fake one) and answer the probes as a kubelet would; `promtool check metrics`
//! passes on the live `/metrics`; `promtool test rules` runs the recording rules the
//! autoscalers read. Tools missing make the test fail with what to install.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use spice_hf_mirror::Mirror;
use spice_hf_testkit::{FakeHub, fixtures, repo_with};

use super::serve::launch;
use super::{BIN, require, text};

/// The repository root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `program`, which must exist: the test fails with `install` otherwise.
fn tool(program: &str, install: &str) -> Command {
    require(program, install);
    #[allow(clippy::disallowed_methods)] // Reason: the test drives the real tools.
    Command::new(program)
}

/// Runs `cmd`, failing the test with its output when it fails; returns stdout.
fn run(mut cmd: Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

const OVERLAYS: &[&str] = &["cpu", "nvidia", "mirror", "keda"];

/// The rendered overlay: its YAML text and its documents.
fn render(overlay: &str) -> (String, Vec<Value>) {
    let mut kubectl = tool(
        "kubectl",
        "install kubectl (Debian: apt-get install kubernetes-client) for `kubectl kustomize`",
    );
    kubectl
        .arg("kustomize")
        .arg(root().join("deploy/k8s/overlays").join(overlay));
    let yaml = run(kubectl);
    let docs: Vec<Value> = serde_saphyr::from_multiple(&yaml).unwrap();
    (yaml, docs)
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter().find(|d| {
        d["kind"] == kind
            && d["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n == name || n.starts_with(&format!("{name}-")))
    })
}

fn server_container(deployment: &Value) -> &Value {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "spice-hf")
        .expect("a container named spice-hf")
}

/// The `--shutdown-grace` default the binary documents in its help.
fn default_shutdown_grace() -> u64 {
    #[allow(clippy::disallowed_methods)] // Reason: the test drives the real binary.
    let help = run({
        let mut c = Command::new(BIN);
        c.args(["serve", "--help"]);
        c
    });
    let after = help
        .split("--shutdown-grace")
        .nth(1)
        .expect("serve --help documents --shutdown-grace");
    after
        .split("[default: ")
        .nth(1)
        .and_then(|d| d.split(']').next())
        .and_then(|d| d.parse().ok())
        .expect("a default for --shutdown-grace")
}

#[test]
fn every_overlay_renders_validates_and_agrees_with_the_binary() {
    let default_grace = default_shutdown_grace();
    let rules = std::fs::read_to_string(root().join("deploy/k8s/prometheus/rules.yaml")).unwrap();
    let adapter =
        std::fs::read_to_string(root().join("deploy/k8s/prometheus/adapter-rules.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for overlay in OVERLAYS {
        let (yaml, docs) = render(overlay);
        // The Kubernetes schemas, offline; custom resources (KEDA's) have none there.
        let file = dir.path().join(format!("{overlay}.yaml"));
        std::fs::write(&file, &yaml).unwrap();
        let mut validate = tool(
            "kubernetes-validate",
            "pip install kubernetes-validate (.ci/run installs it in its venv)",
        );
        validate.arg("--strict").arg(&file);
        let report = run(validate);
        let kinds = docs
            .iter()
            .filter(|d| d["apiVersion"] != "keda.sh/v1alpha1");
        assert_eq!(
            report.matches(" passed for resource ").count(),
            kinds.count(),
            "{overlay}: {report}"
        );

        let deployment = find(&docs, "Deployment", "spice-hf").expect("the Deployment");
        let pod = &deployment["spec"]["template"]["spec"];
        let c = server_container(deployment);
        let config_map = find(&docs, "ConfigMap", "spice-hf-config").expect("the config");
        let config: Value =
            serde_saphyr::from_str(config_map["data"]["spicehf.yaml"].as_str().unwrap()).unwrap();
        // The config file the server reads is the ConfigMap's, where it is mounted.
        let args: Vec<&str> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let config_path = args[args.iter().position(|a| *a == "--config").unwrap() + 1];
        let mount = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "config")
            .unwrap();
        assert_eq!(
            Path::new(config_path),
            Path::new(mount["mountPath"].as_str().unwrap()).join("spicehf.yaml")
        );
        // Port: the container's `http` port is the one the config listens on.
        let port = c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "http")
            .unwrap()["containerPort"]
            .as_u64()
            .unwrap();
        let addr: std::net::SocketAddr =
            config["server"]["addr"].as_str().unwrap().parse().unwrap();
        assert_eq!(addr.port() as u64, port, "{overlay}");
        assert!(
            addr.ip().is_unspecified(),
            "{overlay}: reachable from the kubelet"
        );
        // Probes: liveness and startup on /health, readiness on /v1/ready, on that port.
        for (probe, path) in [
            ("startupProbe", "/health"),
            ("livenessProbe", "/health"),
            ("readinessProbe", "/v1/ready"),
        ] {
            assert_eq!(c[probe]["httpGet"]["path"], path, "{overlay} {probe}");
            assert_eq!(c[probe]["httpGet"]["port"], "http", "{overlay} {probe}");
        }
        // Grace: longer than the server's drain plus the preStop pause.
        let grace = config["server"]["shutdown_grace_s"]
            .as_u64()
            .unwrap_or(default_grace);
        let pause = c["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .unwrap_or(0);
        let termination = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
        assert!(
            termination > grace + pause,
            "{overlay}: terminationGracePeriodSeconds {termination} must exceed the shutdown grace {grace} s + preStop {pause} s"
        );
        // The init container pulls what the server loads: the same reference and quant.
        let init = &pod["initContainers"][0];
        let model = &config["models"][0];
        let from = model["from"].as_str().unwrap();
        assert_eq!(init["args"][1], from.trim_start_matches("hf:"), "{overlay}");
        assert_eq!(init["args"][3], model["params"]["quant"], "{overlay}");
        // The Service reaches the same port.
        let service = find(&docs, "Service", "spice-hf").unwrap();
        assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
        // Autoscaling reads our queue gauge through the recording rule.
        assert!(rules.contains("record: spice_hf:llm_requests_waiting:avg1m"));
        assert!(rules.contains(spice_hf_telemetry::names::WAITING));
        match find(&docs, "HorizontalPodAutoscaler", "spice-hf") {
            Some(hpa) => {
                assert_ne!(*overlay, "keda", "KEDA owns the HPA");
                let metric = &hpa["spec"]["metrics"][0]["pods"]["metric"]["name"];
                assert_eq!(metric, spice_hf_telemetry::names::WAITING);
                assert!(
                    adapter.contains(&format!("as: \"{}\"", spice_hf_telemetry::names::WAITING))
                );
                assert!(adapter.contains("spice_hf:llm_requests_waiting:avg1m"));
            }
            None => {
                let so = find(&docs, "ScaledObject", "spice-hf").expect("an autoscaler");
                let query = so["spec"]["triggers"][0]["metadata"]["query"]
                    .as_str()
                    .unwrap();
                assert!(
                    query.contains("spice_hf:llm_requests_waiting:avg1m"),
                    "{query}"
                );
                assert_eq!(so["spec"]["scaleTargetRef"]["name"], "spice-hf");
            }
        }
        if *overlay == "mirror" {
            let init_env = init["env"].as_array().unwrap();
            let endpoint = init_env
                .iter()
                .find(|e| e["name"] == "HF_ENDPOINT")
                .unwrap();
            let svc = find(&docs, "Service", "spice-hf-mirror").unwrap();
            let hub_port = svc["spec"]["ports"][0]["port"].as_u64().unwrap();
            assert_eq!(
                endpoint["value"],
                format!("http://spice-hf-mirror:{hub_port}"),
                "the pods pull through the mirror's Service"
            );
        }
    }
    // The recording rules, with promtool's own unit tests (rising as the queue fills).
    let mut promtool = tool(
        "promtool",
        "install promtool (Debian: apt-get install prometheus)",
    );
    promtool
        .args(["test", "rules", "rules_test.yaml"])
        .current_dir(root().join("deploy/k8s/prometheus"));
    let out = run(promtool);
    assert!(out.contains("SUCCESS"), "{out}");
}

/// The environment of `container`, with every mount path mapped into `mounts` and the values
/// from Secrets taken from `secrets`.
fn container_env(
    container: &Value,
    map: &impl Fn(&str) -> String,
    secrets: &BTreeMap<&str, &str>,
) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap().to_string();
            let value = match e["value"].as_str() {
                Some(v) => map(v),
                None => {
                    let key = e["valueFrom"]["secretKeyRef"]["key"].as_str().unwrap();
                    secrets[key].to_string()
                }
            };
            (name, value)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cpu_overlay_pod_starts_from_its_init_pull_and_answers_the_kubelet() {
    let Some(gguf) = fixtures::smollm2_gguf_or_skip() else {
        return;
    };
    let (_, docs) = render("cpu");
    let deployment = find(&docs, "Deployment", "spice-hf").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let init = &pod["initContainers"][0];
    let server = server_container(deployment);
    let config_map = find(&docs, "ConfigMap", "spice-hf-config").unwrap();

    // The Hub: the model repository the manifests name, with the real SmolLM2 GGUF.
    let repo = init["args"][1].as_str().unwrap();
    let repo = repo.split('@').next().unwrap();
    let files = BTreeMap::from([(
        "SmolLM2-135M-Instruct.Q4_1.gguf".to_string(),
        std::fs::read(&gguf).unwrap(),
    )]);
    let mirror = Mirror::new();
    mirror.add_repo(repo_with(repo, &files));
    let hub = FakeHub::start(mirror).await.unwrap();

    // The pod's volumes as directories; the Secret with an API key and no Hub token.
    let volumes = tempfile::tempdir().unwrap();
    let mut mounts: Vec<(String, PathBuf)> = Vec::new();
    for c in [init, server] {
        for m in c["volumeMounts"].as_array().unwrap() {
            let dir = volumes.path().join(m["name"].as_str().unwrap());
            std::fs::create_dir_all(&dir).unwrap();
            mounts.push((m["mountPath"].as_str().unwrap().to_string(), dir));
        }
    }
    // In one pass (through placeholders), so a directory under /tmp is not mapped twice by
    // the pod's own /tmp mount.
    let map = |s: &str| {
        let mut s = s.to_string();
        for (i, (from, _)) in mounts.iter().enumerate() {
            s = s.replace(from.as_str(), &format!("\u{1}{i}\u{1}"));
        }
        for (i, (_, to)) in mounts.iter().enumerate() {
            s = s.replace(&format!("\u{1}{i}\u{1}"), &to.display().to_string());
        }
        s
    };
    let api_key = "k8s-test-key";
    let secrets = BTreeMap::from([("api_key", api_key)]);
    std::fs::write(volumes.path().join("secrets/api_key"), api_key).unwrap();
    let config = map(config_map["data"]["spicehf.yaml"].as_str().unwrap());
    std::fs::write(volumes.path().join("config/spicehf.yaml"), config).unwrap();
    let command = |container: &Value| {
        #[allow(clippy::disallowed_methods)] // Reason: the test drives the real binary.
        let mut c = Command::new(BIN);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", volumes.path())
            .env("HF_ENDPOINT", hub.url())
            .env("SPICE_HF_LOG", "info")
            .envs(container_env(container, &map, &secrets))
            .args(
                container["args"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| map(a.as_str().unwrap())),
            )
            .stdin(Stdio::null());
        c
    };

    // The init container pulls into the models volume.
    let pulled = run(command(init));
    assert!(pulled.contains("commit "), "{pulled}");
    let downloads = hub.requests().len();

    // The memory request covers what `spice-hf estimate` says the configured model takes.
    let config: Value =
        serde_saphyr::from_str(config_map["data"]["spicehf.yaml"].as_str().unwrap()).unwrap();
    let params = &config["models"][0]["params"];
    #[allow(clippy::disallowed_methods)] // Reason: the test drives the real binary.
    let estimate = run({
        let mut c = Command::new(BIN);
        c.arg("estimate")
            .arg(&gguf)
            .arg("--context")
            .arg(params["context_length"].as_u64().unwrap().to_string())
            .arg("--max-concurrency")
            .arg(params["max_concurrency"].as_u64().unwrap().to_string());
        c
    });
    let total_mib: f64 = estimate
        .lines()
        .find_map(|l| l.strip_prefix("total"))
        .and_then(|l| l.trim().strip_suffix(" MiB"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no total in {estimate}"));
    let requested: f64 = server["resources"]["requests"]["memory"]
        .as_str()
        .and_then(|m| m.strip_suffix("Mi"))
        .and_then(|m| m.parse().ok())
        .expect("a memory request in Mi");
    assert!(
        requested >= total_mib,
        "the pod requests {requested} MiB but the model needs {total_mib} MiB"
    );

    // The server, as its container runs it (but on a free loopback port: a test must not take
    // 8080 on the machine; the port itself is checked against the manifest in the test above).
    let mut serve = command(server);
    serve.args(["--addr", "127.0.0.1:0"]);
    let served = launch(serve).await;
    let client = reqwest::Client::new();
    let probe = |path: &str| {
        let path = path.to_string();
        let client = client.clone();
        let base = served.base.clone();
        async move { client.get(format!("{base}{path}")).send().await.unwrap() }
    };
    // What the kubelet sends: no key.
    let health = server["livenessProbe"]["httpGet"]["path"].as_str().unwrap();
    assert_eq!(probe(health).await.status(), 200);
    let ready = server["readinessProbe"]["httpGet"]["path"]
        .as_str()
        .unwrap();
    let mut status = 0;
    for _ in 0..1200 {
        status = probe(ready).await.status().as_u16();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "a loading server is not ready, never refused");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200, "the pod never became ready");
    // Offline, from the init container's pull: the server asked the Hub nothing.
    assert_eq!(hub.requests().len(), downloads);

    // It answers with the key from the Secret.
    let model = config["models"][0]["name"].as_str().unwrap();
    let answer: Value = client
        .post(format!("{}/v1/chat/completions", served.base))
        .bearer_auth(api_key)
        .json(&json!({"model": model, "max_tokens": 8,
                      "messages": [{"role": "user", "content": "What is the capital of France?"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.contains("Paris"), "{answer}");

    // promtool lints the live exposition the autoscaler's Prometheus scrapes.
    // Scraped as the pod annotations and the endpoint picker do: without the key, which the
    // config allows (`public_metrics`).
    assert_eq!(config["server"]["public_metrics"], true);
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    let scrape_port: u64 = annotations["prometheus.io/port"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        Some(scrape_port),
        server["ports"][0]["containerPort"].as_u64()
    );
    let metrics = client
        .get(format!("{}/metrics", served.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(spice_hf_telemetry::names::WAITING),
        "{metrics}"
    );
    assert!(
        metrics.contains(spice_hf_telemetry::names::KV_CACHE_USAGE),
        "{metrics}"
    );
    let mut promtool = tool(
        "promtool",
        "install promtool (Debian: apt-get install prometheus)",
    );
    promtool
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = promtool.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), metrics.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
    // Exit 3 is lint findings only (1 would be an exposition promtool cannot parse). The only
    // findings allowed are the naming lints on the names Spice's dashboards read, which the
    // design fixes (docs/serving.md, "Metrics"): counters without `_total`, durations in ms.
    let fixed = [
        "llm_requests",
        "llm_failures",
        "llm_finished",
        "llm_internal_request_duration_ms",
        "llm_time_to_first_token_ms",
        "llm_inter_token_latency_ms",
        "llm_queue_wait_ms",
        "llm_model_load_duration_ms",
    ];
    let allowed = |line: &str| {
        let (name, finding) = line.split_once(' ').unwrap_or((line, ""));
        fixed.contains(&name)
            && (finding == "counter metrics should have \"_total\" suffix"
                || finding == "metric names should not contain abbreviated units")
    };
    assert!(
        out.status.success() || (out.status.code() == Some(3) && report.lines().all(allowed)),
        "promtool check metrics ({}): {report}\n{metrics}",
        out.status
    );
}

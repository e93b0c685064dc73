//! `cargo xtask bench`: measured, never asserted. `pull` serves a 500 MB file from
//! `spice-hf mirror serve` on loopback and times spice-hf, curl and the hf-hub crate on it,
//! then a fully cached pull. `infer` times SmolLM2 through `spice-hf run`. `serve` drives
//! `spice-hf serve` with K streaming clients for T seconds, then the runtime's session API
//! directly, to read off the server's overhead. Each table is printed and written as JSON for
//! `--compare`.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use serde_json::json;
use xshell::{Shell, cmd};

const SIZE: u64 = 500 * 1000 * 1000;

/// Where `cargo build --release` puts binaries: `$CARGO_TARGET_DIR/release` when it is set
/// (as `.ci/run` sets it), else the workspace's `target/release`.
fn release_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"))
        .join("release")
}

pub(crate) fn run(sh: &Shell, args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("--compare") => {
            let [_, a, b] = args else {
                bail!("usage: cargo xtask bench --compare A.json B.json")
            };
            compare(Path::new(a), Path::new(b))
        }
        Some("engines") => {
            let gguf = crate::fixtures::fetch(sh)?;
            let table = engines_side_by_side(sh, &gguf)?;
            let out = crate::workspace_root().join("target/bench/engines.json");
            std::fs::create_dir_all(out.parent().context("bench dir")?)?;
            std::fs::write(&out, serde_json::to_vec_pretty(&table)?)?;
            println!("written to {}", out.display());
            Ok(())
        }
        Some(which @ ("pull" | "infer" | "serve" | "all")) => {
            let json_out = |name: &str| match args.iter().position(|a| a == "--json") {
                Some(i) => args
                    .get(i + 1)
                    .map(PathBuf::from)
                    .context("--json needs a file"),
                None => Ok(crate::workspace_root().join(format!("target/bench/{name}.json"))),
            };
            if which == "pull" || which == "all" {
                pull(sh, &json_out("pull")?)?;
            }
            if which == "infer" || which == "all" {
                infer(sh, &json_out("infer")?)?;
            }
            if which == "serve" || which == "all" {
                serve(sh, &json_out("serve")?)?;
            }
            Ok(())
        }
        other => bail!("unknown benchmark {other:?} (pull, infer, serve, all, --compare)"),
    }
}

fn write_random(path: &Path, size: u64) -> Result<()> {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

fn timed(label: &str, mut c: Command) -> Result<f64> {
    let start = Instant::now();
    let out = c.stdout(Stdio::null()).stderr(Stdio::piped()).output()?;
    let secs = start.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("{label} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(secs)
}

fn pull(sh: &Shell, json_out: &Path) -> Result<()> {
    cmd!(
        sh,
        "cargo build --release --locked -p spice-hf-cli -p spice-hf-testkit --bins"
    )
    .run()?;
    let bin = release_dir();
    let spice = bin.join("spice-hf");
    let hfhub = bin.join("hfhub-fetch");
    let work = crate::workspace_root().join("target/bench/pull-work");
    let _ = std::fs::remove_dir_all(&work);
    let repo_dir = work.join("mirror/bench/big");
    std::fs::create_dir_all(&repo_dir)?;
    write_random(&repo_dir.join("model.safetensors"), SIZE)?;
    std::fs::write(repo_dir.join("config.json"), b"{}")?;

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut mirror = Command::new(&spice)
        .args(["mirror", "serve"])
        .arg(work.join("mirror"))
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(mirror.stdout.take().context("mirror stdout")?).read_line(&mut line)?;
    let endpoint = format!("http://127.0.0.1:{port}");
    let result = (|| -> Result<Vec<(String, f64, Option<f64>)>> {
        let mb = SIZE as f64 / 1e6;
        let mut rows = Vec::new();
        let spice_cmd = |cache: &Path, model: &str| {
            let mut c = Command::new(&spice);
            c.args(["pull", model])
                .env("HF_ENDPOINT", &endpoint)
                .env("SPICE_MODELS_DIR", cache)
                .env("SPICE_HF_LOG", "warn");
            c
        };
        let cache = work.join("cache-spice");
        let t = timed("spice-hf pull", spice_cmd(&cache, "bench/big"))?;
        rows.push((
            "spice-hf pull (cold, verified sha256)".to_string(),
            t,
            Some(mb / t),
        ));

        let mut curl = Command::new("curl");
        curl.args(["-sSfL", "-o"])
            .arg(work.join("curl.bin"))
            .arg(format!(
                "{endpoint}/bench/big/resolve/main/model.safetensors"
            ));
        let t = timed("curl", curl)?;
        rows.push(("curl -L (no verification)".to_string(), t, Some(mb / t)));

        let mut hf = Command::new(&hfhub);
        hf.args([endpoint.as_str(), "bench/big"])
            .arg(work.join("cache-hfhub"));
        let t = timed("hf-hub", hf)?;
        rows.push(("hf-hub 1.0 snapshot_download".to_string(), t, Some(mb / t)));

        let t = timed("spice-hf pull (cached)", spice_cmd(&cache, "bench/big"))?;
        rows.push((
            "spice-hf pull, cached branch (2 API calls)".to_string(),
            t,
            None,
        ));
        let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(
            cache.join("bench--big/main/.spice-manifest.json"),
        )?)?;
        let commit = manifest["commit"]
            .as_str()
            .context("manifest commit")?
            .to_string();
        timed(
            "spice-hf pull (pin)",
            spice_cmd(&cache, &format!("bench/big@{commit}")),
        )?;
        let t = timed(
            "spice-hf pull (pinned, cached)",
            spice_cmd(&cache, &format!("bench/big@{commit}")),
        )?;
        rows.push((
            "spice-hf pull, cached pinned commit (no network)".to_string(),
            t,
            None,
        ));
        Ok(rows)
    })();
    let _ = mirror.kill();
    let _ = mirror.wait();
    let rows = result?;
    let _ = std::fs::remove_dir_all(&work);

    println!(
        "\npull benchmark: {} MB file over loopback, {} cores",
        SIZE / 1_000_000,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!("{:<52} {:>10} {:>10}", "client", "seconds", "MB/s");
    for (name, secs, mbps) in &rows {
        println!(
            "{:<52} {:>10.3} {:>10}",
            name,
            secs,
            mbps.map(|m| format!("{m:.1}"))
                .unwrap_or_else(|| "-".into())
        );
    }
    let json = json!({
        "benchmark": "pull",
        "size_bytes": SIZE,
        "rows": rows.iter().map(|(n, s, m)| json!({"name": n, "seconds": s, "mb_per_s": m})).collect::<Vec<_>>(),
    });
    if let Some(parent) = json_out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(json_out, serde_json::to_vec_pretty(&json)?)?;
    println!("written to {}", json_out.display());
    Ok(())
}

fn compare(a: &Path, b: &Path) -> Result<()> {
    let load = |p: &Path| -> Result<serde_json::Value> {
        Ok(serde_json::from_slice(
            &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        )?)
    };
    let (a, b) = (load(a)?, load(b)?);
    let value = |r: &serde_json::Value| r["seconds"].as_f64().or_else(|| r["value"].as_f64());
    println!("{:<52} {:>10} {:>10} {:>8}", "row", "A", "B", "B/A");
    for row in a["rows"].as_array().into_iter().flatten() {
        let name = row["name"].as_str().unwrap_or_default();
        let other = b["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["name"] == name);
        let (sa, sb) = (value(row).unwrap_or(0.0), other.and_then(value));
        match sb {
            Some(sb) => println!("{name:<52} {sa:>10.3} {sb:>10.3} {:>8.2}", sb / sa),
            None => println!("{name:<52} {sa:>10.3} {:>10} {:>8}", "-", "-"),
        }
    }
    Ok(())
}

/// `bench infer`: SmolLM2-135M-Instruct (Q4_1 GGUF, packed CPU kernels) on the CPU backend,
/// batch 1: load time, prefill of a ~128-token prompt, 128 decoded tokens, time to first
/// token, peak RSS next to the estimate. Three runs; the table shows the median.
fn infer(sh: &Shell, json_out: &Path) -> Result<()> {
    let gguf = crate::fixtures::fetch(sh)?;
    // With wgpu, for the record row of the tiny model on a (software) GPU below.
    cmd!(
        sh,
        "cargo build --release --locked -p spice-hf-cli -p spice-hf-testkit --bins --features spice-hf-cli/wgpu"
    )
    .run()?;
    let spice = release_dir().join("spice-hf");
    let prompt = "The quick brown fox jumps over the lazy dog while the farmer counts his sheep in the green valley. ".repeat(6);
    let mut runs: Vec<serde_json::Value> = Vec::new();
    for _ in 0..3 {
        let mut out = Command::new(&spice);
        out.arg("run")
            .arg(&gguf)
            .args([
                "--raw",
                "--prompt",
                &prompt,
                "--max-tokens",
                "128",
                "--ignore-eos",
                "--json",
                "--context",
                "512",
                "--backend",
                "cpu",
            ])
            .env("SPICE_HF_LOG", "warn");
        runs.push(run_json(&mut out)?);
    }
    let median = |f: &dyn Fn(&serde_json::Value) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let t = |k: &'static str| move |r: &serde_json::Value| r["timings"][k].as_f64().unwrap_or(0.0);
    let rows = [
        ("load (ms)", median(&t("load_ms"))),
        ("prefill (tok/s)", median(&t("prefill_tokens_per_s"))),
        ("decode (tok/s)", median(&t("decode_tokens_per_s"))),
        ("time to first token (ms)", median(&t("ttft_ms"))),
        (
            "peak RSS (MiB)",
            median(&|r| r["memory"]["peak_rss_bytes"].as_f64().unwrap_or(0.0) / 1048576.0),
        ),
        (
            "estimate (MiB)",
            median(&|r| r["memory"]["estimated_bytes"].as_f64().unwrap_or(0.0) / 1048576.0),
        ),
        (
            "prompt tokens",
            median(&|r| r["usage"]["prompt_tokens"].as_f64().unwrap_or(0.0)),
        ),
        (
            "generated tokens",
            median(&|r| r["usage"]["completion_tokens"].as_f64().unwrap_or(0.0)),
        ),
    ];
    println!(
        "\ninfer benchmark: SmolLM2-135M-Instruct Q4_1 through `spice-hf run` (packed CPU kernels), batch 1, {} cores, median of 3",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    for (name, value) in &rows {
        println!("{name:<28} {value:>10.1}");
    }
    let constrained = constrained_decode(&spice, &gguf)?;
    let engines = engines_side_by_side(sh, &gguf)?;
    let gpu = tiny_on_each_backend(sh, &spice)?;
    let json = json!({
        "benchmark": "infer",
        "rows": rows.iter().map(|(n, v)| json!({"name": n, "value": v})).collect::<Vec<_>>(),
        "runs": runs,
        "constrained": constrained,
        "engines": engines,
        "tiny_cpu_vs_wgpu": gpu,
    });
    if let Some(parent) = json_out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(json_out, serde_json::to_vec_pretty(&json)?)?;
    println!("written to {}", json_out.display());
    Ok(())
}

/// The JSON Schema of the constrained rows: a shopping list of exactly ten entries, long
/// enough (about 200 tokens) that decode, not start-up, is what is timed.
const LIST_SCHEMA: &str = r#"{"type": "object", "properties": {"items": {"type": "array", "minItems": 10, "maxItems": 10, "items": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}, "qty": {"type": "integer", "minimum": 0, "maximum": 999}}, "required": ["name", "qty"], "additionalProperties": false}}}, "required": ["items"], "additionalProperties": false}"#;

/// Decode with and without a JSON-Schema constraint: the same chat prompt, interleaved rounds
/// (constrained, free, constrained, ...), medians of five. The constrained answer ends where
/// its JSON does; the free one that follows generates as many tokens (so both decode over the
/// same positions).
fn constrained_decode(spice: &Path, gguf: &Path) -> Result<serde_json::Value> {
    let schema = std::env::temp_dir().join(format!("spice-hf-bench-{}.json", std::process::id()));
    std::fs::write(&schema, LIST_SCHEMA)?;
    let run = |constrained: bool, tokens: u64| -> Result<serde_json::Value> {
        let mut c = Command::new(spice);
        let tokens = tokens.to_string();
        c.arg("run").arg(gguf).args([
            "--prompt",
            "List ten things to buy at the market, with quantities, as JSON.",
            "--max-tokens",
            &tokens,
            "--ignore-eos",
            "--json",
            "--context",
            "512",
            "--backend",
            "cpu",
        ]);
        if constrained {
            c.arg("--json-schema").arg(&schema);
        }
        c.env("SPICE_HF_LOG", "warn");
        let last = run_json(&mut c)?;
        if constrained {
            let answer: serde_json::Value =
                serde_json::from_str(last["text"].as_str().unwrap_or(""))
                    .context("the constrained answer is not JSON")?;
            anyhow::ensure!(
                answer["items"].as_array().is_some_and(|a| a.len() == 10),
                "the constrained answer does not follow the schema: {answer}"
            );
        }
        Ok(last)
    };
    let (mut free, mut guided) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let g = run(true, 256)?;
        let n = g["usage"]["completion_tokens"].as_u64().unwrap_or(256);
        guided.push(g);
        free.push(run(false, n)?);
    }
    let decode = |runs: &[serde_json::Value]| {
        let mut v: Vec<f64> = runs
            .iter()
            .filter_map(|r| r["timings"]["decode_tokens_per_s"].as_f64())
            .collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let _ = std::fs::remove_file(&schema);
    let tokens = |runs: &[serde_json::Value]| runs[0]["usage"]["completion_tokens"].clone();
    let (f, g) = (decode(&free), decode(&guided));
    println!("\nconstrained decode (same chat prompt, median of 5, interleaved):");
    println!("{:<28} {f:>10.1}", "free decode (tok/s)");
    println!("{:<28} {g:>10.1}", "json-schema decode (tok/s)");
    println!("{:<28} {:>10.3}", "constrained / free", g / f);
    Ok(json!({
        "free_decode_tokens_per_s": f,
        "json_schema_decode_tokens_per_s": g,
        "ratio": g / f,
        "free_tokens": tokens(&free),
        "json_schema_tokens": tokens(&guided),
        "schema": serde_json::from_str::<serde_json::Value>(LIST_SCHEMA)?,
    }))
}

/// Runs `spice-hf run ... --json` and returns its JSON line (the last one).
fn run_json(c: &mut Command) -> Result<serde_json::Value> {
    let out = c.stderr(Stdio::inherit()).output()?;
    if !out.status.success() {
        bail!("spice-hf run failed");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(serde_json::from_str(
        text.lines().last().context("no output")?,
    )?)
}

/// Median of a field over rounds.
fn median_of(runs: &[serde_json::Value], key: &str) -> f64 {
    let mut v: Vec<f64> = runs.iter().filter_map(|r| r[key].as_f64()).collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs a harness that prints one JSON line, `rounds` times.
fn rounds(rounds: usize, mut command: impl FnMut() -> Command) -> Result<Vec<serde_json::Value>> {
    (0..rounds)
        .map(|_| {
            let out = command().stderr(Stdio::inherit()).output()?;
            if !out.status.success() {
                bail!("{:?} failed", command());
            }
            let text = String::from_utf8_lossy(&out.stdout);
            Ok(serde_json::from_str(
                text.lines().last().context("no output")?,
            )?)
        })
        .collect()
}

/// llama.cpp's `llama-bench` (from `$LLAMA_BENCH`, or on the `PATH`), if there is one.
fn llama_bench() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LLAMA_BENCH").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("llama-bench"))
            .find(|p| p.is_file())
    })
}

/// llama.cpp on the same file: pp128 and tg128 (`-r 3`: its own mean over three
/// repetitions), three times for a median like the others.
fn llama_cpp(bench: &Path, gguf: &Path, threads: usize) -> Result<Vec<serde_json::Value>> {
    (0..3)
        .map(|_| {
            let t = threads.to_string();
            let out = Command::new(bench)
                .arg("-m")
                .arg(gguf)
                .args(["-t", &t, "-p", "128", "-n", "128", "-r", "3", "-o", "jsonl"])
                .stderr(Stdio::null())
                .output()?;
            if !out.status.success() {
                bail!("llama-bench failed on {}", gguf.display());
            }
            // One JSON line per test: pp128 has n_prompt > 0, tg128 has n_gen > 0.
            let mut rec = json!({"engine": "llama.cpp"});
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let v: serde_json::Value = serde_json::from_str(line)?;
                let key = if v["n_prompt"].as_u64().unwrap_or(0) > 0 {
                    "prefill_tokens_per_s"
                } else {
                    "decode_tokens_per_s"
                };
                rec[key] = v["avg_ts"].clone();
            }
            Ok(rec)
        })
        .collect()
}

/// The packed engine, candle's quantized Llama and (when found) llama.cpp on the same files
/// and thread count: the Q4_1 fixture and Q8_0 / F16 conversions of it; plus Burn's flex (the
/// f32 path the packed engine replaced) on the fixture. Medians of three rounds, one process
/// per round.
fn engines_side_by_side(sh: &Shell, gguf: &Path) -> Result<serde_json::Value> {
    let root = crate::workspace_root();
    let threads = 2usize;
    let harness_manifest = root.join("bench/cpu-backends/Cargo.toml");
    let candle_manifest = root.join("bench/candle/Cargo.toml");
    // Each harness is its own workspace with its own graph, so each gets its own target dir.
    let bench_target = release_dir().join("../bench-harnesses");
    let (harness_target, candle_target) = (
        bench_target.join("cpu-backends"),
        bench_target.join("candle"),
    );
    cmd!(
        sh,
        "cargo build --release --manifest-path {harness_manifest} --target-dir {harness_target}"
    )
    .run()?;
    cmd!(
        sh,
        "cargo build --release --manifest-path {candle_manifest} --target-dir {candle_target}"
    )
    .run()?;
    let harness = harness_target.join("release/spice-hf-bench-cpu-backends");
    let candle = candle_target.join("release/spice-hf-bench-candle");
    let work = root.join("target/bench/files");
    std::fs::create_dir_all(&work)?;
    let mut files = vec![("Q4_1".to_string(), gguf.to_path_buf())];
    for fmt in ["q8_0", "f16"] {
        let out = work.join(format!("SmolLM2-135M-Instruct.{fmt}.gguf"));
        if !out.is_file() {
            cmd!(sh, "{harness} convert {gguf} {out} {fmt}").run()?;
        }
        files.push((fmt.to_uppercase(), out));
    }
    let llama = llama_bench();
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let avx512 = cpu.contains("avx512f");
    println!(
        "\nengines on the same file, {threads} threads, 128-token prompt + 128 greedy tokens, median of 3 \
         (CPU: {model}, AVX-512 {}; spice-hf kernels use AVX2)",
        if avx512 { "present" } else { "absent" }
    );
    println!(
        "{:<6} {:<12} {:>9} {:>14} {:>13} {:>9} {:>10} {:>10}",
        "file",
        "engine",
        "load ms",
        "prefill tok/s",
        "decode tok/s",
        "TTFT ms",
        "RSS MiB",
        "file MiB"
    );
    let mut table = Vec::new();
    for (name, path) in &files {
        let file_mib = std::fs::metadata(path)?.len() as f64 / 1048576.0;
        let mut rows: Vec<(String, Vec<serde_json::Value>)> = vec![
            (
                "spice-hf".into(),
                rounds(3, || {
                    let mut c = Command::new(&harness);
                    c.arg(path).arg("packed").arg(threads.to_string());
                    c
                })?,
            ),
            (
                // The opt-in 8-bit activation path (`--activations q8`).
                "spice-hf q8".into(),
                rounds(3, || {
                    let mut c = Command::new(&harness);
                    c.arg(path).arg("packed-q8").arg(threads.to_string());
                    c
                })?,
            ),
            (
                "candle".into(),
                rounds(3, || {
                    let mut c = Command::new(&candle);
                    c.arg(path).env("RAYON_NUM_THREADS", threads.to_string());
                    c
                })?,
            ),
        ];
        if name == "Q4_1" {
            rows.push((
                "burn flex".into(),
                rounds(1, || {
                    let mut c = Command::new(&harness);
                    c.arg(path).arg("flex");
                    c
                })?,
            ));
        }
        if let Some(bench) = &llama {
            rows.push(("llama.cpp".into(), llama_cpp(bench, path, threads)?));
        }
        let mut summary = serde_json::Map::new();
        for (engine, runs) in &rows {
            let m = |k: &str| median_of(runs, k);
            println!(
                "{name:<6} {engine:<12} {:>9.0} {:>14.1} {:>13.1} {:>9.0} {:>10.0} {:>10.0}",
                m("load_ms"),
                m("prefill_tokens_per_s"),
                m("decode_tokens_per_s"),
                m("ttft_ms"),
                m("peak_rss_bytes") / 1048576.0,
                file_mib
            );
            summary.insert(
                engine.clone(),
                json!({
                    "load_ms": m("load_ms"),
                    "prefill_tokens_per_s": m("prefill_tokens_per_s"),
                    "decode_tokens_per_s": m("decode_tokens_per_s"),
                    "ttft_ms": m("ttft_ms"),
                    "peak_rss_bytes": m("peak_rss_bytes"),
                    "runs": runs,
                }),
            );
        }
        let value = |engine: &str, key: &str| {
            summary
                .get(engine)
                .and_then(|e| e[key].as_f64())
                .unwrap_or(f64::NAN)
        };
        let ratio = |engine: &str, key: &str| value("spice-hf", key) / value(engine, key);
        let q8_ratio = |engine: &str, key: &str| value("spice-hf q8", key) / value(engine, key);
        println!(
            "{name:<6} spice-hf / candle: decode {:.2}x, prefill {:.2}x; / llama.cpp: decode {:.2}x, prefill {:.2}x (q8: {:.2}x, {:.2}x); peak RSS / file {:.2}",
            ratio("candle", "decode_tokens_per_s"),
            ratio("candle", "prefill_tokens_per_s"),
            ratio("llama.cpp", "decode_tokens_per_s"),
            ratio("llama.cpp", "prefill_tokens_per_s"),
            q8_ratio("llama.cpp", "decode_tokens_per_s"),
            q8_ratio("llama.cpp", "prefill_tokens_per_s"),
            summary["spice-hf"]["peak_rss_bytes"]
                .as_f64()
                .unwrap_or(f64::NAN)
                / 1048576.0
                / file_mib
        );
        table.push(
            json!({"file": name, "file_bytes": std::fs::metadata(path)?.len(), "engines": summary}),
        );
    }
    if llama.is_none() {
        println!(
            "(llama.cpp: no llama-bench on the PATH or in $LLAMA_BENCH; see docs/deployment.md)"
        );
    }
    // Scale: a ~1 GiB Q4_K model with random weights (SmolLM2's tokenizer, 40 layers of a
    // 2,048-wide Llama), one run: peak RSS against the file's size.
    let synth = work.join("synthetic-q4k-40-layers.gguf");
    if !synth.is_file() {
        cmd!(sh, "{harness} synth {gguf} {synth} 40").run()?;
    }
    let synth_mib = std::fs::metadata(&synth)?.len() as f64 / 1048576.0;
    let runs = rounds(1, || {
        let mut c = Command::new(&harness);
        c.arg(&synth).arg("packed").arg(threads.to_string());
        c
    })?;
    let rss_mib = median_of(&runs, "peak_rss_bytes") / 1048576.0;
    println!(
        "synthetic Q4_K, random weights, {synth_mib:.0} MiB: spice-hf load {:.0} ms, prefill {:.1} tok/s, decode {:.2} tok/s, peak RSS {rss_mib:.0} MiB = {:.2}x the file",
        median_of(&runs, "load_ms"),
        median_of(&runs, "prefill_tokens_per_s"),
        median_of(&runs, "decode_tokens_per_s"),
        rss_mib / synth_mib
    );
    Ok(json!({
        "threads": threads, "cpu": model, "avx512": avx512, "files": table,
        "synthetic_q4k": {"file_bytes": std::fs::metadata(&synth)?.len(), "runs": runs},
    }))
}

/// `bench serve`: SmolLM2 behind `spice-hf serve` (max_concurrency 1, queue 16), 1 then 4
/// streaming clients for 15 s each, 32 tokens per answer; then the same load on the runtime's
/// session API in-process. Requests/s, tokens/s, latency and TTFT percentiles, errors by kind.
fn serve(sh: &Shell, json_out: &Path) -> Result<()> {
    let gguf = crate::fixtures::fetch(sh)?;
    cmd!(
        sh,
        "cargo build --release --locked -p spice-hf-cli -p spice-hf-e2e --bins"
    )
    .run()?;
    let release = release_dir();
    let history = tempdir_path("spice-hf-bench-serve")?;
    let mut server = Command::new(release.join("spice-hf"))
        .arg("serve")
        .arg(&gguf)
        .args([
            "--name",
            "smol",
            "--addr",
            "127.0.0.1:0",
            "--context",
            "512",
            "--backend",
            "cpu",
        ])
        .args(["--health-interval", "0", "--task-history"])
        .arg(history.join("history.db"))
        .env("SPICE_HF_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(server.stdout.take().context("no stdout")?).read_line(&mut line)?;
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .with_context(|| format!("unexpected output from spice-hf serve: {line:?}"))?
        .to_string();
    let load = |args: &[&str]| -> Result<Vec<serde_json::Value>> {
        let out = Command::new(release.join("serve-load"))
            .args(args)
            .stderr(Stdio::inherit())
            .output()?;
        if !out.status.success() {
            bail!("serve-load failed");
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| Ok(serde_json::from_str(l)?))
            .collect()
    };
    let http = load(&[
        "--url",
        &url,
        "--model",
        "smol",
        "--clients",
        "4",
        "--seconds",
        "15",
    ]);
    let _ = server.kill();
    let _ = server.wait();
    let mut phases = http?;
    let gguf_arg = gguf.display().to_string();
    phases.extend(load(&[
        "--direct",
        &gguf_arg,
        "--clients",
        "4",
        "--seconds",
        "15",
    ])?);
    println!(
        "\nserve benchmark: SmolLM2-135M-Instruct Q4_1, backend cpu, max_concurrency 1, streaming chat, 32 tokens, 15 s per row, {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "{:<8} {:>7} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9}  errors",
        "path", "clients", "req/s", "tok/s", "p50 ms", "p99 ms", "ttft p50", "ttft p99"
    );
    let mut rows = Vec::new();
    for p in &phases {
        let f = |k: &str| p[k].as_f64().unwrap_or(0.0);
        println!(
            "{:<8} {:>7} {:>8.2} {:>8.1} {:>9.0} {:>9.0} {:>9.0} {:>9.0}  {}",
            p["phase"].as_str().unwrap_or(""),
            p["clients"],
            f("requests_per_s"),
            f("tokens_per_s"),
            f("latency_p50_ms"),
            f("latency_p99_ms"),
            f("ttft_p50_ms"),
            f("ttft_p99_ms"),
            p["errors"]
        );
        let name = format!("{} x{}", p["phase"].as_str().unwrap_or(""), p["clients"]);
        rows.push(
            json!({"name": format!("{name} p50 latency (ms)"), "value": f("latency_p50_ms")}),
        );
        rows.push(json!({"name": format!("{name} requests/s"), "value": f("requests_per_s")}));
    }
    let p50 = |phase: &str| {
        phases
            .iter()
            .find(|p| p["phase"] == phase && p["clients"] == 1)
            .and_then(|p| p["latency_p50_ms"].as_f64())
    };
    if let (Some(h), Some(d)) = (p50("http"), p50("direct")) {
        println!(
            "server overhead at 1 client (p50 latency, http - direct): {:.1} ms",
            h - d
        );
        rows.push(json!({"name": "server overhead p50 (ms)", "value": h - d}));
    }
    let json = json!({"benchmark": "serve", "rows": rows, "phases": phases});
    if let Some(parent) = json_out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(json_out, serde_json::to_vec_pretty(&json)?)?;
    println!("written to {}", json_out.display());
    Ok(())
}

fn tempdir_path(name: &str) -> Result<PathBuf> {
    let dir = crate::workspace_root().join("target/bench").join(name);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The tiny random Llama on the CPU and on wgpu (forced, so on a machine without a GPU it runs
/// on Mesa's software Vulkan): what the wgpu path costs, for the record. SmolLM2 is too slow
/// on a software adapter to be worth a row.
fn tiny_on_each_backend(sh: &Shell, spice: &Path) -> Result<Vec<serde_json::Value>> {
    let target = spice.parent().context("release dir")?;
    let tiny = target.join("bench-tiny-llama");
    let writer = target.join("write-tiny-llama");
    cmd!(sh, "{writer} {tiny}").run()?;
    println!("\ntiny random Llama (2 layers), 64 decoded tokens, one run each:");
    println!(
        "{:<8} {:<46} {:>9} {:>14} {:>13} {:>9}",
        "backend", "device", "load ms", "prefill tok/s", "decode tok/s", "TTFT ms"
    );
    let mut out = Vec::new();
    for backend in ["cpu", "wgpu"] {
        let run = Command::new(spice)
            .arg("run")
            .arg(&tiny)
            .args([
                "--raw",
                "--prompt",
                "hello hello hello hello",
                "--max-tokens",
                "64",
            ])
            .args(["--ignore-eos", "--json", "--backend", backend])
            .env("SPICE_HF_LOG", "error")
            .env("NODEVICE_SELECT", "1")
            .stderr(Stdio::inherit())
            .output()?;
        if !run.status.success() {
            bail!("the tiny model on {backend} failed");
        }
        let text = String::from_utf8_lossy(&run.stdout);
        let v: serde_json::Value = serde_json::from_str(text.lines().last().context("no output")?)?;
        let t = |k: &str| v["timings"][k].as_f64().unwrap_or(0.0);
        println!(
            "{backend:<8} {:<46} {:>9.0} {:>14.1} {:>13.1} {:>9.0}",
            v["device"].as_str().unwrap_or("?"),
            t("load_ms"),
            t("prefill_tokens_per_s"),
            t("decode_tokens_per_s"),
            t("ttft_ms")
        );
        out.push(v);
    }
    Ok(out)
}

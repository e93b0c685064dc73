//! Tidy checks: the layering rules between crates (from `cargo metadata`) and a `//!` doc at
//! the top of every Rust file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context as _, Result};

/// Crates that a crate must never reach through normal dependencies, and why.
const FORBIDDEN: &[(&str, &[&str], &str)] = &[
    (
        "spice-hf-cache",
        &[
            "reqwest",
            "hyper",
            "axum",
            "tokio",
            "spice-hf-hub",
            "spice-hf-mirror",
        ],
        "the cache does no network I/O",
    ),
    (
        "spice-hf-hub",
        &["axum", "spice-hf-mirror", "burn"],
        "the hub client knows nothing of serving or Burn",
    ),
    (
        "spice-hf-mirror",
        &["reqwest", "spice-hf-hub"],
        "the mirror is a server, independent of our client",
    ),
    (
        "spice-hf",
        &["axum", "clap", "indicatif"],
        "the facade only re-exports layers",
    ),
    (
        "spice-hf-backend",
        &["reqwest", "hyper", "axum", "spice-hf-hub", "spice-hf-cache"],
        "the backend layer knows nothing of HTTP or the cache",
    ),
    (
        "spice-hf-models",
        &["reqwest", "hyper", "axum", "spice-hf-hub", "spice-hf-cache"],
        "models load from paths and know nothing of HTTP or the cache layout",
    ),
    (
        "spice-hf-runtime",
        &[
            "reqwest",
            "hyper",
            "axum",
            "spice-hf-hub",
            "spice-hf-server",
        ],
        "the runtime composes models and backend and knows nothing of HTTP",
    ),
    (
        "spice-hf-telemetry",
        &["reqwest", "hyper", "axum", "burn", "spice-hf-runtime"],
        "telemetry is used by every layer and depends on none",
    ),
];

/// Exceptions to [`BINARY_ONLY`]: (crate, dependency, why).
const BINARY_ONLY_EXCEPTIONS: &[(&str, &str, &str)] = &[(
    "spice-hf-telemetry",
    "tracing-subscriber",
    "it provides the task-history Layer (registry only, no fmt); binaries install it",
)];

/// Crates only binaries may depend on directly (a subscriber, terminal drawing, argument
/// parsing). Checked on direct dependencies: Burn itself pulls `tracing-subscriber` in.
const BINARY_ONLY: &[&str] = &["tracing-subscriber", "indicatif", "clap"];
/// Crates allowed to use them.
const BINARIES: &[&str] = &["spice-hf-cli", "xtask", "spice-hf-testkit", "spice-hf-e2e"];
/// Crates nobody may use.
const BANNED: &[&str] = &["backoff", "openssl", "openssl-sys"];

/// Returns every problem found (empty when tidy).
pub(crate) fn check(root: &Path) -> Result<Vec<String>> {
    let mut problems = deps(root)?;
    module_docs(root, &mut problems)?;
    Ok(problems)
}

fn deps(root: &Path) -> Result<Vec<String>> {
    let out = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--all-features",
            "--locked",
        ])
        .current_dir(root)
        .output()
        .context("running cargo metadata")?;
    anyhow::ensure!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let name_of: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["id"].as_str()?, p["name"].as_str()?)))
        .collect();
    // Normal (non-dev, non-build) edges.
    let mut edges: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().into_iter().flatten() {
        let id = node["id"].as_str().unwrap_or_default();
        let deps = node["deps"].as_array().into_iter().flatten().filter(|d| {
            d["dep_kinds"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k["kind"].is_null()))
        });
        edges.insert(id, deps.filter_map(|d| d["pkg"].as_str()).collect());
    }
    let members: Vec<&str> = meta["workspace_members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str())
        .collect();
    let mut problems = Vec::new();
    for member in members {
        let name = name_of.get(member).copied().unwrap_or_default();
        let mut seen = BTreeSet::new();
        let mut stack = vec![member];
        while let Some(id) = stack.pop() {
            for &d in edges.get(id).map(Vec::as_slice).unwrap_or_default() {
                if seen.insert(d) {
                    stack.push(d);
                }
            }
        }
        let reached: BTreeSet<&str> = seen
            .iter()
            .filter_map(|id| name_of.get(id).copied())
            .collect();
        for (krate, forbidden, why) in FORBIDDEN {
            if *krate == name {
                for f in forbidden.iter().filter(|f| reached.contains(*f)) {
                    problems.push(format!("{name} depends on {f}: {why}"));
                }
            }
        }
        let direct: BTreeSet<&str> = edges
            .get(member)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|id| name_of.get(id).copied())
            .collect();
        if !BINARIES.contains(&name) {
            let excepted = |f: &str| {
                BINARY_ONLY_EXCEPTIONS
                    .iter()
                    .any(|(c, d, _)| *c == name && *d == f)
            };
            for f in BINARY_ONLY
                .iter()
                .filter(|f| direct.contains(*f) && !excepted(f))
            {
                problems.push(format!("{name} depends on {f}: only binaries install subscribers or draw on the terminal"));
            }
        }
        for f in BANNED.iter().filter(|f| reached.contains(*f)) {
            problems.push(format!("{name} depends on banned crate {f}"));
        }
    }
    Ok(problems)
}

fn module_docs(root: &Path, problems: &mut Vec<String>) -> Result<()> {
    let mut files = Vec::new();
    for top in ["crates", "xtask", "tests"] {
        collect_rs(&root.join(top), &mut files);
    }
    for f in files {
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        if !first.starts_with("//!") {
            problems.push(format!(
                "{}: a module must start with a `//!` doc comment",
                f.strip_prefix(root).unwrap_or(&f).display()
            ));
        }
    }
    Ok(())
}

fn collect_rs(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == "target" || n == "fuzz") {
            continue;
        }
        if p.is_dir() {
            collect_rs(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

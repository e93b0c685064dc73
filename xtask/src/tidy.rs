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
        "spice-hf-kernels",
        &[
            "burn",
            "tokio",
            "reqwest",
            "spice-hf-models",
            "spice-hf-backend",
            "spice-hf-telemetry",
        ],
        "the kernels build and test without Burn or any other layer",
    ),
    (
        "spice-hf-listen",
        &[
            "burn",
            "reqwest",
            "spice-hf-runtime",
            "spice-hf-models",
            "spice-hf-server",
            "spice-hf-mirror",
        ],
        "the listener knows HTTP connections only, nothing of what is served",
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
    problems.extend(public_deps(root)?);
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

/// Foreign crates each library crate may name in its public API (signatures, public fields,
/// error variants, re-exports), and why. Anything else found there is a tidy problem: a foreign
/// type in a public signature makes that crate's semver ours.
const PUBLIC_DEPS: &[(&str, &[&str], &str)] = &[
    ("spice-hf-cache", &[], "plain Rust types only"),
    (
        "spice-hf-hub",
        &[],
        "plain Rust types only; reqwest stays inside",
    ),
    (
        "spice-hf-backend",
        &["burn"],
        "the backend layer hands out Burn's run-time `Device`",
    ),
    (
        "spice-hf-models",
        &["burn"],
        "models are built on the `Device` they are given",
    ),
    (
        "spice-hf-kernels",
        &["half"],
        "the KV cache's f16 values are `half::f16` slices",
    ),
    (
        "spice-hf-runtime",
        &["futures_util"],
        "`Source::Fetch` returns a `BoxFuture`; streams implement `Stream`",
    ),
    (
        "spice-hf-telemetry",
        &[
            "metrics_exporter_prometheus",
            "serde_json",
            "tracing",
            "tracing_subscriber",
        ],
        "the Prometheus recorder for binaries; rows carry JSON labels; the history is a Layer",
    ),
    (
        "spice-hf-server",
        &["axum", "tokio"],
        "the HTTP layer exposes its Router and serves a TcpListener",
    ),
    (
        "spice-hf-mirror",
        &["axum", "tokio"],
        "the mirror exposes Routers for the test kit's fault layer",
    ),
    (
        "spice-hf-listen",
        &["axum", "tokio"],
        "serves an axum Router on a tokio TcpListener",
    ),
    ("spice-hf", &[], "re-exports and the builder only"),
];

const OURS: &[&str] = &["std", "core", "alloc", "crate", "self", "super", "Self"];

/// The crate each name imported by `use` comes from (`Device` -> `burn`).
fn imports(text: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let mut stmt = String::new();
    for line in text.lines() {
        let t = line.trim();
        if stmt.is_empty() && !(t.starts_with("use ") || t.starts_with("pub use ")) {
            continue;
        }
        stmt.push_str(t);
        stmt.push(' ');
        if !t.ends_with(';') {
            continue;
        }
        let body = stmt
            .trim_start_matches("pub ")
            .trim_start_matches("use ")
            .trim_end()
            .trim_end_matches(';');
        let root = body
            .split("::")
            .next()
            .unwrap_or("")
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string();
        let names = body
            .rsplit_once('{')
            .map(|(_, r)| r.trim_end_matches('}').to_string())
            .unwrap_or_else(|| body.rsplit("::").next().unwrap_or("").to_string());
        for n in names.split(',') {
            let n = n.trim();
            let name = n
                .rsplit(" as ")
                .next()
                .unwrap_or(n)
                .rsplit("::")
                .next()
                .unwrap_or("")
                .trim();
            if !name.is_empty() && name != "_" && name != "self" {
                map.insert(name.to_string(), root.clone());
            }
        }
        stmt.clear();
    }
    map
}

/// Foreign crates named by the public lines of one file.
fn foreign_in_public(text: &str, internal: &BTreeSet<String>) -> BTreeSet<String> {
    let imported = imports(text);
    let mut found = BTreeSet::new();
    let mut in_pub_enum = 0i32;
    // `#[cfg(test)]` items are skipped (a `mod tests;` line or a whole block), not the rest of
    // the file: lib.rs files declare their test module near the top.
    let mut skip_test_item = false;
    let mut in_test_block = 0i32;
    // A public signature that goes on over several lines (one parameter per line).
    let mut in_signature = false;
    for line in text.lines() {
        let t = line.trim();
        if in_test_block > 0 {
            in_test_block += t.matches('{').count() as i32 - t.matches('}').count() as i32;
            continue;
        }
        if t.starts_with("#[cfg(test)]") {
            skip_test_item = true;
            continue;
        }
        if skip_test_item && !t.is_empty() && !t.starts_with("#[") {
            skip_test_item = false;
            let depth = t.matches('{').count() as i32 - t.matches('}').count() as i32;
            if depth > 0 {
                in_test_block = depth;
            }
            continue;
        }
        let public = t.starts_with("pub ") && !t.starts_with("pub(");
        if t.starts_with("pub enum ") {
            in_pub_enum = 1;
        } else if in_pub_enum > 0 {
            in_pub_enum += t.matches('{').count() as i32 - t.matches('}').count() as i32;
        }
        let continues = in_signature;
        if continues && (t.contains('{') || t.ends_with(';')) {
            in_signature = false;
        }
        if public
            && (t.contains(" fn ") || t.starts_with("pub fn ") || t.starts_with("pub type "))
            && !(t.contains('{') || t.ends_with(';'))
        {
            in_signature = true;
        }
        if !(public || in_pub_enum > 0 || continues)
            || t.starts_with("pub mod ")
            || t.starts_with("//")
        {
            continue;
        }
        let code = t.split("//").next().unwrap_or("");
        for word in code.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')) {
            // Crate roots are snake_case; `String::new` or `Self::X` are not crates.
            let root = match word.split_once("::") {
                Some((r, _)) if r.starts_with(|c: char| c.is_ascii_lowercase()) => {
                    Some(r.to_string())
                }
                Some(_) => None,
                None => imported.get(word).cloned(),
            };
            if let Some(r) = root
                && !r.is_empty()
                && !OURS.contains(&r.as_str())
                && !internal.contains(&r)
            {
                found.insert(r);
            }
        }
    }
    found
}

/// Checks every library crate's public lines against [`PUBLIC_DEPS`].
pub(crate) fn public_deps(root: &Path) -> Result<Vec<String>> {
    let internal: BTreeSet<String> = std::fs::read_dir(root.join("crates"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().replace('-', "_"))
        .collect();
    let mut problems = Vec::new();
    for (krate, allowed, _why) in PUBLIC_DEPS {
        let mut files = Vec::new();
        collect_rs(&root.join("crates").join(krate).join("src"), &mut files);
        // The crate's own modules are not foreign.
        let mut internal = internal.clone();
        internal.extend(
            files
                .iter()
                .filter_map(|f| f.file_stem())
                .map(|s| s.to_string_lossy().into_owned()),
        );
        for f in files {
            if f.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&f)?;
            for dep in foreign_in_public(&text, &internal) {
                if !allowed.contains(&dep.as_str()) {
                    problems.push(format!(
                        "{}: `{dep}` appears in a public item of {krate}; keep foreign types out of public signatures or add it to PUBLIC_DEPS with a reason",
                        f.strip_prefix(root).unwrap_or(&f).display()
                    ));
                }
            }
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::foreign_in_public;

    #[test]
    fn foreign_types_in_public_items_are_found() {
        let internal = BTreeSet::from(["spice_hf_cache".to_string()]);
        let found =
            |src: &str| -> Vec<String> { foreign_in_public(src, &internal).into_iter().collect() };
        assert_eq!(
            found("use reqwest::Client;\npub fn c() -> Client { todo!() }"),
            ["reqwest"]
        );
        assert_eq!(
            found("pub enum E {\n    A(sha2::Sha256),\n}\nfn private(x: hyper::Body) {}"),
            ["sha2"]
        );
        assert_eq!(
            found(
                "use std::path::PathBuf;\npub fn p(s: String) -> PathBuf { String::new().into() }"
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            found(
                "use spice_hf_cache::Cache;\npub fn c(c: &Cache) {}\npub(crate) fn d(x: burn::X) {}"
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            found(
                "use burn::tensor::{Device as Dev, Tensor};\npub struct S {\n    pub device: Dev,\n}"
            ),
            ["burn"]
        );
        // A test module declared near the top does not hide what follows it.
        assert_eq!(
            found("#[cfg(test)]\nmod tests;\n\npub use reqwest::Client;"),
            ["reqwest"]
        );
        assert_eq!(
            found(
                "#[cfg(test)]\nmod tests {\n    pub fn t(x: hyper::Body) {}\n}\npub fn f(x: sha2::Sha256) {}"
            ),
            ["sha2"]
        );
        // Parameters on their own lines are part of the signature.
        assert_eq!(
            found(
                "pub async fn serve(\n    listener: tokio::net::TcpListener,\n) -> u8 {\n    let x: hyper::Body;\n}"
            ),
            ["tokio"]
        );
    }
}

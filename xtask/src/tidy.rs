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
        "spice-hf-grammar",
        &[
            "burn",
            "tokio",
            "reqwest",
            "tokenizers",
            "spice-hf-models",
            "spice-hf-kernels",
            "spice-hf-runtime",
            "spice-hf-telemetry",
        ],
        "constrained decoding builds and tests without Burn, a tokenizer or any other layer",
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
    let doc = std::fs::read_to_string(root.join(ARCHITECTURE)).context(ARCHITECTURE)?;
    problems.extend(checked_marks(&doc, &test_names(root)?));
    Ok(problems)
}

/// The map whose ✓ marks this file checks.
const ARCHITECTURE: &str = "docs/ARCHITECTURE.md";

/// The checks a ✓ bullet may name as `[checked by tidy: CHECK ...]`.
const TIDY_CHECKS: &[&str] = &[
    "deps",
    "binary-only",
    "banned",
    "module-docs",
    "public-deps",
];

/// Every bullet of the architecture map marked ✓ must say what checks it, at its end:
/// `[checked by tidy: deps CRATE...]` (each lower-case name in backticks, other than the
/// crates themselves, is in [`FORBIDDEN`] for each of them), `[checked by tidy: binary-only]`
/// (the bullet names every [`BINARY_ONLY`] crate and every exception),
/// `[checked by tidy: banned]` (its names are [`BANNED`]), `module-docs`, `public-deps`, or
/// `[checked by test: NAME]` (a `#[test]` function of that name exists in the tree).
fn checked_marks(doc: &str, tests: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    for bullet in bullets(doc).iter().filter(|b| b.starts_with("- ✓")) {
        let start: String = bullet.chars().take(60).collect();
        let mut say = |what: String| problems.push(format!("{ARCHITECTURE}: \"{start}…\": {what}"));
        let Some((kind, args)) = bullet
            .rsplit_once("[checked by ")
            .and_then(|(_, tag)| tag.split_once(']'))
            .and_then(|(tag, _)| tag.split_once(": "))
        else {
            say(
                "marked ✓ but names no check (`[checked by tidy: …]` or `[checked by test: …]`)"
                    .into(),
            );
            continue;
        };
        let args: Vec<&str> = args.split_whitespace().collect();
        let named: Vec<&str> = backticked(bullet)
            .into_iter()
            .filter(|n| {
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c == '-' || c == '_')
            })
            .collect();
        match (kind, args.split_first()) {
            ("test", Some((name, []))) => {
                if !tests.contains(*name) {
                    say(format!("no #[test] fn `{name}` in the tree"));
                }
            }
            ("tidy", Some((&"deps", crates))) if !crates.is_empty() => {
                for krate in crates {
                    let Some((_, forbidden, _)) = FORBIDDEN.iter().find(|(c, ..)| c == krate)
                    else {
                        say(format!("tidy has no dependency rule for `{krate}`"));
                        continue;
                    };
                    for dep in named.iter().filter(|n| !crates.contains(n)) {
                        if !forbidden.contains(dep) {
                            say(format!("tidy does not forbid `{dep}` to `{krate}`"));
                        }
                    }
                }
            }
            ("tidy", Some((&"binary-only", []))) => {
                let exceptions = BINARY_ONLY_EXCEPTIONS.iter().map(|(c, ..)| c);
                for c in BINARY_ONLY.iter().chain(exceptions) {
                    if !named.contains(c) {
                        say(format!(
                            "tidy's binary-only rule covers `{c}`; the bullet should name it"
                        ));
                    }
                }
            }
            ("tidy", Some((&"banned", []))) => {
                for n in named.iter().filter(|n| !BANNED.contains(n)) {
                    say(format!("tidy does not ban `{n}`"));
                }
            }
            ("tidy", Some((check, []))) if TIDY_CHECKS.contains(check) => {}
            _ => say(format!("unknown check `{kind}: {}`", args.join(" "))),
        }
    }
    problems
}

/// The list items of a Markdown text, each with its continuation lines joined.
fn bullets(doc: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut open = false;
    for line in doc.lines() {
        if line.starts_with("- ") {
            out.push(line.to_string());
            open = true;
        } else if open && line.starts_with("  ") && !line.trim().is_empty() {
            let last = out.last_mut().expect("an open bullet");
            last.push(' ');
            last.push_str(line.trim());
        } else {
            open = false;
        }
    }
    out
}

/// The words in backticks.
fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// The names of the `#[test]` / `#[tokio::test]` functions under `crates/` and `xtask/`.
fn test_names(root: &Path) -> Result<BTreeSet<String>> {
    let mut files = Vec::new();
    for top in ["crates", "xtask"] {
        collect_rs(&root.join(top), &mut files);
    }
    let mut names = BTreeSet::new();
    for f in files {
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        let mut attribute = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with("#[test]") || line.starts_with("#[tokio::test") {
                attribute = true;
            } else if attribute && let Some(rest) = line.split("fn ").nth(1) {
                if let Some(name) = rest.split('(').next() {
                    names.insert(name.trim().to_string());
                }
                attribute = false;
            }
        }
    }
    Ok(names)
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
        &["burn", "serde_json"],
        "models are built on the `Device` they are given; templates take tools as JSON",
    ),
    (
        "spice-hf-grammar",
        &["serde_json"],
        "JSON Schemas and OpenAI function objects are JSON values; llguidance stays inside",
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
        &["axum", "tokio", "futures_util"],
        "the mirror exposes Routers for the test kit's fault layer; `Upstream` returns BoxFuture (as the runtime's Source does)",
    ),
    (
        "spice-hf-listen",
        &["axum", "tokio"],
        "serves an axum Router on a tokio TcpListener",
    ),
    (
        "spice-hf",
        &["serde_json"],
        "re-exports and the builder; `chat_json` takes a JSON Schema",
    ),
];

const OURS: &[&str] = &["std", "core", "alloc", "crate", "self", "super", "Self"];

/// Whether `attrs` hold `#[cfg(test)]`.
fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

fn is_pub(vis: &syn::Visibility) -> bool {
    matches!(vis, syn::Visibility::Public(_))
}

/// The crate each name imported by `use` comes from (`Device` -> `burn`), and the roots of
/// `pub use` re-exports.
fn imports(items: &[syn::Item], map: &mut BTreeMap<String, String>, reexported: &mut Vec<String>) {
    fn walk(
        tree: &syn::UseTree,
        root: &str,
        public: bool,
        map: &mut BTreeMap<String, String>,
        re: &mut Vec<String>,
    ) {
        match tree {
            syn::UseTree::Path(p) => {
                let root = if root.is_empty() {
                    p.ident.to_string()
                } else {
                    root.to_string()
                };
                walk(&p.tree, &root, public, map, re);
            }
            syn::UseTree::Name(syn::UseName { ident: name, .. })
            | syn::UseTree::Rename(syn::UseRename { rename: name, .. }) => {
                // `use burn::Device` or `use burn::Device as Dev`; a bare `use burn;` is its
                // own root.
                let root = match (root.is_empty(), tree) {
                    (true, syn::UseTree::Rename(r)) => r.ident.to_string(),
                    (true, _) => name.to_string(),
                    (false, _) => root.to_string(),
                };
                map.insert(name.to_string(), root.clone());
                if public {
                    re.push(root);
                }
            }
            syn::UseTree::Glob(_) => {
                if public {
                    re.push(root.to_string());
                }
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    walk(t, root, public, map, re);
                }
            }
        }
    }
    for item in items {
        match item {
            syn::Item::Use(u) if !is_test(&u.attrs) => {
                walk(&u.tree, "", is_pub(&u.vis), map, reexported);
            }
            syn::Item::Mod(m) if !is_test(&m.attrs) => {
                if let Some((_, inner)) = &m.content {
                    imports(inner, map, reexported);
                }
            }
            _ => {}
        }
    }
}

/// Collects the paths named in the public surface: types, bounds and trait paths.
#[derive(Default)]
struct Surface {
    /// The first segment of each path, and whether more follow (`burn::X` vs `Device`).
    paths: Vec<(String, bool)>,
}

impl<'a> syn::visit::Visit<'a> for Surface {
    fn visit_path(&mut self, p: &'a syn::Path) {
        if let Some(first) = p.segments.first() {
            self.paths.push((
                first.ident.to_string(),
                p.segments.len() > 1 || p.leading_colon.is_some(),
            ));
        }
        syn::visit::visit_path(self, p);
    }
    // Function bodies and constant values are not the API.
    fn visit_block(&mut self, _: &'a syn::Block) {}
    fn visit_expr(&mut self, _: &'a syn::Expr) {}
}

/// Types declared in `items` without `pub`: their impls are not part of the API.
fn private_types(items: &[syn::Item]) -> BTreeSet<String> {
    items
        .iter()
        .filter_map(|item| match item {
            syn::Item::Struct(x) if !is_pub(&x.vis) => Some(x.ident.to_string()),
            syn::Item::Enum(x) if !is_pub(&x.vis) => Some(x.ident.to_string()),
            syn::Item::Union(x) if !is_pub(&x.vis) => Some(x.ident.to_string()),
            syn::Item::Type(x) if !is_pub(&x.vis) => Some(x.ident.to_string()),
            _ => None,
        })
        .collect()
}

fn public_surface(items: &[syn::Item], s: &mut Surface) {
    use syn::visit::Visit as _;
    let private = private_types(items);
    let of_private = |ty: &syn::Type| match ty {
        syn::Type::Path(p) => p
            .path
            .segments
            .last()
            .is_some_and(|seg| private.contains(&seg.ident.to_string())),
        _ => false,
    };
    for item in items {
        match item {
            syn::Item::Fn(f) if is_pub(&f.vis) && !is_test(&f.attrs) => s.visit_signature(&f.sig),
            syn::Item::Struct(st) if is_pub(&st.vis) && !is_test(&st.attrs) => {
                s.visit_generics(&st.generics);
                for field in &st.fields {
                    if is_pub(&field.vis) {
                        s.visit_type(&field.ty);
                    }
                }
            }
            syn::Item::Enum(e) if is_pub(&e.vis) && !is_test(&e.attrs) => {
                s.visit_generics(&e.generics);
                for v in &e.variants {
                    s.visit_fields(&v.fields);
                }
            }
            syn::Item::Type(t) if is_pub(&t.vis) && !is_test(&t.attrs) => {
                s.visit_generics(&t.generics);
                s.visit_type(&t.ty);
            }
            syn::Item::Const(c) if is_pub(&c.vis) && !is_test(&c.attrs) => s.visit_type(&c.ty),
            syn::Item::Static(c) if is_pub(&c.vis) && !is_test(&c.attrs) => s.visit_type(&c.ty),
            syn::Item::Trait(t) if is_pub(&t.vis) && !is_test(&t.attrs) => {
                s.visit_generics(&t.generics);
                for b in &t.supertraits {
                    s.visit_type_param_bound(b);
                }
                for ti in &t.items {
                    match ti {
                        syn::TraitItem::Fn(f) => s.visit_signature(&f.sig),
                        syn::TraitItem::Type(ty) => {
                            for b in &ty.bounds {
                                s.visit_type_param_bound(b);
                            }
                        }
                        syn::TraitItem::Const(c) => s.visit_type(&c.ty),
                        _ => {}
                    }
                }
            }
            syn::Item::Impl(i) if !is_test(&i.attrs) && !of_private(&i.self_ty) => {
                match &i.trait_ {
                    // `impl From<reqwest::Error> for E`: the trait and its arguments are API.
                    Some((_, path, _)) => {
                        s.visit_path(path);
                        s.visit_type(&i.self_ty);
                    }
                    None => {
                        for ii in &i.items {
                            if let syn::ImplItem::Fn(f) = ii
                                && is_pub(&f.vis)
                            {
                                s.visit_signature(&f.sig);
                            }
                        }
                    }
                }
            }
            syn::Item::Mod(m) if !is_test(&m.attrs) => {
                if let Some((_, inner)) = &m.content {
                    public_surface(inner, s);
                }
            }
            _ => {}
        }
    }
}

/// Foreign crates named by the public items of one file (parsed with `syn`: signatures over
/// several lines, trait impls and re-exports included; `#[cfg(test)]` items skipped).
fn foreign_in_public(text: &str, internal: &BTreeSet<String>) -> Result<BTreeSet<String>> {
    let file = syn::parse_file(text).map_err(|e| anyhow::anyhow!("cannot parse: {e}"))?;
    let mut imported = BTreeMap::new();
    let mut reexported = Vec::new();
    imports(&file.items, &mut imported, &mut reexported);
    let mut surface = Surface::default();
    public_surface(&file.items, &mut surface);
    let mut roots: Vec<String> = reexported;
    for (name, qualified) in surface.paths {
        if qualified {
            // Crate roots are snake_case (`String::new` or `Self::X` are not crates); an
            // imported module (`use std::fmt;` then `fmt::Display`) is its crate's.
            if let Some(root) = imported.get(&name) {
                roots.push(root.clone());
            } else if name.starts_with(|c: char| c.is_ascii_lowercase()) {
                roots.push(name);
            }
        } else if let Some(root) = imported.get(&name) {
            roots.push(root.clone());
        }
    }
    Ok(roots
        .into_iter()
        .filter(|r| !r.is_empty() && !OURS.contains(&r.as_str()) && !internal.contains(r))
        .collect())
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
            let found = foreign_in_public(&text, &internal)
                .with_context(|| format!("reading the public items of {}", f.display()))?;
            for dep in found {
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

    use super::{checked_marks, foreign_in_public};

    #[test]
    fn a_check_mark_must_name_a_check_that_covers_it() {
        let tests = BTreeSet::from(["a_real_test".to_string()]);
        let ok = "- ✓ The cache does no network I/O: `spice-hf-cache` reaches neither `reqwest`\n  nor `tokio`. [checked by tidy: deps spice-hf-cache]\n- ✓ Probes. [checked by test: a_real_test]\n- Not marked.\n";
        assert_eq!(checked_marks(ok, &tests), Vec::<String>::new());
        let bad = [
            // No check named.
            "- ✓ Something holds.\n",
            // A dependency tidy does not forbid.
            "- ✓ No `serde` in the cache. [checked by tidy: deps spice-hf-cache]\n",
            // A crate without a rule.
            "- ✓ No `reqwest`. [checked by tidy: deps spice-hf-nothing]\n",
            // A test that does not exist.
            "- ✓ Probes.\n  [checked by test: a_gone_test]\n",
            // A crate tidy does not ban.
            "- ✓ Nothing uses `serde`. [checked by tidy: banned]\n",
            // An unknown check.
            "- ✓ Fine. [checked by tidy: vibes]\n",
            // The binary-only rule not fully stated.
            "- ✓ Only binaries use `clap`. [checked by tidy: binary-only]\n",
        ];
        for doc in bad {
            assert!(!checked_marks(doc, &tests).is_empty(), "{doc}");
        }
    }

    #[test]
    fn foreign_types_in_public_items_are_found() {
        let internal = BTreeSet::from(["spice_hf_cache".to_string()]);
        let found = |src: &str| -> Vec<String> {
            foreign_in_public(src, &internal)
                .unwrap()
                .into_iter()
                .collect()
        };
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
        // A trait impl names its trait's arguments; a multi-line generic bound counts too.
        assert_eq!(
            found(
                "pub struct E;\nimpl From<reqwest::Error> for E {\n    fn from(_: reqwest::Error) -> Self { E }\n}"
            ),
            ["reqwest"]
        );
        assert_eq!(
            found("pub fn run<S>(\n    s: S,\n) where\n    S: tower::Service<u8>,\n{}"),
            ["tower"]
        );
        // A trait impl for a private type is not the API either.
        assert_eq!(
            found("struct M;\nimpl tower::Service<hyper::Request> for M {}"),
            Vec::<String>::new()
        );
        // Private items, bodies and test modules are not the API.
        assert_eq!(
            found(
                "fn f(x: hyper::Body) {}\npub fn g() -> u8 { let b: hyper::Body = todo!(); 1 }\nstruct P { pub x: tower::X }"
            ),
            Vec::<String>::new()
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

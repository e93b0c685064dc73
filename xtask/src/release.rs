//! `cargo xtask release [--dry-run] VERSION`: a clean tree and a CHANGELOG entry, one workspace
//! version bumped (internal dependencies pinned with `=`), the full CI set, then `cargo package`
//! (and, without `--dry-run`, `cargo publish`) of every publishable crate in dependency order.
//!
//! The dry run restores the manifests afterwards and packages without the verification build
//! (`--no-verify`), which would rebuild the whole graph a second time; the real release
//! verifies.

use std::path::Path;

use anyhow::{Context as _, Result, bail, ensure};
use xshell::{Shell, cmd};

/// Options of a release.
pub(crate) struct Release {
    pub(crate) version: String,
    pub(crate) dry_run: bool,
    /// Skip the CI set and the clean-tree check (when `cargo xtask ci` itself runs the dry run,
    /// which checks the packaging, on whatever tree it tests).
    pub(crate) skip_ci: bool,
}

pub(crate) fn parse(args: &[String]) -> Result<Release> {
    let mut dry_run = false;
    let mut skip_ci = false;
    let mut version = None;
    for a in args {
        match a.as_str() {
            "--dry-run" => dry_run = true,
            "--skip-ci" => skip_ci = true,
            v if !v.starts_with('-') && version.is_none() => version = Some(v.to_string()),
            other => bail!(
                "unexpected argument {other:?}; usage: cargo xtask release [--dry-run] VERSION"
            ),
        }
    }
    let version = version.context("usage: cargo xtask release [--dry-run] VERSION")?;
    let parts: Vec<&str> = version.split('.').collect();
    ensure!(
        parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())),
        "version {version:?} is not MAJOR.MINOR.PATCH"
    );
    Ok(Release {
        version,
        dry_run,
        skip_ci,
    })
}

/// Publishable workspace crates, dependencies first.
fn publishable_in_order(sh: &Shell) -> Result<Vec<String>> {
    let meta: serde_json::Value = serde_json::from_str(
        &cmd!(sh, "cargo metadata --format-version 1 --no-deps --locked").read()?,
    )?;
    let packages = meta["packages"].as_array().context("no packages")?;
    let publishable: Vec<&serde_json::Value> = packages
        .iter()
        .filter(|p| {
            !(p["publish"].is_array() && p["publish"].as_array().is_some_and(|a| a.is_empty()))
        })
        .collect();
    let names: Vec<String> = publishable
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect();
    let mut order: Vec<String> = Vec::new();
    while order.len() < names.len() {
        let before = order.len();
        for p in &publishable {
            let name = p["name"].as_str().unwrap_or_default().to_string();
            if order.contains(&name) {
                continue;
            }
            let ready = p["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|d| d["kind"].is_null())
                .filter_map(|d| d["name"].as_str())
                .filter(|d| names.iter().any(|n| n == d))
                .all(|d| order.iter().any(|o| o == d));
            if ready {
                order.push(name);
            }
        }
        ensure!(order.len() > before, "a dependency cycle among {names:?}");
    }
    Ok(order)
}

/// The manifests with the version set to `new` (the workspace version and every internal
/// `=` pin).
fn bumped(manifest: &str, old: &str, new: &str) -> String {
    manifest
        .lines()
        .map(|l| {
            if l.starts_with("version = ") {
                format!("version = \"{new}\"")
            } else if l.starts_with("spice-hf") && l.contains(&format!("version = \"={old}\"")) {
                l.replace(
                    &format!("version = \"={old}\""),
                    &format!("version = \"={new}\""),
                )
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn current_version(manifest: &str) -> Result<String> {
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|l| l.strip_suffix('"'))
        .map(str::to_string)
        .context("no `version = ` in [workspace.package]")
}

pub(crate) fn run(sh: &Shell, root: &Path, r: &Release) -> Result<()> {
    if !r.skip_ci {
        let status = cmd!(sh, "git status --porcelain").read()?;
        ensure!(
            status.trim().is_empty(),
            "the tree is not clean; commit or stash first:\n{status}"
        );
    }
    let changelog =
        std::fs::read_to_string(root.join("CHANGELOG.md")).context("CHANGELOG.md is missing")?;
    ensure!(
        changelog
            .lines()
            .any(|l| l.trim_start_matches('#').trim().starts_with(&r.version)
                && l.starts_with("## ")),
        "CHANGELOG.md has no `## {}` entry; write one first",
        r.version
    );
    let manifest_path = root.join("Cargo.toml");
    let original = std::fs::read_to_string(&manifest_path)?;
    let old = current_version(&original)?;
    let new_manifest = bumped(&original, &old, &r.version);
    std::fs::write(&manifest_path, &new_manifest)?;
    let restore = || -> Result<()> {
        std::fs::write(&manifest_path, &original)?;
        cmd!(sh, "cargo metadata --format-version 1 --no-deps")
            .quiet()
            .ignore_stdout()
            .run()?;
        Ok(())
    };
    let result = (|| -> Result<()> {
        // Refresh the lock file's own versions.
        cmd!(sh, "cargo metadata --format-version 1 --no-deps")
            .quiet()
            .ignore_stdout()
            .run()?;
        println!("version {old} -> {}", r.version);
        if !r.skip_ci {
            crate::ci(sh)?;
        }
        let crates = publishable_in_order(sh)?;
        println!("publishable, in order: {}", crates.join(", "));
        let packages: Vec<String> = crates
            .iter()
            .flat_map(|c| ["-p".to_string(), c.clone()])
            .collect();
        if r.dry_run {
            cmd!(sh, "cargo package --no-verify --allow-dirty {packages...}").run()?;
            println!("release dry run of {}: every crate packages", r.version);
        } else {
            let again = packages.clone();
            cmd!(sh, "cargo package {packages...}").run()?;
            cmd!(sh, "cargo publish {again...}").run()?;
            println!("published {}", r.version);
        }
        Ok(())
    })();
    if r.dry_run || result.is_err() {
        restore()?;
    }
    result
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bump_changes_the_version_and_the_internal_pins_only() {
        let m = "[workspace.package]\nversion = \"0.1.0\"\n\n[workspace.dependencies]\nspice-hf-hub = { path = \"crates/spice-hf-hub\", version = \"=0.1.0\" }\nfoo = { version = \"=0.1.0\" }\nbar = \"0.1.0\"\n";
        let b = super::bumped(m, "0.1.0", "0.2.0");
        assert!(b.contains("version = \"0.2.0\""));
        assert!(
            b.contains("spice-hf-hub = { path = \"crates/spice-hf-hub\", version = \"=0.2.0\" }")
        );
        assert!(b.contains("foo = { version = \"=0.1.0\" }"));
        assert!(b.contains("bar = \"0.1.0\""));
        assert_eq!(super::current_version(m).unwrap(), "0.1.0");
        assert!(super::parse(&["1.2".into()]).is_err());
        assert!(
            super::parse(&["--dry-run".into(), "1.2.3".into()])
                .unwrap()
                .dry_run
        );
    }
}

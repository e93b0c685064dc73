//! `cargo xtask release [--dry-run] VERSION`: a clean tree and a CHANGELOG entry, one workspace
//! version bumped (internal dependencies pinned with `=`), the full CI set, then `cargo package`
//! (and, without `--dry-run`, `cargo publish`) of every publishable crate in dependency order.
//!
//! The dry run restores the manifests afterwards and packages without the verification build
//! (`--no-verify`), which would rebuild the whole graph a second time; the real release
//! verifies. `cargo xtask ci` rehearses a real bump on a copy ([`rehearse`]).

use std::path::Path;

use anyhow::{Context as _, Result, bail, ensure};
use xshell::{Shell, cmd};

/// Options of a release.
pub(crate) struct Release {
    pub(crate) version: String,
    pub(crate) dry_run: bool,
    /// Skip the CI set (when `cargo xtask ci` itself rehearses the release; see [`rehearse`]).
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
    let status = cmd!(sh, "git status --porcelain").read()?;
    ensure!(
        status.trim().is_empty(),
        "the tree is not clean; commit or stash first:\n{status}"
    );
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

/// The next patch version of `version`.
fn next_patch(version: &str) -> Result<String> {
    let parts: Vec<u64> = version
        .split('.')
        .map(|p| p.parse().context("a numeric version part"))
        .collect::<Result<_>>()?;
    ensure!(
        parts.len() == 3,
        "version {version:?} is not MAJOR.MINOR.PATCH"
    );
    Ok(format!("{}.{}.{}", parts[0], parts[1], parts[2] + 1))
}

/// What `cargo xtask ci` runs: the release dry run for real, on a committed copy of the tracked
/// files (so the clean-tree check runs) with the next patch version and a CHANGELOG entry for
/// it, then a check of what `cargo package` wrote: every crate at the new version and every
/// internal dependency pinned to it with `=`, the old version nowhere.
pub(crate) fn rehearse(sh: &Shell, root: &Path) -> Result<()> {
    let old = current_version(&std::fs::read_to_string(root.join("Cargo.toml"))?)?;
    let new = next_patch(&old)?;
    let copy = std::env::temp_dir().join(format!("spice-hf-release-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&copy);
    let tracked = {
        let _here = sh.push_dir(root);
        cmd!(sh, "git ls-files -z").read()?
    };
    for rel in tracked.split('\0').filter(|f| !f.is_empty()) {
        let to = copy.join(rel);
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::copy(root.join(rel), &to).with_context(|| format!("copying {rel}"))?;
    }
    let changelog = copy.join("CHANGELOG.md");
    let mut text = std::fs::read_to_string(&changelog)?;
    text.push_str(&format!("\n## {new} (release rehearsal)\n"));
    std::fs::write(&changelog, text)?;
    let result = (|| -> Result<()> {
        let _there = sh.push_dir(&copy);
        cmd!(sh, "git init -q").run()?;
        cmd!(sh, "git add -A").run()?;
        cmd!(
            sh,
            "git -c user.name=ci -c user.email=ci@localhost commit -qm rehearsal"
        )
        .run()?;
        run(
            sh,
            &copy,
            &Release {
                version: new.clone(),
                dry_run: true,
                skip_ci: true,
            },
        )?;
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| copy.join("target"));
        for name in publishable_in_order(sh)? {
            let krate = target.join("package").join(format!("{name}-{new}.crate"));
            let inner = format!("{name}-{new}/Cargo.toml");
            let manifest = cmd!(sh, "tar -xzOf {krate} {inner}")
                .read()
                .with_context(|| format!("reading the manifest packaged in {}", krate.display()))?;
            check_packaged(&name, &manifest, &old, &new)?;
        }
        println!("release rehearsal: {old} -> {new}, every packaged manifest pinned to {new}");
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&copy);
    result
}

/// A packaged `Cargo.toml` has the new version and pins every internal dependency to it.
fn check_packaged(name: &str, manifest: &str, old: &str, new: &str) -> Result<()> {
    let lines: Vec<&str> = manifest.lines().collect();
    ensure!(
        lines.contains(&format!("version = \"{new}\"").as_str()),
        "{name}: the packaged manifest is not at version {new}"
    );
    for (i, l) in lines.iter().enumerate() {
        if l.starts_with("[dependencies.spice-hf") || l.starts_with("[dev-dependencies.spice-hf") {
            let version = lines[i + 1..]
                .iter()
                .take_while(|l| !l.starts_with('['))
                .find_map(|l| l.strip_prefix("version = "));
            ensure!(
                version == Some(&format!("\"={new}\"")),
                "{name}: {l} is pinned to {version:?}, not ={new}"
            );
        }
    }
    ensure!(
        !manifest.contains(&format!("\"={old}\"")),
        "{name}: the old version {old} is still pinned somewhere"
    );
    Ok(())
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

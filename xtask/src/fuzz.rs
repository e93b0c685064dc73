//! `cargo xtask fuzz [SECONDS]`: runs the cargo-fuzz target `gguf` (fuzz/fuzz_targets/gguf.rs)
//! for a bounded time (default 60 s). Uses cargo-fuzz's `--sanitizer none` mode, which works on
//! the stable toolchain (no AddressSanitizer; panics, aborts, timeouts and out-of-memory are
//! still caught). Installs cargo-fuzz when it is missing. Crashes are left in
//! `fuzz/artifacts/gguf/`.

use anyhow::{Context as _, Result};
use xshell::{Shell, cmd};

pub(crate) fn run(sh: &Shell, args: &[String]) -> Result<()> {
    let seconds: u64 = match args.first() {
        Some(s) => s.parse().context("usage: cargo xtask fuzz [SECONDS]")?,
        None => 60,
    };
    if cmd!(sh, "cargo fuzz --version")
        .quiet()
        .ignore_stderr()
        .read()
        .is_err()
    {
        cmd!(sh, "cargo install --locked cargo-fuzz").run()?;
    }
    let _dir = sh.push_dir(crate::workspace_root().join("fuzz"));
    let corpus = crate::workspace_root().join("fuzz/corpus/gguf");
    std::fs::create_dir_all(&corpus)?;
    let total = format!("-max_total_time={seconds}");
    cmd!(
        sh,
        "cargo fuzz run --sanitizer none gguf {corpus} -- {total} -rss_limit_mb=2048 -max_len=65536"
    )
    .run()?;
    println!("fuzz: gguf ran {seconds} s without a crash");
    Ok(())
}

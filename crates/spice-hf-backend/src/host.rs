//! The host's memory as the CPU device sees it: what a new allocation can get now, and what
//! this process has held at its peak (Linux `/proc`; `None` elsewhere or when unreadable).

/// Memory the host can give a new allocation now (`MemAvailable` on Linux).
pub fn available_memory() -> Option<u64> {
    proc_kib("/proc/meminfo", "MemAvailable:")
}

/// The process's peak resident memory (`VmHWM` on Linux).
pub fn peak_rss() -> Option<u64> {
    proc_kib("/proc/self/status", "VmHWM:")
}

/// The value of the `key` line of a `/proc` file given in kB, in bytes.
fn proc_kib(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn the_probes_read_plausible_values_on_linux() {
        // This test process has touched memory, and the host has some available, but not more
        // than a terabyte on the machines that run the tests.
        let rss = super::peak_rss().expect("VmHWM");
        assert!((1 << 20..1 << 40).contains(&rss), "{rss}");
        let available = super::available_memory().expect("MemAvailable");
        assert!((1 << 20..1 << 50).contains(&available), "{available}");
    }
}

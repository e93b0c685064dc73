//! Helpers for tests and harnesses that drive `spice-hf serve`: reading an SSE body, summing a
//! Prometheus metric, and sending SIGTERM.

/// The `data:` payloads of an SSE body, in order (`[DONE]` included).
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| {
            event
                .lines()
                .find_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
                .map(str::to_string)
        })
        .collect()
}

/// The sum of the samples of a Prometheus text exposition whose line starts with `prefix`
/// (a metric name plus `{`, or a name with some of its labels).
pub fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Sends SIGTERM to process `pid` through the shell's `kill` builtin (no procps needed).
pub fn terminate(pid: u32) -> std::io::Result<()> {
    #[allow(clippy::disallowed_methods)] // Reason: signalling a process under test.
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("kill -TERM {pid}")])
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "kill -TERM {pid} failed: {status}"
        )))
    }
}

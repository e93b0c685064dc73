//! Progress bars (indicatif): one per file and one overall, hidden when stdout is not a
//! terminal.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use spice_hf_hub::Progress;

/// Bars for one pull.
pub(crate) struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    files: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    pub(crate) fn new() -> Self {
        let target = if std::io::stdout().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        let total = multi.add(ProgressBar::new(0));
        total.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        total.set_prefix("total");
        Self {
            multi,
            total,
            files: Mutex::default(),
        }
    }
}

/// A pull's bars leave the terminal when the pull ends, whichever way it ends.
impl Drop for Bars {
    fn drop(&mut self) {
        self.total.finish_and_clear();
        let _ = self.multi.clear();
    }
}

impl Progress for Bars {
    fn file_started(&self, path: &str, total: u64, already: u64) {
        let bar = self.multi.add(ProgressBar::new(total));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(path.to_string());
        bar.set_prefix("file");
        bar.set_position(already);
        self.total.inc_length(total);
        self.total.inc(already);
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path.to_string(), bar);
    }

    fn bytes(&self, path: &str, n: u64) {
        if let Some(bar) = self
            .files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
        {
            bar.inc(n);
        }
        self.total.inc(n);
    }

    fn file_done(&self, path: &str) {
        if let Some(bar) = self
            .files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(path)
        {
            bar.finish_and_clear();
        }
    }

    fn file_failed(&self, path: &str) {
        if let Some(bar) = self
            .files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(path)
        {
            bar.abandon_with_message(format!("{path} failed"));
        }
    }
}

/// A spinner on stderr while something long happens (hidden off a terminal).
pub(crate) fn spinner(message: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_message(message.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

//! The download progress bar (stderr; drawn only when it is a terminal).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A byte progress bar for `what`, of `total` bytes when known; hidden unless `enabled`.
pub(crate) fn bar(enabled: bool, total: Option<u64>, what: &str) -> ProgressBar {
    let bar = match total {
        Some(t) => ProgressBar::new(t),
        None => ProgressBar::new_spinner(),
    };
    if !enabled {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, ETA {eta})",
    ) {
        bar.set_style(style);
    }
    bar.set_message(what.to_string());
    bar
}

/// hf-hub's progress callbacks drawn with the same bar.
pub(crate) struct HfBar {
    enabled: bool,
    bar: Option<ProgressBar>,
}

impl HfBar {
    pub(crate) fn new(enabled: bool) -> Self {
        Self { enabled, bar: None }
    }
}

impl hf_hub::api::Progress for HfBar {
    fn init(&mut self, size: usize, filename: &str) {
        match &self.bar {
            Some(b) => b.set_length(size as u64),
            None => self.bar = Some(bar(self.enabled, Some(size as u64), filename)),
        }
    }

    fn update(&mut self, size: usize) {
        if let Some(b) = &self.bar {
            b.inc(size as u64);
        }
    }

    fn finish(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

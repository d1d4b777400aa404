//! A spinner naming the stage of long work, on stderr; hidden when stderr is not a terminal or
//! the output is JSON.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

pub struct Spinner(ProgressBar);

impl Spinner {
    pub fn new(json: bool) -> Spinner {
        let visible = !json && std::io::stderr().is_terminal();
        let pb = if visible {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        pb.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        if visible {
            pb.enable_steady_tick(Duration::from_millis(100));
        }
        Spinner(pb)
    }

    /// Names the stage now running.
    pub fn stage(&self, msg: impl Into<String>) {
        self.0.set_message(msg.into());
    }

    /// Removes the spinner.
    pub fn done(&self) {
        self.0.finish_and_clear();
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

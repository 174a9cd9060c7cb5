//! The progress line on stderr while doctor runs (stdout carries only the
//! report, so `--json | jq` works). On a terminal one line is rewritten in
//! place with the steps under way; otherwise each step start and end is a
//! plain line, which logs keep readable.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};

pub struct Progress {
    tty: bool,
    quiet: bool,
    running: Mutex<Vec<String>>,
}

/// A step under way; it ends when dropped.
pub struct Step {
    progress: Option<Arc<Progress>>,
    label: String,
}

impl Progress {
    pub fn stderr() -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            quiet: false,
            running: Mutex::new(Vec::new()),
        }
    }

    /// Silent, for tests.
    #[cfg(test)]
    pub fn quiet() -> Progress {
        Progress {
            tty: false,
            quiet: true,
            running: Mutex::new(Vec::new()),
        }
    }

    pub fn begin(self: &Arc<Self>, label: impl Into<String>) -> Step {
        let label = label.into();
        if self.quiet {
            return Step {
                progress: None,
                label,
            };
        }
        if let Ok(mut running) = self.running.lock() {
            running.push(label.clone());
            self.show(&running, &format!("{label}..."));
        }
        Step {
            progress: Some(self.clone()),
            label,
        }
    }

    /// Rewrites the terminal line with a step's own news (e.g. the hold's
    /// seconds); plain output prints nothing for it.
    pub fn note(&self, news: &str) {
        if self.tty && !self.quiet {
            self.draw(news);
        }
    }

    /// Clears the terminal line before the report.
    pub fn finish(&self) {
        if self.tty && !self.quiet {
            eprint!("\r\x1b[K");
            let _ = std::io::stderr().flush();
        }
    }

    fn show(&self, running: &[String], plain: &str) {
        if self.tty && running.is_empty() {
            eprint!("\r\x1b[K");
        } else if self.tty {
            self.draw(&running.join(", "));
        } else {
            eprintln!("tether doctor: {plain}");
        }
    }

    fn draw(&self, text: &str) {
        let text: String = text.chars().take(110).collect();
        eprint!("\r\x1b[Ktether doctor: {text}");
        let _ = std::io::stderr().flush();
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        let Some(progress) = &self.progress else {
            return;
        };
        if let Ok(mut running) = progress.running.lock() {
            if let Some(at) = running.iter().position(|l| *l == self.label) {
                running.remove(at);
            }
            progress.show(&running, &format!("{} done", self.label));
        }
    }
}

//! Progress of long work on stderr: a bar redrawn in place on a terminal (at most four
//! times a second), and where stderr is a file or a pipe (CI logs, `2> log`) one plain
//! line per tenth of the work, so a log still shows that the run moves and how far it
//! got. Nothing at all with `quiet` (a `--json` run whose stdout is the report still
//! shows progress on stderr: it is not quiet).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often the terminal bar is redrawn.
const REDRAW: Duration = Duration::from_millis(250);

pub struct Progress {
    what: &'static str,
    total: u64,
    terminal: bool,
    quiet: bool,
    /// Tenths of the work already reported (plain lines).
    tenths: u64,
    last_draw: Option<Instant>,
    drawn: bool,
}

impl Progress {
    /// Progress of `total` steps of `what` (e.g. "bench", "soak").
    pub fn new(what: &'static str, total: u64, quiet: bool) -> Progress {
        Progress {
            what,
            total: total.max(1),
            terminal: std::io::stderr().is_terminal(),
            quiet,
            tenths: 0,
            last_draw: None,
            drawn: false,
        }
    }

    /// `done` of the total are done; `detail` says what is under way. Cheap when
    /// nothing is to be shown: call it as often as convenient.
    pub fn update(&mut self, done: u64, detail: impl FnOnce() -> String) {
        if self.quiet {
            return;
        }
        let done = done.min(self.total);
        if self.terminal {
            let now = Instant::now();
            if self.last_draw.is_some_and(|t| now.duration_since(t) < REDRAW) && done < self.total {
                return;
            }
            self.last_draw = Some(now);
            let filled = (done * 30 / self.total) as usize;
            eprint!(
                "\r\x1b[K{}: [{}{}] {}% {}",
                self.what,
                "#".repeat(filled),
                "-".repeat(30 - filled),
                done * 100 / self.total,
                detail()
            );
            self.drawn = true;
        } else {
            let tenths = done * 10 / self.total;
            if tenths > self.tenths {
                self.tenths = tenths;
                eprintln!(
                    "{}: {}% ({done} of {}) {}",
                    self.what,
                    tenths * 10,
                    self.total,
                    detail()
                );
            }
        }
    }

    /// Clears the terminal bar.
    pub fn finish(&mut self) {
        if self.terminal && self.drawn {
            eprint!("\r\x1b[K");
            self.drawn = false;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

//! Per-layer progress: bars with bytes and rate on a terminal (indicatif), one
//! plain line per finished layer otherwise, nothing with `--quiet`/`--json`.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone)]
pub struct Progress(Arc<Inner>);

struct Inner {
    mode: Mode,
    multi: MultiProgress,
    bars: Mutex<HashMap<usize, ProgressBar>>,
    plain: Mutex<HashMap<usize, (String, u64, Instant)>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bars,
    Lines,
    Quiet,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars
        } else {
            Mode::Lines
        };
        Progress(Arc::new(Inner {
            mode,
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::new(HashMap::new()),
            plain: Mutex::new(HashMap::new()),
        }))
    }

    pub fn add(&self, i: usize, label: &str, total: u64) {
        match self.0.mode {
            Mode::Bars => {
                let b = self.0.multi.add(ProgressBar::new(total));
                b.set_style(
                    ProgressStyle::with_template(
                        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                b.set_message(short(label));
                self.0.bars.lock().unwrap().insert(i, b);
            }
            Mode::Lines => {
                self.0
                    .plain
                    .lock()
                    .unwrap()
                    .insert(i, (short(label), 0, Instant::now()));
            }
            Mode::Quiet => {}
        }
    }

    pub fn inc(&self, i: usize, n: u64) {
        match self.0.mode {
            Mode::Bars => {
                if let Some(b) = self.0.bars.lock().unwrap().get(&i) {
                    b.inc(n);
                }
            }
            Mode::Lines => {
                if let Some(e) = self.0.plain.lock().unwrap().get_mut(&i) {
                    e.1 += n;
                }
            }
            Mode::Quiet => {}
        }
    }

    pub fn done(&self, i: usize, status: &str) {
        match self.0.mode {
            Mode::Bars => {
                if let Some(b) = self.0.bars.lock().unwrap().get(&i) {
                    let m = b.message();
                    b.finish_with_message(format!("{m} {status}"));
                }
            }
            Mode::Lines => {
                if let Some((label, n, t)) = self.0.plain.lock().unwrap().get(&i) {
                    let secs = t.elapsed().as_secs_f64().max(1e-6);
                    let mut line = format!("{label}: {status}");
                    if *n > 0 {
                        line += &format!(
                            " ({:.1} MB, {:.1} MB/s)",
                            *n as f64 / 1e6,
                            *n as f64 / 1e6 / secs
                        );
                    }
                    let _ = writeln!(std::io::stderr(), "{line}");
                }
            }
            Mode::Quiet => {}
        }
    }

    pub fn fail(&self, i: usize, msg: &str) {
        if let Mode::Bars = self.0.mode {
            if let Some(b) = self.0.bars.lock().unwrap().get(&i) {
                b.abandon_with_message("failed".to_string());
            }
        }
        let _ = msg;
    }
}

impl cvmfs_publisher::publish::LayerProgress for Progress {
    fn add(&self, i: usize, label: &str, total: u64) {
        Progress::add(self, i, label, total)
    }
    fn inc(&self, i: usize, n: u64) {
        Progress::inc(self, i, n)
    }
    fn done(&self, i: usize, status: &str) {
        Progress::done(self, i, status)
    }
    fn fail(&self, i: usize, msg: &str) {
        Progress::fail(self, i, msg)
    }
}

/// `layer 1/3 sha256:0123456789ab`
fn short(label: &str) -> String {
    match label.find("sha256:") {
        Some(p) if label.len() > p + 19 => label[..p + 19].to_string(),
        _ => label.to_string(),
    }
}

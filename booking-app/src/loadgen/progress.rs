//! The live progress line: what a run is doing while it runs. On a terminal it is an indicatif
//! spinner redrawn in place; elsewhere (a Job's log, CI) a plain line every few seconds.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::driver::Counters;

const TERMINAL_TICK: Duration = Duration::from_millis(250);
const LOG_TICK: Duration = Duration::from_secs(5);

/// A running progress line; `finish` clears it.
pub struct Progress {
    task: JoinHandle<()>,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Starts reporting `counters`. `label` names the run (e.g. the capacity step's rate).
    pub fn start(counters: Arc<Counters>, label: String, warmup: Duration, enabled: bool) -> Self {
        let terminal = enabled && std::io::stderr().is_terminal();
        let bar = terminal.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(8));
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                    .expect("static template"),
            );
            bar
        });
        let tick = if terminal { TERMINAL_TICK } else { LOG_TICK };
        let task_bar = bar.clone();
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut last = (start, 0u64);
            let mut interval = tokio::time::interval_at(start + tick, tick);
            loop {
                interval.tick().await;
                let now = Instant::now();
                let done = counters.done.load(Ordering::Relaxed);
                let rps = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
                last = (now, done);
                let phase = if now.duration_since(start) < warmup {
                    "warm-up"
                } else {
                    "measuring"
                };
                let line = line(&label, phase, &counters, rps);
                match &task_bar {
                    Some(bar) => {
                        bar.set_message(line);
                        bar.tick();
                    }
                    None if enabled => eprintln!(
                        "[loadgen {:>5.0}s] {line}",
                        now.duration_since(start).as_secs_f64()
                    ),
                    None => {}
                }
            }
        });
        Self { task, bar }
    }

    pub fn finish(self) {
        self.task.abort();
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

fn line(label: &str, phase: &str, c: &Counters, rps: f64) -> String {
    let get = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    format!(
        "{label} {phase}: {} done, {rps:.0} req/s | 201 {} · 202 {} · 409 {} · errors {} | in flight {}",
        get(&c.done),
        get(&c.confirmed),
        get(&c.pending),
        get(&c.refused),
        get(&c.errors),
        get(&c.in_flight),
    )
}

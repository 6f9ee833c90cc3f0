//! The live progress bar `submit --watch` and `watch` draw on a terminal: one line that the
//! batch's events move, redrawn a few times a second so the rate and the ETA stay current
//! between events:
//!
//! ```text
//! RUNNING   [=============>              ] 1500/3000 items  2 failed  250 items/s  ETA 6s
//! SUCCEEDED [============================] 3000/3000 items  2 failed  248 items/s  in 12s
//! ```
//!
//! The rate is measured over the last few seconds of what this watch saw (not since the batch
//! began), so re-attaching to a half-done batch does not count its earlier items as a burst.
//! The bar is left on screen with the terminal state when the batch finishes.
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use indicatif::{HumanDuration, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use sluice::api;
use sluice::convert::is_terminal;

use super::text::state_name;
use super::EventView;

/// How often the bar is redrawn without an event.
const TICK: Duration = Duration::from_millis(200);
/// How far back the rate looks.
const RATE_WINDOW: Duration = Duration::from_secs(10);
/// Shortest span a rate is computed over; before it, the rate shows as `-`.
const MIN_RATE_SPAN: Duration = Duration::from_millis(500);
const TEMPLATE: &str = "{prefix:<9} [{bar:28}] {pos}/{len} items  {msg}  {speed}";

/// A progress bar that follows one batch's events.
pub(crate) struct ProgressView {
    bar: ProgressBar,
    started: bool,
}

impl ProgressView {
    /// A bar drawn on standard output (which the caller has checked is a terminal).
    pub(crate) fn on_stdout() -> Self {
        Self::with_target(ProgressDrawTarget::stdout())
    }

    fn with_target(target: ProgressDrawTarget) -> Self {
        let style = ProgressStyle::with_template(TEMPLATE)
            .expect("the template is valid")
            .progress_chars("=> ")
            .with_key("speed", Throughput::default());
        let bar = ProgressBar::with_draw_target(Some(0), target).with_style(style);
        ProgressView {
            bar,
            started: false,
        }
    }
}

impl EventView for ProgressView {
    fn event(&mut self, event: &api::BatchEvent) -> io::Result<()> {
        let counters = event.counters.unwrap_or_default();
        // Words first, counts last: each setter may draw, and no frame should be half-set.
        self.bar.set_prefix(state_name(event.state));
        self.bar
            .set_message(format!("{} failed", counters.items_failed));
        self.bar.set_length(counters.items_total);
        self.bar
            .set_position(counters.items_succeeded + counters.items_failed);
        if !self.started {
            // The rate starts from what this watch first saw, not from zero.
            self.bar.reset_eta();
            self.bar.enable_steady_tick(TICK);
            self.started = true;
        }
        if is_terminal(event.state()) {
            // Leaves the last drawing, with its real counts (finish() would fill the bar).
            self.bar.abandon();
        }
        Ok(())
    }

    fn notice(&mut self, message: &str) {
        self.bar.suspend(|| eprintln!("sluice: {message}"));
    }
}

impl Drop for ProgressView {
    fn drop(&mut self) {
        // A watch that ends in an error stops the bar where it was, so the error prints below.
        if !self.bar.is_finished() {
            self.bar.abandon();
        }
    }
}

/// Items per second over the recent past, and what it predicts; also the bar's `{speed}` key.
#[derive(Debug, Clone, Default)]
pub(crate) struct Throughput {
    /// (when, items done), oldest first, spanning at most [`RATE_WINDOW`] plus one sample.
    samples: VecDeque<(Instant, u64)>,
    /// The first sample ever, for the average once the bar is finished.
    first: Option<(Instant, u64)>,
}

impl Throughput {
    /// Notes that `done` items were done at `now`.
    pub(crate) fn record(&mut self, now: Instant, done: u64) {
        self.first.get_or_insert((now, done));
        self.samples.push_back((now, done));
        // Keep one sample at or beyond the window's start, so the span covers the window.
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|(time, _)| now.duration_since(*time) >= RATE_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// Items per second over the window ending at `now`; `None` until it spans long enough.
    /// A stall shows as the rate decaying towards zero, since `now` keeps moving.
    pub(crate) fn per_second(&self, now: Instant) -> Option<f64> {
        let (oldest_time, oldest_done) = *self.samples.front()?;
        let (_, newest_done) = *self.samples.back()?;
        let span = now.duration_since(oldest_time);
        if span < MIN_RATE_SPAN {
            return None;
        }
        Some(newest_done.saturating_sub(oldest_done) as f64 / span.as_secs_f64())
    }

    /// Items per second from the first sample to the last (for a finished bar).
    fn average(&self) -> Option<f64> {
        let (first_time, first_done) = self.first?;
        let (last_time, last_done) = *self.samples.back()?;
        let span = last_time.duration_since(first_time);
        (span >= MIN_RATE_SPAN)
            .then(|| last_done.saturating_sub(first_done) as f64 / span.as_secs_f64())
    }

    /// `250 items/s  ETA 6s` while running (`- items/s  ETA -` before a rate is known);
    /// `250 items/s  in 12s` once `finished` after `elapsed`.
    pub(crate) fn describe(
        &self,
        now: Instant,
        remaining: u64,
        finished: Option<Duration>,
    ) -> String {
        if let Some(elapsed) = finished {
            let took = format!("in {:#}", HumanDuration(elapsed));
            return match self.average() {
                Some(rate) => format!("{} items/s  {took}", rate_text(rate)),
                None => took,
            };
        }
        let Some(rate) = self.per_second(now) else {
            return "- items/s  ETA -".to_owned();
        };
        let eta = if remaining == 0 {
            "ETA 0s".to_owned()
        } else if rate > 0.0 {
            let seconds = (remaining as f64 / rate).min(1e9);
            format!("ETA {:#}", HumanDuration(Duration::from_secs_f64(seconds)))
        } else {
            "ETA -".to_owned()
        };
        format!("{} items/s  {eta}", rate_text(rate))
    }
}

/// A rate as people read it: whole numbers from 100 up, one decimal below.
fn rate_text(rate: f64) -> String {
    if rate >= 100.0 {
        format!("{rate:.0}")
    } else {
        format!("{rate:.1}")
    }
}

impl indicatif::style::ProgressTracker for Throughput {
    fn clone_box(&self) -> Box<dyn indicatif::style::ProgressTracker> {
        Box::new(self.clone())
    }

    fn tick(&mut self, state: &ProgressState, now: Instant) {
        self.record(now, state.pos());
    }

    fn reset(&mut self, state: &ProgressState, now: Instant) {
        self.samples.clear();
        self.first = None;
        self.record(now, state.pos());
    }

    fn write(&self, state: &ProgressState, out: &mut dyn fmt::Write) {
        let remaining = state.len().unwrap_or(0).saturating_sub(state.pos());
        let finished = state.is_finished().then(|| state.elapsed());
        let text = self.describe(Instant::now(), remaining, finished);
        let _ = out.write_str(&text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, millis: u64) -> Instant {
        start + Duration::from_millis(millis)
    }

    #[test]
    fn the_rate_needs_half_a_second_of_samples() {
        let start = Instant::now();
        let mut throughput = Throughput::default();
        throughput.record(start, 100);
        assert_eq!(throughput.per_second(at(start, 400)), None);
        assert_eq!(
            throughput.describe(at(start, 400), 900, None),
            "- items/s  ETA -"
        );
        throughput.record(at(start, 1_000), 350);
        assert_eq!(throughput.per_second(at(start, 1_000)), Some(250.0));
        assert_eq!(
            throughput.describe(at(start, 1_000), 650, None),
            "250 items/s  ETA 3s"
        );
    }

    #[test]
    fn the_rate_looks_only_at_the_recent_window() {
        let start = Instant::now();
        let mut throughput = Throughput::default();
        // A fast start, then 10 items/s for 20 s: the rate forgets the start.
        throughput.record(start, 0);
        throughput.record(at(start, 1_000), 5_000);
        for second in 2..=21 {
            throughput.record(at(start, second * 1_000), 5_000 + (second - 1) * 10);
        }
        let rate = throughput.per_second(at(start, 21_000)).expect("a rate");
        assert!((rate - 10.0).abs() < 1e-9, "{rate}");
        assert!(
            throughput.samples.len() <= 12,
            "{}",
            throughput.samples.len()
        );
        assert_eq!(
            throughput.describe(at(start, 21_000), 30, None),
            "10.0 items/s  ETA 3s"
        );
    }

    #[test]
    fn a_stall_decays_the_rate_and_hides_the_eta() {
        let start = Instant::now();
        let mut throughput = Throughput::default();
        throughput.record(start, 0);
        throughput.record(at(start, 1_000), 100);
        let later = throughput.per_second(at(start, 4_000)).expect("a rate");
        assert!((later - 25.0).abs() < 1e-9, "{later}");
        for second in 5..=20 {
            throughput.record(at(start, second * 1_000), 100);
        }
        assert_eq!(throughput.per_second(at(start, 20_000)), Some(0.0));
        assert_eq!(
            throughput.describe(at(start, 20_000), 50, None),
            "0.0 items/s  ETA -"
        );
    }

    #[test]
    fn a_finished_bar_shows_the_average_of_the_whole_watch() {
        let start = Instant::now();
        let mut throughput = Throughput::default();
        throughput.record(start, 1_000);
        throughput.record(at(start, 2_000), 1_400);
        throughput.record(at(start, 4_000), 3_000);
        let took = Some(Duration::from_secs(9));
        assert_eq!(
            throughput.describe(at(start, 9_000), 0, took),
            "500 items/s  in 9s"
        );
        assert_eq!(Throughput::default().describe(start, 0, took), "in 9s");
    }

    #[test]
    fn the_bar_follows_events_to_the_terminal_one() {
        let mut view = ProgressView::with_target(ProgressDrawTarget::hidden());
        let event = |state: api::BatchState, done: u64, failed: u64| api::BatchEvent {
            batch_id: "b".into(),
            sequence: done + 1,
            state: state as i32,
            counters: Some(api::Counters {
                items_total: 10,
                items_succeeded: done - failed,
                items_failed: failed,
                chunks_total: 2,
                chunks_done: done / 5,
            }),
            time: None,
        };
        view.event(&event(api::BatchState::Running, 5, 1))
            .expect("shown");
        assert_eq!((view.bar.position(), view.bar.length()), (5, Some(10)));
        assert_eq!(view.bar.prefix(), "RUNNING");
        assert_eq!(view.bar.message(), "1 failed");
        assert!(!view.bar.is_finished());
        view.event(&event(api::BatchState::Cancelled, 7, 1))
            .expect("shown");
        assert!(view.bar.is_finished());
        assert_eq!(view.bar.position(), 7, "a cancelled bar keeps its count");
        assert_eq!(view.bar.prefix(), "CANCELLED");
    }
}

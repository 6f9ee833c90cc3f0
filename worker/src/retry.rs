//! Retries: how long a failed chunk waits before its next attempt (exponential backoff with
//! jitter, so chunks that failed together do not all come back together), and the loop that
//! moves due retries from the retry set back onto the stream. A waiting chunk holds no worker
//! slot: it sits in Redis, not in a worker's memory.
use std::time::Duration;

use sluice::broker::Broker;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How often due retries are moved back onto the stream.
const PROMOTE_INTERVAL: Duration = Duration::from_millis(200);
/// Most retries moved by one script call (more are moved by the next call at once).
const PROMOTE_BATCH: u64 = 256;
/// Pause after Redis failed before trying again.
const PROMOTE_ERROR_PAUSE: Duration = Duration::from_secs(2);

/// The delay before retrying after failed attempt number `attempt` (from 1): `base` doubled for
/// each earlier attempt, capped at `max`, then scaled into its upper half by `jitter` (a number
/// from 0 to 1), so the expected delay still doubles and no retry comes before half of it.
pub(crate) fn retry_delay(attempt: u64, base: Duration, max: Duration, jitter: f64) -> Duration {
    let doublings = attempt.saturating_sub(1).min(32) as u32;
    let exponential = base
        .saturating_mul(2_u32.saturating_pow(doublings))
        .min(max);
    exponential.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// Moves due retries onto the stream until `shutdown`. Every worker runs one; the move is one
/// atomic script, so they never move a retry twice.
pub(crate) async fn promote_due_retries(broker: Broker, shutdown: CancellationToken) {
    loop {
        let pause = match broker.promote_due_retries(PROMOTE_BATCH).await {
            Ok(moved) if moved >= PROMOTE_BATCH => Duration::ZERO,
            Ok(moved) => {
                if moved > 0 {
                    debug!(moved, "retries due; back on the stream");
                }
                PROMOTE_INTERVAL
            }
            Err(error) => {
                warn!(%error, "cannot move due retries; trying again");
                PROMOTE_ERROR_PAUSE
            }
        };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(60);

    #[test]
    fn delays_double_from_the_base_and_stop_at_the_cap() {
        let top = |attempt| retry_delay(attempt, BASE, MAX, 1.0);
        assert_eq!(top(1), Duration::from_secs(1));
        assert_eq!(top(2), Duration::from_secs(2));
        assert_eq!(top(4), Duration::from_secs(8));
        assert_eq!(top(7), MAX);
        assert_eq!(top(1_000), MAX);
    }

    #[test]
    fn jitter_stays_within_the_upper_half() {
        assert_eq!(retry_delay(3, BASE, MAX, 0.0), Duration::from_secs(2));
        assert_eq!(retry_delay(3, BASE, MAX, 0.5), Duration::from_secs(3));
        assert_eq!(retry_delay(3, BASE, MAX, 7.0), Duration::from_secs(4));
    }
}

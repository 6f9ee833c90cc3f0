//! `sleep`: waits `ms` milliseconds per item, then echoes it. Simulated I/O, used by fault
//! tests to keep chunks in flight long enough to kill a process under them.
use std::time::Duration;

use super::{integer_param, reject_unknown_params, ItemProcessor, Task};
use crate::model::Payload;

/// Longest sleep per item a batch may ask for: one minute.
const MAX_MS: u64 = 60_000;

/// Sleeps, then echoes.
pub(crate) struct Sleep;

impl Task for Sleep {
    fn name(&self) -> &'static str {
        "sleep"
    }

    fn description(&self) -> &'static str {
        "waits params.ms milliseconds per item, then returns it unchanged (simulated I/O)"
    }

    fn params_schema(&self) -> &'static str {
        r#"{"type":"object","properties":{"ms":{"type":"integer","minimum":0,"maximum":60000,"default":0}},"additionalProperties":false}"#
    }

    fn processor(&self, params: &serde_json::Value) -> Result<Box<dyn ItemProcessor>, String> {
        reject_unknown_params(params, &["ms"])?;
        let pause = Duration::from_millis(integer_param(params, "ms", 0, MAX_MS)?);
        // Runs on the chunk's blocking thread, never on the async runtime.
        Ok(Box::new(move |item: &Payload| {
            std::thread::sleep(pause);
            Ok(item.clone())
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{run, text};
    use super::*;

    #[test]
    fn echoes_after_sleeping() {
        assert_eq!(
            run(&Sleep, serde_json::json!({"ms": 1}), &["x"]),
            vec![text("x")]
        );
        assert!(Sleep.validate(&serde_json::json!({"ms": -1})).is_err());
        assert!(Sleep.validate(&serde_json::json!({"ms": 60_001})).is_err());
    }
}

//! The benchmark's items, shared by `sluice-bench` and `sluice-store-ceiling` (and generated
//! byte for byte the same by the Celery peer's `run.py`): about 100 bytes of JSON each.

/// Item `index`.
pub(crate) fn item(index: u64) -> String {
    format!(
        "{{\"i\":{index},\"name\":\"item-{index:08}\",\"payload\":\"{}\"}}",
        "x".repeat(60)
    )
}

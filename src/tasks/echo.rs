//! `echo`: the output is the input. The pipeline's overhead baseline.
use super::{reject_unknown_params, ItemProcessor, Task};

/// Returns each item unchanged.
pub(crate) struct Echo;

impl Task for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }

    fn description(&self) -> &'static str {
        "returns each item unchanged (the overhead baseline)"
    }

    fn params_schema(&self) -> &'static str {
        r#"{"type":"object","additionalProperties":false}"#
    }

    fn processor(&self, params: &serde_json::Value) -> Result<Box<dyn ItemProcessor>, String> {
        reject_unknown_params(params, &[])?;
        Ok(Box::new(|item: &crate::model::Payload| Ok(item.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{run, text};
    use super::*;

    #[test]
    fn returns_the_item() {
        assert_eq!(
            run(&Echo, serde_json::json!({}), &["a b"]),
            vec![text("a b")]
        );
        assert!(Echo.validate(&serde_json::json!({"x": 1})).is_err());
    }
}

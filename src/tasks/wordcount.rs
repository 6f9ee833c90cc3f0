//! `wordcount`: for each text item, a JSON object mapping each word to its count. Words are
//! runs of alphanumeric characters, lowercased; keys are sorted.
use std::collections::BTreeMap;

use super::{item_text, reject_unknown_params, ItemProcessor, Task};
use crate::model::Payload;

/// Counts words per item.
pub(crate) struct WordCount;

impl Task for WordCount {
    fn name(&self) -> &'static str {
        "wordcount"
    }

    fn description(&self) -> &'static str {
        "JSON object of word -> count for each text item (words lowercased, keys sorted)"
    }

    fn params_schema(&self) -> &'static str {
        r#"{"type":"object","additionalProperties":false}"#
    }

    fn processor(&self, params: &serde_json::Value) -> Result<Box<dyn ItemProcessor>, String> {
        reject_unknown_params(params, &[])?;
        Ok(Box::new(|item: &Payload| {
            let text = item_text(item)?;
            let mut counts: BTreeMap<String, u64> = BTreeMap::new();
            for word in text
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
            {
                *counts.entry(word.to_lowercase()).or_default() += 1;
            }
            serde_json::to_string(&counts)
                .map(Payload::Text)
                .map_err(|error| format!("cannot encode counts: {error}"))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{run, text};
    use super::*;

    #[test]
    fn counts_words() {
        assert_eq!(
            run(
                &WordCount,
                serde_json::json!({}),
                &["The cat, the hat.", ""]
            ),
            vec![text(r#"{"cat":1,"hat":1,"the":2}"#), text("{}")]
        );
    }
}

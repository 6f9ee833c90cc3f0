//! `jq`: applies a jq program (params `{"filter": "..."}`) to each JSON item, with the jaq
//! interpreter. The output is the program's results as compact JSON, one per line (what
//! `jq -c` prints). An item that is not JSON, or a runtime error, is that item's error.
//!
//! Built-ins that reach outside the item are left out: no `env`, `input` or `now`, so a filter
//! cannot read the worker's environment or its other inputs, and `halt` is an item error
//! rather than the end of the worker.
use jaq_core::load::{Arena, File, Loader};
use jaq_core::{data, Compiler, Ctx, Vars};
use jaq_json::Val;

use super::{item_text, reject_unknown_params, ItemProcessor, Task, Transient};
use crate::model::{ItemOutcome, Payload};

/// Longest filter text accepted.
const MAX_FILTER_BYTES: usize = 64 * 1024;
/// Most output one item may produce (all its results together).
const MAX_OUTPUT_BYTES: usize = 4 << 20;

/// Built-ins that reach outside the item (the environment, the clock, other inputs).
const IMPURE_BUILTINS: &[&str] = &["env", "now", "input", "inputs", "input_filename"];

type JqFilter = jaq_core::Filter<data::JustLut<Val>>;

/// Runs a jq filter on each item.
pub(crate) struct Jq;

impl Task for Jq {
    fn name(&self) -> &'static str {
        "jq"
    }

    fn description(&self) -> &'static str {
        "applies params.filter (a jq program) to each JSON item; results as compact JSON lines"
    }

    fn params_schema(&self) -> &'static str {
        r#"{"type":"object","properties":{"filter":{"type":"string","description":"a jq program, e.g. .name"}},"required":["filter"],"additionalProperties":false}"#
    }

    fn processor(&self, params: &serde_json::Value) -> Result<Box<dyn ItemProcessor>, String> {
        reject_unknown_params(params, &["filter"])?;
        let Some(code) = params.get("filter").and_then(serde_json::Value::as_str) else {
            return Err("filter is required and must be a string".to_owned());
        };
        if code.len() > MAX_FILTER_BYTES {
            return Err(format!(
                "filter is over the limit of {MAX_FILTER_BYTES} bytes"
            ));
        }
        let filter = compile(code)?;
        Ok(Box::new(JqProcessor { filter }))
    }
}

fn compile(code: &str) -> Result<JqFilter, String> {
    let defs = jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs());
    let funs = jaq_core::funs()
        .chain(jaq_std::funs())
        .chain(jaq_json::funs())
        .filter(|(name, _, _)| !IMPURE_BUILTINS.contains(name));
    let arena = Arena::default();
    let modules = Loader::new(defs)
        .load(&arena, File { code, path: () })
        .map_err(|errors| format!("invalid filter {code:?}: {}", describe_errors(&errors)))?;
    Compiler::default()
        .with_funs(funs)
        .compile(modules)
        .map_err(|errors| {
            let undefined: Vec<String> = errors
                .iter()
                .flat_map(|(_, undefined)| undefined.iter())
                .map(|(name, kind)| format!("undefined {} {name}", kind.as_str()))
                .collect();
            format!("invalid filter {code:?}: {}", undefined.join(", "))
        })
}

fn describe_errors<E: std::fmt::Debug>(errors: &[(File<&str, ()>, E)]) -> String {
    errors
        .iter()
        .map(|(_, error)| format!("{error:?}"))
        .collect::<Vec<_>>()
        .join("; ")
}

struct JqProcessor {
    filter: JqFilter,
}

impl ItemProcessor for JqProcessor {
    fn process(&mut self, item: &Payload) -> Result<ItemOutcome, Transient> {
        Ok(self.apply(item))
    }
}

impl JqProcessor {
    fn apply(&self, item: &Payload) -> ItemOutcome {
        let text = item_text(item)?;
        let input = jaq_json::read::parse_single(text.as_bytes())
            .map_err(|error| format!("item is not valid JSON: {error}"))?;
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        let mut output = String::new();
        for result in self.filter.id.run((ctx, input)) {
            match result {
                Ok(value) => {
                    if !output.is_empty() {
                        output.push('\n');
                    }
                    output.push_str(&value.to_string());
                    // A filter like `repeat(.)` never ends: stop it before it eats the memory.
                    if output.len() > MAX_OUTPUT_BYTES {
                        return Err(format!(
                            "jq output is over the limit of {MAX_OUTPUT_BYTES} bytes"
                        ));
                    }
                }
                Err(exception) => {
                    return Err(match exception.get_err() {
                        Ok(error) => format!("jq error: {error}"),
                        Err(_) => "jq error: halt is not allowed".to_owned(),
                    });
                }
            }
        }
        Ok(Payload::Text(output))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{run, text};
    use super::*;

    #[test]
    fn applies_the_filter() {
        let params = serde_json::json!({"filter": ".a + 1"});
        assert_eq!(run(&Jq, params, &[r#"{"a": 1}"#]), vec![text("2")]);
        let params = serde_json::json!({"filter": ".[] | {x: .}"});
        assert_eq!(
            run(&Jq, params, &["[1,2]"]),
            vec![text("{\"x\":1}\n{\"x\":2}")]
        );
        let params = serde_json::json!({"filter": "map(select(. > 1)) | length"});
        assert_eq!(run(&Jq, params, &["[1,2,3]"]), vec![text("2")]);
    }

    #[test]
    fn item_errors_are_per_item() {
        let params = serde_json::json!({"filter": ".a + 1"});
        let outcomes = run(&Jq, params, &["not json", r#"{"a": "x"}"#, r#"{"a": 2}"#]);
        assert!(outcomes[0]
            .as_ref()
            .is_err_and(|e| e.starts_with("item is not valid JSON")));
        assert!(outcomes[1]
            .as_ref()
            .is_err_and(|e| e.starts_with("jq error")));
        assert_eq!(outcomes[2], text("3"));
    }

    #[test]
    fn rejects_bad_filters_and_impure_builtins() {
        assert!(Jq
            .validate(&serde_json::json!({"filter": ".a | | b"}))
            .is_err());
        assert!(Jq.validate(&serde_json::json!({"filter": "env"})).is_err());
        assert!(Jq.validate(&serde_json::json!({})).is_err());
        let halted = run(&Jq, serde_json::json!({"filter": "halt"}), &["1"]);
        assert!(halted[0].is_err());
    }

    #[test]
    fn endless_output_is_an_item_error() {
        let endless = run(&Jq, serde_json::json!({"filter": "repeat(.)"}), &["1"]);
        assert_eq!(
            endless,
            vec![Err(format!(
                "jq output is over the limit of {MAX_OUTPUT_BYTES} bytes"
            ))]
        );
    }
}

//! The task registry: what a worker can do to an item. The server validates a batch's params
//! against the same registry before accepting it, and `ListTasks` describes it.
//!
//! Adding a task is one new file in this folder (a type implementing [`Task`]) plus one line in
//! [`TaskRegistry::builtin`].
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::model::{ItemOutcome, Payload};

mod echo;
mod jq;
mod sha256;
mod sleep;
mod wordcount;

/// A named operation applied to every item of a batch.
pub trait Task: Send + Sync + 'static {
    /// The name clients pass as `task`.
    fn name(&self) -> &'static str;
    /// One line on what it does to each item.
    fn description(&self) -> &'static str;
    /// A JSON Schema of its params object.
    fn params_schema(&self) -> &'static str;
    /// Checks params (the server calls this before writing anything); the message says what is
    /// wrong.
    fn validate(&self, params: &serde_json::Value) -> Result<(), String> {
        self.processor(params).map(|_| ())
    }
    /// Builds the per-item function for one chunk. Called on the blocking thread that runs the
    /// chunk, so the processor need not be `Send` (jq's compiled filter is not).
    fn processor(&self, params: &serde_json::Value) -> Result<Box<dyn ItemProcessor>, String>;
}

/// Applies a task, with its params bound, to one item after another.
pub trait ItemProcessor {
    /// The item's output, or why this item failed (a permanent, per-item error, stored as the
    /// item's result); or a [`Transient`] failure that aborts the whole chunk attempt so it is
    /// retried later.
    fn process(&mut self, item: &Payload) -> Result<ItemOutcome, Transient>;
}

impl<F: FnMut(&Payload) -> ItemOutcome> ItemProcessor for F {
    fn process(&mut self, item: &Payload) -> Result<ItemOutcome, Transient> {
        Ok(self(item))
    }
}

/// A failure that may pass if the chunk is tried again later (a dependency that is down, a
/// rate limit): the worker retries the chunk with backoff, up to its attempt limit, instead of
/// recording an error for the item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transient(pub String);

impl std::fmt::Display for Transient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The tasks this build offers, by name.
#[derive(Clone)]
pub struct TaskRegistry {
    tasks: BTreeMap<&'static str, Arc<dyn Task>>,
}

impl std::fmt::Debug for TaskRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.tasks.keys()).finish()
    }
}

impl TaskRegistry {
    /// An empty registry (tests add their own tasks).
    pub fn empty() -> Self {
        TaskRegistry {
            tasks: BTreeMap::new(),
        }
    }

    /// The built-in tasks.
    pub fn builtin() -> Self {
        let mut registry = TaskRegistry::empty();
        registry.register(echo::Echo);
        registry.register(sha256::Sha256);
        registry.register(wordcount::WordCount);
        registry.register(jq::Jq);
        registry.register(sleep::Sleep);
        registry
    }

    /// Adds (or replaces) a task.
    pub fn register(&mut self, task: impl Task) {
        self.tasks.insert(task.name(), Arc::new(task));
    }

    /// The task with this name.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Task>> {
        self.tasks.get(name).cloned()
    }

    /// Task names in order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.tasks.keys().copied()
    }

    /// All tasks in name order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Task>> {
        self.tasks.values()
    }
}

/// The item as UTF-8 text, or the per-item error a text task reports for bytes that are not.
pub(crate) fn item_text(item: &Payload) -> Result<&str, String> {
    match item {
        Payload::Text(text) => Ok(text),
        Payload::Binary(bytes) => {
            std::str::from_utf8(bytes).map_err(|error| format!("item is not UTF-8 text: {error}"))
        }
    }
}

/// Reads an optional non-negative integer param, with a maximum.
pub(crate) fn integer_param(
    params: &serde_json::Value,
    name: &str,
    default: u64,
    max: u64,
) -> Result<u64, String> {
    match params.get(name) {
        None => Ok(default),
        Some(value) => match value.as_u64() {
            Some(number) if number <= max => Ok(number),
            _ => Err(format!(
                "{name} must be an integer from 0 to {max}, got {value}"
            )),
        },
    }
}

/// Rejects params with names the task does not know (a typo should not pass silently).
pub(crate) fn reject_unknown_params(
    params: &serde_json::Value,
    known: &[&str],
) -> Result<(), String> {
    let Some(object) = params.as_object() else {
        return Err("params must be a JSON object".to_owned());
    };
    match object.keys().find(|key| !known.contains(&key.as_str())) {
        Some(unknown) if known.is_empty() => Err(format!("takes no params, got {unknown:?}")),
        Some(unknown) => Err(format!(
            "unknown param {unknown:?} (known: {})",
            known.join(", ")
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// Runs `task` with `params` over text items.
    pub(crate) fn run(
        task: &dyn Task,
        params: serde_json::Value,
        items: &[&str],
    ) -> Vec<ItemOutcome> {
        let mut processor = task.processor(&params).expect("valid params");
        items
            .iter()
            .map(|item| {
                processor
                    .process(&Payload::Text((*item).to_owned()))
                    .expect("built-in tasks never fail transiently")
            })
            .collect()
    }

    pub(crate) fn text(value: &str) -> ItemOutcome {
        Ok(Payload::Text(value.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_names_are_sorted_and_complete() {
        let names: Vec<_> = TaskRegistry::builtin().names().collect();
        assert_eq!(names, ["echo", "jq", "sha256", "sleep", "wordcount"]);
    }

    #[test]
    fn unknown_params_are_named() {
        let params = serde_json::json!({"fliter": "."});
        assert_eq!(
            reject_unknown_params(&params, &["filter"]),
            Err("unknown param \"fliter\" (known: filter)".to_owned())
        );
    }
}

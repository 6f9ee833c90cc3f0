//! Line-based inputs: plain lines and JSON Lines. [`LineReader`] reads one line at a time
//! with a bound on its length, so a file that is not line-based at all fails before it fills
//! memory; JSON Lines are the same lines, each checked to be one JSON value.
use anyhow::Context as _;
use serde::de::IgnoredAny;
use tokio::io::{AsyncBufRead, AsyncBufReadExt as _, AsyncReadExt as _};

/// Longest line accepted: larger than any item a server takes, so only a file that is not
/// line-based at all hits it, before it fills memory.
const MAX_LINE_BYTES: usize = 16 << 20;

/// Reads lines: each line without its `\n` (or `\r\n`); a final line without a newline counts
/// too, so only the empty "line" after a file's last newline is not returned.
pub(crate) struct LineReader<R> {
    reader: R,
    name: String,
    buffer: Vec<u8>,
    line_number: u64,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    /// Reads from `reader`; `name` is how errors refer to it.
    pub(crate) fn new(reader: R, name: impl Into<String>) -> Self {
        LineReader {
            reader,
            name: name.into(),
            buffer: Vec::new(),
            line_number: 0,
        }
    }

    /// The next line, or `None` at the end of the input.
    pub(crate) async fn next_line(&mut self) -> anyhow::Result<Option<String>> {
        self.buffer.clear();
        let line_number = self.line_number + 1;
        let limit = MAX_LINE_BYTES as u64 + 2; // room for the line's own \r\n
        let read = (&mut self.reader)
            .take(limit)
            .read_until(b'\n', &mut self.buffer)
            .await
            .with_context(|| format!("cannot read {}", self.name))?;
        if read == 0 {
            return Ok(None);
        }
        self.line_number = line_number;
        if self.buffer.last() == Some(&b'\n') {
            self.buffer.pop();
            if self.buffer.last() == Some(&b'\r') {
                self.buffer.pop();
            }
        }
        if self.buffer.len() > MAX_LINE_BYTES {
            anyhow::bail!(
                "line {line_number} of {} is longer than {} MiB; is it a file of lines?",
                self.name,
                MAX_LINE_BYTES >> 20
            );
        }
        let line = String::from_utf8(std::mem::take(&mut self.buffer)).map_err(|_| {
            anyhow::anyhow!("line {line_number} of {} is not valid UTF-8", self.name)
        })?;
        Ok(Some(line))
    }

    /// Lines returned so far.
    pub(crate) fn lines_read(&self) -> u64 {
        self.line_number
    }

    /// How errors refer to the input.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

/// Checks that `line` (line `line_number` of `name`) is one JSON value, as JSON Lines requires.
pub(crate) fn check_json(line: &str, line_number: u64, name: &str) -> anyhow::Result<()> {
    serde_json::from_str::<IgnoredAny>(line).map_err(|error| {
        anyhow::anyhow!(
            "line {line_number} of {name} is not JSON ({error}); use --format lines to send \
             lines as they are"
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(bytes: &'static [u8]) -> Vec<String> {
        let mut reader = LineReader::new(bytes, "test");
        let mut lines = Vec::new();
        while let Some(line) = reader.next_line().await.expect("readable") {
            lines.push(line);
        }
        lines
    }

    #[tokio::test]
    async fn every_line_is_an_item_except_a_final_empty_one() {
        assert_eq!(lines_of(b"").await, Vec::<String>::new());
        assert_eq!(lines_of(b"a\nb\n").await, ["a", "b"]);
        assert_eq!(lines_of(b"a\nb").await, ["a", "b"]);
        assert_eq!(lines_of(b"a\n\nb\n\n").await, ["a", "", "b", ""]);
        assert_eq!(lines_of(b"\n").await, [""]);
        assert_eq!(
            lines_of(b"{\"a\": 1}\r\n  x \r\n").await,
            ["{\"a\": 1}", "  x "]
        );
        assert_eq!(lines_of(b"a\rb\r").await, ["a\rb\r"]);
    }

    #[tokio::test]
    async fn errors_name_the_line() {
        let mut reader = LineReader::new(&b"ok\n\xff\xfe\n"[..], "items.txt");
        assert_eq!(reader.next_line().await.expect("ok").as_deref(), Some("ok"));
        let error = reader.next_line().await.expect_err("not UTF-8");
        assert_eq!(error.to_string(), "line 2 of items.txt is not valid UTF-8");
    }

    #[test]
    fn json_lines_are_checked_one_value_per_line() {
        assert!(check_json(r#"{"a": [1, 2]}"#, 1, "x.jsonl").is_ok());
        assert!(check_json("  42 ", 1, "x.jsonl").is_ok());
        assert!(check_json(r#""text""#, 1, "x.jsonl").is_ok());
        let error = check_json("{\"a\": 1} {\"b\": 2}", 3, "x.jsonl").expect_err("two values");
        assert!(
            error
                .to_string()
                .starts_with("line 3 of x.jsonl is not JSON (trailing characters"),
            "{error}"
        );
        assert!(check_json("", 4, "x.jsonl").is_err());
        assert!(check_json("not json", 5, "x.jsonl").is_err());
    }
}

//! CSV inputs: the first row names the columns, and every later row becomes one item, a JSON
//! object of column name to value (strings, in column order), so that JSON tasks such as `jq`
//! can address fields by name. Quoted fields may hold commas and newlines; rows are read one at
//! a time, never the whole file.
use anyhow::Context as _;
use csv_async::{AsyncReader, AsyncReaderBuilder, StringRecord};
use serde_json::{Map, Value};
use tokio::io::AsyncRead;

/// Reads CSV rows as JSON object texts.
pub(crate) struct CsvRows<R> {
    reader: AsyncReader<R>,
    name: String,
    columns: Option<Vec<String>>,
    record: StringRecord,
    rows: u64,
}

impl<R: AsyncRead + Unpin + Send> CsvRows<R> {
    /// Reads from `reader`; `name` is how errors refer to it.
    pub(crate) fn new(reader: R, name: impl Into<String>) -> Self {
        let reader = AsyncReaderBuilder::new()
            .has_headers(true)
            .create_reader(reader);
        CsvRows {
            reader,
            name: name.into(),
            columns: None,
            record: StringRecord::new(),
            rows: 0,
        }
    }

    /// The next row as a JSON object text, or `None` after the last row.
    pub(crate) async fn next_row(&mut self) -> anyhow::Result<Option<String>> {
        if self.columns.is_none() {
            self.columns = Some(self.read_columns().await?);
        }
        let more = self
            .reader
            .read_record(&mut self.record)
            .await
            .with_context(|| format!("cannot read {} as CSV", self.name))?;
        if !more {
            return Ok(None);
        }
        self.rows += 1;
        let columns = self.columns.as_deref().unwrap_or_default();
        let object: Map<String, Value> = columns
            .iter()
            .zip(self.record.iter())
            .map(|(column, value)| (column.clone(), Value::String(value.to_owned())))
            .collect();
        Ok(Some(Value::Object(object).to_string()))
    }

    async fn read_columns(&mut self) -> anyhow::Result<Vec<String>> {
        let headers = self
            .reader
            .headers()
            .await
            .with_context(|| format!("cannot read the header row of {} as CSV", self.name))?;
        let columns: Vec<String> = headers.iter().map(str::to_owned).collect();
        for (position, column) in columns.iter().enumerate() {
            if columns[..position].contains(column) {
                anyhow::bail!(
                    "the header row of {} names column {column:?} twice; each row becomes a \
                     JSON object, so column names must be unique",
                    self.name
                );
            }
        }
        Ok(columns)
    }

    /// Rows returned so far (the header row not counted).
    pub(crate) fn rows_read(&self) -> u64 {
        self.rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn rows_of(bytes: &'static [u8]) -> anyhow::Result<Vec<String>> {
        let mut rows = CsvRows::new(bytes, "rows.csv");
        let mut all = Vec::new();
        while let Some(row) = rows.next_row().await? {
            all.push(row);
        }
        assert_eq!(rows.rows_read(), all.len() as u64);
        Ok(all)
    }

    #[tokio::test]
    async fn rows_become_objects_in_column_order() {
        let rows = rows_of(b"id,text,stars\n1,hello,5\r\n2,\"a, b\",3\n")
            .await
            .expect("valid CSV");
        assert_eq!(
            rows,
            [
                r#"{"id":"1","text":"hello","stars":"5"}"#,
                r#"{"id":"2","text":"a, b","stars":"3"}"#,
            ]
        );
    }

    #[tokio::test]
    async fn quoted_fields_keep_newlines_and_quotes() {
        let rows = rows_of(b"k,v\nx,\"two\nlines \"\"quoted\"\"\"\n")
            .await
            .expect("valid CSV");
        assert_eq!(rows, [r#"{"k":"x","v":"two\nlines \"quoted\""}"#]);
    }

    #[tokio::test]
    async fn a_header_alone_or_nothing_is_no_rows() {
        assert!(rows_of(b"a,b\n").await.expect("valid").is_empty());
        assert!(rows_of(b"").await.expect("valid").is_empty());
    }

    #[tokio::test]
    async fn ragged_rows_and_repeated_columns_are_errors() {
        let ragged = rows_of(b"a,b\n1,2\n3\n").await.expect_err("ragged");
        let message = format!("{ragged:#}");
        assert!(
            message.starts_with("cannot read rows.csv as CSV: ") && message.contains("line: 3"),
            "{message}"
        );
        let repeated = rows_of(b"a,b,a\n1,2,3\n").await.expect_err("repeated");
        assert!(
            repeated.to_string().contains("names column \"a\" twice"),
            "{repeated}"
        );
    }
}

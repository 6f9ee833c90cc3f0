//! Reading a `submit`'s items: the input file (or standard input) is read one item at a time,
//! as plain lines or JSON Lines ([`lines`]) or CSV rows ([`csv`]), and the items are grouped
//! into `UploadBatch` messages as they are read. A reader task feeds a small bounded channel,
//! so at most a few messages are in memory however large the file; the channel's receiving end
//! becomes the request stream.
//!
//! An upload that stops half-way must not become a batch: the server queues a batch only once
//! the request stream ends cleanly. So the stream ends only when the reader says the input is
//! complete ([`Frame::End`]); if the reader fails instead, the stream stays open until the call
//! is dropped, which resets it and the server discards what it had received.
use std::path::Path;

use anyhow::Context as _;
use futures::{Stream, StreamExt as _};
use sluice::api::{self, upload_batch_request::Content};
use tokio::io::{AsyncRead, BufReader};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::args::InputFormat;

mod csv;
mod lines;

/// Most items in one `UploadBatch` message.
pub(crate) const MAX_ITEMS_PER_MESSAGE: usize = 1_000;
/// Most item bytes in one `UploadBatch` message (a longer line still gets a message of its own).
pub(crate) const MAX_BYTES_PER_MESSAGE: usize = 1 << 20;
/// Messages buffered between the reader task and the upload.
const CHANNEL_CAPACITY: usize = 4;

/// What the reader task sends to the upload.
#[derive(Debug)]
pub(crate) enum Frame {
    /// The next message of the upload.
    Message(api::UploadBatchRequest),
    /// The input is complete: the upload may end.
    End,
}

/// An opened input: a file, or standard input for `-`.
pub(crate) struct Input {
    name: String,
    reader: Box<dyn AsyncRead + Send + Unpin>,
}

/// Reads an input's items, in one of the formats.
enum ItemReader {
    Lines {
        lines: lines::LineReader<BufReader<Box<dyn AsyncRead + Send + Unpin>>>,
        check_json: bool,
    },
    Csv(csv::CsvRows<Box<dyn AsyncRead + Send + Unpin>>),
}

impl ItemReader {
    fn new(input: Input, format: InputFormat) -> Self {
        match format {
            InputFormat::Lines | InputFormat::Jsonl => ItemReader::Lines {
                lines: lines::LineReader::new(BufReader::new(input.reader), input.name),
                check_json: format == InputFormat::Jsonl,
            },
            InputFormat::Csv => ItemReader::Csv(csv::CsvRows::new(input.reader, input.name)),
        }
    }

    /// The next item's text, or `None` at the end of the input.
    async fn next_item(&mut self) -> anyhow::Result<Option<String>> {
        match self {
            ItemReader::Lines { lines, check_json } => {
                let line = lines.next_line().await?;
                if let (Some(line), true) = (&line, *check_json) {
                    lines::check_json(line, lines.lines_read(), lines.name())?;
                }
                Ok(line)
            }
            ItemReader::Csv(rows) => rows.next_row().await,
        }
    }

    fn items_read(&self) -> u64 {
        match self {
            ItemReader::Lines { lines, .. } => lines.lines_read(),
            ItemReader::Csv(rows) => rows.rows_read(),
        }
    }
}

impl Input {
    /// Opens `path`; `-` means standard input.
    pub(crate) async fn open(path: &Path) -> anyhow::Result<Self> {
        if path == Path::new("-") {
            return Ok(Input {
                name: "standard input".to_owned(),
                reader: Box::new(tokio::io::stdin()),
            });
        }
        let name = path.display().to_string();
        let file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("cannot open {name}"))?;
        Ok(Input {
            name,
            reader: Box::new(file),
        })
    }

    /// An input reading from memory (tests).
    #[cfg(test)]
    pub(crate) fn from_bytes(name: &str, bytes: &'static [u8]) -> Self {
        Input {
            name: name.to_owned(),
            reader: Box::new(bytes),
        }
    }
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Input")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// [`MAX_BYTES_PER_MESSAGE`] bytes.
#[derive(Debug, Default)]
pub(crate) struct PieceBuilder {
    items: Vec<api::Payload>,
    bytes: usize,
}

impl PieceBuilder {
    /// Adds one text item; returns the previous piece if this item did not fit in it.
    pub(crate) fn push(&mut self, text: String) -> Option<Vec<api::Payload>> {
        let full = !self.items.is_empty()
            && (self.items.len() >= MAX_ITEMS_PER_MESSAGE
                || self.bytes + text.len() > MAX_BYTES_PER_MESSAGE);
        let previous = if full { self.take() } else { None };
        self.bytes += text.len();
        self.items.push(api::Payload {
            kind: Some(api::payload::Kind::Text(text)),
        });
        previous
    }

    /// The items not handed out yet, if any.
    pub(crate) fn take(&mut self) -> Option<Vec<api::Payload>> {
        self.bytes = 0;
        let items = std::mem::take(&mut self.items);
        (!items.is_empty()).then_some(items)
    }
}

fn items_message(items: Vec<api::Payload>) -> Frame {
    Frame::Message(api::UploadBatchRequest {
        content: Some(Content::Items(api::UploadItems { items })),
    })
}

/// Why [`feed`] stopped before the end of the input.
#[derive(Debug)]
pub(crate) enum FeedError {
    /// The input could not be read: the upload must be abandoned.
    Input(anyhow::Error),
    /// The upload stopped taking messages: the server has answered (with an error).
    UploadClosed,
}

/// Sends `header`, then every item of `input` read as `format`, then [`Frame::End`]. Returns
/// the number of items sent.
pub(crate) async fn feed(
    input: Input,
    format: InputFormat,
    header: api::UploadHeader,
    sender: mpsc::Sender<Frame>,
) -> Result<u64, FeedError> {
    let header = api::UploadBatchRequest {
        content: Some(Content::Header(header)),
    };
    send(&sender, Frame::Message(header)).await?;
    let mut items = ItemReader::new(input, format);
    let mut pieces = PieceBuilder::default();
    while let Some(item) = items.next_item().await.map_err(FeedError::Input)? {
        if let Some(piece) = pieces.push(item) {
            send(&sender, items_message(piece)).await?;
        }
    }
    if let Some(piece) = pieces.take() {
        send(&sender, items_message(piece)).await?;
    }
    send(&sender, Frame::End).await?;
    Ok(items.items_read())
}

async fn send(sender: &mpsc::Sender<Frame>, frame: Frame) -> Result<(), FeedError> {
    sender
        .send(frame)
        .await
        .map_err(|_| FeedError::UploadClosed)
}

/// A channel for [`feed`] to fill.
pub(crate) fn channel() -> (mpsc::Sender<Frame>, mpsc::Receiver<Frame>) {
    mpsc::channel(CHANNEL_CAPACITY)
}

/// The request stream of an upload: the messages the reader sends, ending only at its
/// [`Frame::End`]. If the reader stops without one, the stream never ends (see the module doc).
pub(crate) fn request_stream(
    receiver: mpsc::Receiver<Frame>,
) -> impl Stream<Item = api::UploadBatchRequest> + Send + 'static {
    ReceiverStream::new(receiver)
        .map(Some)
        .chain(futures::stream::once(async { None }))
        .scan((), |_, frame| async move {
            match frame {
                Some(Frame::Message(message)) => Some(message),
                Some(Frame::End) => None,
                // The reader stopped without finishing: hold the stream open so that the call
                // is abandoned, never completed with part of the input.
                None => std::future::pending().await,
            }
        })
}

#[cfg(test)]
mod tests {
    use futures::FutureExt as _;

    use super::*;

    #[test]
    fn pieces_close_at_the_item_count() {
        let mut pieces = PieceBuilder::default();
        let mut sent = Vec::new();
        for index in 0..2_500 {
            sent.extend(pieces.push(index.to_string()).map(|piece| piece.len()));
        }
        sent.extend(pieces.take().map(|piece| piece.len()));
        assert_eq!(sent, [1_000, 1_000, 500]);
        assert!(pieces.take().is_none());
    }

    #[test]
    fn pieces_close_at_the_byte_count() {
        let mut pieces = PieceBuilder::default();
        let half = "x".repeat(MAX_BYTES_PER_MESSAGE / 2);
        assert!(pieces.push(half.clone()).is_none());
        assert!(pieces.push(half.clone()).is_none());
        assert_eq!(
            pieces.push("y".to_owned()).map(|piece| piece.len()),
            Some(2)
        );
        // A line larger than a message travels alone.
        let huge = "z".repeat(MAX_BYTES_PER_MESSAGE + 1);
        assert_eq!(pieces.push(huge).map(|piece| piece.len()), Some(1));
        assert_eq!(pieces.push(half).map(|piece| piece.len()), Some(1));
    }

    #[tokio::test]
    async fn a_complete_input_becomes_a_complete_stream() {
        let (sender, receiver) = channel();
        let header = api::UploadHeader {
            task: "echo".into(),
            ..Default::default()
        };
        let input = Input::from_bytes("test", b"a\nb\n");
        let (sent, messages) = tokio::join!(
            feed(input, InputFormat::Lines, header, sender),
            request_stream(receiver).collect::<Vec<_>>()
        );
        assert_eq!(sent.ok(), Some(2));
        assert_eq!(messages.len(), 2);
        assert!(matches!(&messages[0].content, Some(Content::Header(h)) if h.task == "echo"));
        let Some(Content::Items(piece)) = &messages[1].content else {
            panic!("no items")
        };
        let texts: Vec<_> = piece
            .items
            .iter()
            .map(|item| match &item.kind {
                Some(api::payload::Kind::Text(text)) => text.as_str(),
                _ => "?",
            })
            .collect();
        assert_eq!(texts, ["a", "b"]);
    }

    #[tokio::test]
    async fn formats_decide_what_an_item_is() {
        async fn items_of(
            format: InputFormat,
            bytes: &'static [u8],
        ) -> Result<Vec<String>, String> {
            let (sender, receiver) = channel();
            let input = Input::from_bytes("input", bytes);
            let header = api::UploadHeader::default();
            let (fed, messages) = tokio::join!(
                feed(input, format, header, sender),
                ReceiverStream::new(receiver).collect::<Vec<_>>()
            );
            if let Err(FeedError::Input(error)) = fed {
                return Err(error.to_string());
            }
            Ok(messages
                .into_iter()
                .filter_map(|frame| match frame {
                    Frame::Message(api::UploadBatchRequest {
                        content: Some(Content::Items(piece)),
                    }) => Some(piece.items),
                    _ => None,
                })
                .flatten()
                .map(|item| match item.kind {
                    Some(api::payload::Kind::Text(text)) => text,
                    other => panic!("not text: {other:?}"),
                })
                .collect())
        }
        let mixed = b"{\"a\":1}\nplain\n";
        assert_eq!(
            items_of(InputFormat::Lines, mixed).await,
            Ok(vec!["{\"a\":1}".to_owned(), "plain".to_owned()])
        );
        let error = items_of(InputFormat::Jsonl, mixed)
            .await
            .expect_err("not JSON");
        assert!(error.starts_with("line 2 of input is not JSON"), "{error}");
        assert_eq!(
            items_of(InputFormat::Csv, b"a,b\n1,x\n").await,
            Ok(vec![r#"{"a":"1","b":"x"}"#.to_owned()])
        );
    }

    #[tokio::test]
    async fn an_unfinished_input_never_ends_the_stream() {
        let (sender, receiver) = channel();
        let header = api::UploadBatchRequest {
            content: Some(Content::Header(api::UploadHeader::default())),
        };
        sender.send(Frame::Message(header)).await.expect("open");
        drop(sender); // the reader failed
        let mut stream = Box::pin(request_stream(receiver));
        assert!(stream.next().await.is_some());
        assert!(
            stream.next().now_or_never().is_none(),
            "the stream must stay open"
        );
    }
}

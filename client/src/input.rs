//! Reading a `submit`'s items: the input file (or standard input) is read line by line, every
//! line one text item, and the lines are grouped into `UploadBatch` messages as they are read.
//! A reader task feeds a small bounded channel, so at most a few messages are in memory
//! however large the file; the channel's receiving end becomes the request stream.
//!
//! An upload that stops half-way must not become a batch: the server queues a batch only once
//! the request stream ends cleanly. So the stream ends only when the reader says the input is
//! complete ([`Frame::End`]); if the reader fails instead, the stream stays open until the call
//! is dropped, which resets it and the server discards what it had received.
use std::path::Path;

use anyhow::Context as _;
use futures::{Stream, StreamExt as _};
use sluice::api::{self, upload_batch_request::Content};
use tokio::io::{AsyncBufRead, AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, BufReader};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Most items in one `UploadBatch` message.
pub(crate) const MAX_ITEMS_PER_MESSAGE: usize = 1_000;
/// Most item bytes in one `UploadBatch` message (a longer line still gets a message of its own).
pub(crate) const MAX_BYTES_PER_MESSAGE: usize = 1 << 20;
/// Longest line accepted: larger than any item a server takes, so only a file that is not
/// line-based at all hits it, before it fills memory.
const MAX_LINE_BYTES: usize = 16 << 20;
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
}

/// Groups items into messages of at most [`MAX_ITEMS_PER_MESSAGE`] items and
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

/// Sends `header`, then every line of `input` as items, then [`Frame::End`]. Returns the number
/// of items sent.
pub(crate) async fn feed(
    input: Input,
    header: api::UploadHeader,
    sender: mpsc::Sender<Frame>,
) -> Result<u64, FeedError> {
    let header = api::UploadBatchRequest {
        content: Some(Content::Header(header)),
    };
    send(&sender, Frame::Message(header)).await?;
    let mut lines = LineReader::new(BufReader::new(input.reader), input.name);
    let mut pieces = PieceBuilder::default();
    while let Some(line) = lines.next_line().await.map_err(FeedError::Input)? {
        if let Some(piece) = pieces.push(line) {
            send(&sender, items_message(piece)).await?;
        }
    }
    if let Some(piece) = pieces.take() {
        send(&sender, items_message(piece)).await?;
    }
    send(&sender, Frame::End).await?;
    Ok(lines.lines_read())
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
            feed(input, header, sender),
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

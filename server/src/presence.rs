//! Whether an upload's client is still there when its stream ends.
//!
//! tonic reports a request stream that its client cancelled (HTTP/2 RST_STREAM with CANCEL) as
//! a clean end, exactly like a client that finished sending: sealing then would accept a
//! truncated batch. hyper, though, looks for a reset each time the call's handler waits, and
//! drops the handler when it finds one. So the upload, which runs on a task of its own, asks
//! the handler before it seals; the handler waits once (giving hyper that look) and answers. A
//! handler dropped for a reset never answers, and the upload is discarded.
use std::future::Future;

use tokio::sync::{mpsc, oneshot};

/// The upload's side: asks.
#[derive(Debug)]
pub(crate) struct Asker(mpsc::Sender<oneshot::Sender<()>>);

/// The call handler's side: answers while the call lasts.
#[derive(Debug)]
pub(crate) struct Answerer(mpsc::Receiver<oneshot::Sender<()>>);

/// A connected asker and answerer.
pub(crate) fn pair() -> (Asker, Answerer) {
    let (questions, asked) = mpsc::channel(1);
    (Asker(questions), Answerer(asked))
}

impl Asker {
    /// Whether the client has not cancelled its call.
    pub(crate) async fn client_is_there(&self) -> bool {
        let (answer, answered) = oneshot::channel();
        self.0.send(answer).await.is_ok() && answered.await.is_ok()
    }
}

impl Answerer {
    /// Awaits `call` (the handler's work), answering the asker meanwhile.
    pub(crate) async fn answer_while<T>(mut self, call: impl Future<Output = T>) -> T {
        tokio::pin!(call);
        loop {
            tokio::select! {
                result = &mut call => return result,
                Some(answer) = self.0.recv() => {
                    // One pending poll: hyper checks for a reset before polling us again.
                    tokio::task::yield_now().await;
                    let _ = answer.send(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_live_handler_answers() {
        let (asker, answerer) = pair();
        let asked = answerer.answer_while(async move { asker.client_is_there().await });
        assert!(asked.await);
    }

    #[tokio::test]
    async fn a_dropped_handler_does_not() {
        let (asker, answerer) = pair();
        drop(answerer);
        assert!(!asker.client_is_there().await);
    }
}

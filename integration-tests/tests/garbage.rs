//! Hostile input, generated: property-based requests with arbitrary field values (unknown
//! tasks and enum values, broken JSON, odd ids and tokens, empty and oversized items, missing
//! payloads, huge numbers) to every RPC, and raw bytes that are not protobuf at all. Every call
//! gets an answer with a status a client can act on — never a panic, never INTERNAL for a
//! message that decoded — and afterwards the server still serves and a worker still completes
//! a real batch.
use std::pin::Pin;

use futures::{Stream, StreamExt};
use integration_tests::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use prost::bytes::{Buf, BufMut};
use sluice::api::{self, upload_batch_request::Content, BatchState};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::Code;

const SERVICE: &str = "/sluice.v1.BatchService/";
const METHODS: [&str; 9] = [
    "SubmitBatch",
    "CreateBatch",
    "UploadBatch",
    "WatchBatch",
    "GetBatch",
    "ListBatches",
    "CancelBatch",
    "ListResults",
    "ListTasks",
];

/// Sends and receives message bodies as they are, so a test can send what no stub would.
#[derive(Debug, Clone, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut body = vec![0; src.remaining()];
        src.copy_to_slice(&mut body);
        Ok(Some(body))
    }
}

/// Calls `method` with `messages` as its request bodies and reads the reply to its end;
/// returns the status it ended with (OK if it ended cleanly).
async fn call_raw(channel: &Channel, method: &str, messages: Vec<Vec<u8>>) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    if let Err(error) = grpc.ready().await {
        return tonic::Status::unavailable(error.to_string());
    }
    let path: PathAndQuery = format!("{SERVICE}{method}").parse().expect("path");
    let requests: Pin<Box<dyn Stream<Item = Vec<u8>> + Send>> =
        Box::pin(futures::stream::iter(messages));
    let response = grpc
        .streaming(tonic::Request::new(requests), path, RawCodec)
        .await;
    let mut replies = match response {
        Ok(response) => response.into_inner(),
        Err(status) => return status,
    };
    loop {
        match replies.next().await {
            None => return tonic::Status::ok(""),
            Some(Ok(_)) => {}
            Some(Err(status)) => return status,
        }
    }
}

/// Statuses a decodable request may end with: success, or a refusal a client can act on.
fn acceptable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Ok | Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition
    )
}

fn payload() -> impl Strategy<Value = api::Payload> {
    prop_oneof![
        1 => Just(api::Payload { kind: None }),
        8 => ".{0,20}".prop_map(|text| api::Payload {
            kind: Some(api::payload::Kind::Text(text)),
        }),
        2 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(|bytes| api::Payload {
            kind: Some(api::payload::Kind::Binary(bytes)),
        }),
    ]
}

fn task() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("echo".to_owned()),
        1 => Just("jq".to_owned()),
        1 => Just("sha256".to_owned()),
        1 => Just("sleep".to_owned()),
        1 => ".{0,12}",
    ]
}

fn params() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => Just(String::new()),
        1 => Just(r#"{"filter": ".a"}"#.to_owned()),
        1 => Just(r#"{"filter": ".a |"}"#.to_owned()),
        1 => Just(r#"{"rounds": 0}"#.to_owned()),
        1 => Just(r#"{"ms": 99999999999999999999}"#.to_owned()),
        1 => Just("[]".to_owned()),
        1 => ".{0,30}",
    ]
}

/// Unset, small (0 is refused) or anything, so that some generated batches are valid.
fn chunk_size() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![
        Just(None),
        (0..12_u32).prop_map(Some),
        any::<u32>().prop_map(Some)
    ]
}

fn batch_id() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0190b6b5-0f6e-7c5e-9a3e-0123456789ab".to_owned()),
        Just(String::new()),
        ".{0,40}",
    ]
}

fn create_request() -> impl Strategy<Value = api::CreateBatchRequest> {
    prop_oneof![any_create_request(), valid_create_request()]
}

/// A batch the server accepts, so accepted requests run through the generated mix too.
fn valid_create_request() -> impl Strategy<Value = api::CreateBatchRequest> {
    (
        proptest::collection::vec("[a-z0-9 ]{0,10}", 1..6),
        proptest::option::of(1..5_u32),
    )
        .prop_map(|(items, chunk_size)| api::CreateBatchRequest {
            task: "echo".to_owned(),
            items: items.iter().map(|item| text(item)).collect(),
            chunk_size,
            ..Default::default()
        })
}

fn any_create_request() -> impl Strategy<Value = api::CreateBatchRequest> {
    (
        task(),
        params(),
        proptest::collection::vec(payload(), 0..8),
        chunk_size(),
        ".{0,8}",
    )
        .prop_map(|(task, params, items, chunk_size, idempotency_key)| {
            api::CreateBatchRequest {
                task,
                params,
                items,
                chunk_size,
                idempotency_key,
            }
        })
}

/// One generated call: a method and its request bodies, each a well-formed message.
fn structured_call() -> impl Strategy<Value = (&'static str, Vec<Vec<u8>>)> {
    use prost::Message as _;
    let upload = (
        proptest::option::of((task(), params(), chunk_size())),
        proptest::collection::vec(proptest::collection::vec(payload(), 0..4), 0..3),
    )
        .prop_map(|(header, pieces)| {
            let mut messages = Vec::new();
            if let Some((task, params, chunk_size)) = header {
                let header = api::UploadHeader {
                    task,
                    params,
                    chunk_size,
                    ..Default::default()
                };
                messages.push(
                    api::UploadBatchRequest {
                        content: Some(Content::Header(header)),
                    }
                    .encode_to_vec(),
                );
            }
            for items in pieces {
                messages.push(
                    api::UploadBatchRequest {
                        content: Some(Content::Items(api::UploadItems { items })),
                    }
                    .encode_to_vec(),
                );
            }
            messages
        });
    prop_oneof![
        create_request().prop_map(|request| ("CreateBatch", vec![request.encode_to_vec()])),
        create_request().prop_map(|request| ("SubmitBatch", vec![request.encode_to_vec()])),
        upload.prop_map(|messages| ("UploadBatch", messages)),
        (batch_id(), any::<u64>()).prop_map(|(batch_id, after_sequence)| (
            "WatchBatch",
            vec![api::WatchBatchRequest {
                batch_id,
                after_sequence
            }
            .encode_to_vec()]
        )),
        batch_id().prop_map(|batch_id| (
            "GetBatch",
            vec![api::GetBatchRequest { batch_id }.encode_to_vec()]
        )),
        batch_id().prop_map(|batch_id| (
            "CancelBatch",
            vec![api::CancelBatchRequest { batch_id }.encode_to_vec()]
        )),
        (batch_id(), any::<bool>(), any::<u64>()).prop_map(
            |(batch_id, failed_only, start_index)| (
                "ListResults",
                vec![api::ListResultsRequest {
                    batch_id,
                    failed_only,
                    start_index
                }
                .encode_to_vec()]
            )
        ),
        (
            prop_oneof![0..100_u32, any::<u32>()],
            prop_oneof![Just(String::new()), ".{0,20}"],
            prop_oneof![0..7_i32, any::<i32>()],
        )
            .prop_map(|(page_size, page_token, state)| (
                "ListBatches",
                vec![api::ListBatchesRequest {
                    page_size,
                    page_token,
                    state
                }
                .encode_to_vec()]
            )),
    ]
}

/// Any method, with bodies of arbitrary bytes.
fn raw_call() -> impl Strategy<Value = (&'static str, Vec<Vec<u8>>)> {
    (
        proptest::sample::select(METHODS.to_vec()),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..3),
    )
}

#[test]
fn generated_garbage_gets_clear_errors_and_the_server_keeps_serving() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (env, address, channel) = runtime.block_on(async {
        let mut env = TestEnv::new("garbage").await;
        let mut config = env.server_config();
        config.max_item_bytes = 32;
        config.max_items = 8;
        let address = env.start_server_with(config).await;
        // Generated batches that happen to be valid run to the end (SubmitBatch waits for it).
        env.start_worker(2).await;
        let channel = tonic::transport::Channel::from_shared(format!("http://{address}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        (env, address, channel)
    });

    let mut runner = TestRunner::new(Config {
        cases: 200,
        failure_persistence: None,
        ..Config::default()
    });
    let codes = std::sync::Mutex::new(std::collections::BTreeMap::<String, u32>::new());
    runner
        .run(&structured_call(), |(method, messages)| {
            let status = runtime.block_on(call_raw(&channel, method, messages));
            *codes
                .lock()
                .expect("not poisoned")
                .entry(format!("{:?}", status.code()))
                .or_default() += 1;
            prop_assert!(acceptable(&status), "{method}: {status:?}");
            Ok(())
        })
        .expect("every well-formed request gets an answer a client can act on");
    let codes = codes.into_inner().expect("not poisoned");
    println!("statuses of generated requests: {codes:?}");
    // The generator reaches both sides: accepted requests and refused ones.
    assert!(
        codes.get("Ok").is_some_and(|count| *count > 10),
        "{codes:?}"
    );
    assert!(
        codes
            .get("InvalidArgument")
            .is_some_and(|count| *count > 10),
        "{codes:?}"
    );
    runner
        .run(&raw_call(), |(method, messages)| {
            let status = runtime.block_on(call_raw(&channel, method, messages));
            // Bytes that do not decode are INTERNAL by gRPC's own rules ("error parsing the
            // request"); everything else must be a refusal a client can act on.
            let undecodable =
                status.code() == Code::Internal && status.message().contains("failed to decode");
            prop_assert!(acceptable(&status) || undecodable, "{method}: {status:?}");
            Ok(())
        })
        .expect("undecodable requests are refused");

    runtime.block_on(async {
        wait_until_serving(address).await;
        let mut client = env.client(address).await;
        let batch = create_batch(&mut client, "echo", "", json_items(3), 2).await;
        let terminal = check_event_stream(&watch_to_end(&mut client, &batch.id).await);
        assert_eq!(terminal.state(), BatchState::Succeeded);
        assert_eq!(done_counts(&terminal), (3, 0, 2));
        env.finish().await;
    });
}

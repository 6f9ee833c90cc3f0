//! Every validation rule answers INVALID_ARGUMENT naming the field, and writes nothing: no
//! batch, chunk or result document, no idempotency key, no stream message.
use std::time::Duration;

use integration_tests::*;
use sluice::api;
use tonic::Code;

struct Case {
    name: &'static str,
    request: api::CreateBatchRequest,
    field: &'static str,
}

fn create(task: &str, params: &str, items: Vec<api::Payload>) -> api::CreateBatchRequest {
    api::CreateBatchRequest {
        task: task.into(),
        params: params.into(),
        items,
        ..Default::default()
    }
}

async fn assert_nothing_written(env: &TestEnv, case: &str) {
    for collection in ["batches", "chunks", "results", "idempotency_keys"] {
        let documents = env.documents(collection).await;
        assert!(
            documents.is_empty(),
            "{case}: {collection} holds {documents:?}"
        );
    }
    assert_eq!(env.stream_length().await, 0, "{case}: a chunk was enqueued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_batch_is_rejected_and_writes_nothing() {
    let mut env = TestEnv::new("validate").await;
    let mut config = sluice_server::ServerConfig::for_tests(env.connection.clone());
    config.max_items = 5;
    config.max_item_bytes = 16;
    config.max_chunk_size = 100;
    config.max_message_bytes = 2_000;
    let address = env.start_server_with(config).await;
    let mut client = env.client(address).await;
    let one = || json_items(1);
    let cases = vec![
        Case {
            name: "unknown task",
            request: create("nope", "", one()),
            field: "task",
        },
        Case {
            name: "params not JSON",
            request: create("jq", "{", one()),
            field: "params",
        },
        Case {
            name: "params not an object",
            request: create("echo", "[1]", one()),
            field: "params",
        },
        Case {
            name: "bad jq filter",
            request: create("jq", r#"{"filter": ".a |"}"#, one()),
            field: "params",
        },
        Case {
            name: "missing jq filter",
            request: create("jq", "{}", one()),
            field: "params",
        },
        Case {
            name: "unknown param",
            request: create("sleep", r#"{"secs": 1}"#, one()),
            field: "params",
        },
        Case {
            name: "sha256 rounds 0",
            request: create("sha256", r#"{"rounds": 0}"#, one()),
            field: "params",
        },
        Case {
            name: "empty batch",
            request: create("echo", "", vec![]),
            field: "items",
        },
        Case {
            name: "too many items",
            request: create("echo", "", json_items(6)),
            field: "items",
        },
        Case {
            name: "item over the size limit",
            request: create(
                "echo",
                "",
                vec![text("ok"), text("this item is 27 bytes long")],
            ),
            field: "items[1]",
        },
        Case {
            name: "item with no payload",
            request: create("echo", "", vec![text("ok"), api::Payload { kind: None }]),
            field: "items[1]",
        },
        Case {
            name: "chunk size 0",
            request: api::CreateBatchRequest {
                chunk_size: Some(0),
                ..create("echo", "", one())
            },
            field: "chunk_size",
        },
        Case {
            name: "chunk size over the limit",
            request: api::CreateBatchRequest {
                chunk_size: Some(101),
                ..create("echo", "", one())
            },
            field: "chunk_size",
        },
        Case {
            name: "idempotency key too long",
            request: api::CreateBatchRequest {
                idempotency_key: "k".repeat(257),
                ..create("echo", "", one())
            },
            field: "idempotency_key",
        },
        Case {
            name: "message over the size limit",
            request: create(
                "echo",
                &format!(r#"{{"pad": "{}"}}"#, "x".repeat(3_000)),
                one(),
            ),
            field: "request",
        },
    ];
    for case in cases {
        let status = client
            .create_batch(case.request.clone())
            .await
            .expect_err(case.name);
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{}: {status:?}",
            case.name
        );
        assert!(
            status.message().starts_with(&format!("{}: ", case.field)),
            "{}: message {:?} does not name {}",
            case.name,
            status.message(),
            case.field
        );
        let submit = api::SubmitBatchRequest {
            task: case.request.task.clone(),
            params: case.request.params.clone(),
            items: case.request.items.clone(),
            chunk_size: case.request.chunk_size,
            idempotency_key: case.request.idempotency_key.clone(),
        };
        let status = client
            .submit_batch(submit)
            .await
            .map(|_| ())
            .expect_err(case.name);
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "submit {}: {status:?}",
            case.name
        );
        assert_nothing_written(&env, case.name).await;
    }
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_upload_leaves_nothing_behind() {
    let mut env = TestEnv::new("upload").await;
    let mut config = sluice_server::ServerConfig::for_tests(env.connection.clone());
    config.max_item_bytes = 16;
    let address = env.start_server_with(config).await;
    let mut client = env.client(address).await;

    // Four full chunks are written before item 10 turns out to be too large: all are removed.
    let mut bad_piece = json_items(5);
    bad_piece.push(text("this item is over sixteen bytes"));
    let messages = vec![
        echo_upload_header(2),
        upload_items(json_items(5)),
        upload_items(bad_piece),
    ];
    let status = client
        .upload_batch(futures::stream::iter(messages))
        .await
        .expect_err("rejected");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("items[10]: "),
        "{}",
        status.message()
    );
    assert_nothing_written(&env, "oversized item mid-upload").await;

    let status = client
        .upload_batch(futures::stream::iter(vec![upload_items(json_items(1))]))
        .await
        .expect_err("no header");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("header: "),
        "{}",
        status.message()
    );
    let status = client
        .upload_batch(futures::stream::iter(vec![echo_upload_header(2)]))
        .await
        .expect_err("no items");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("items: "),
        "{}",
        status.message()
    );
    let status = client
        .upload_batch(futures::stream::iter(vec![
            echo_upload_header(2),
            echo_upload_header(2),
        ]))
        .await
        .expect_err("two headers");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_nothing_written(&env, "malformed uploads").await;

    // A good upload of 7 items in pieces makes 4 chunks.
    let messages = vec![
        echo_upload_header(2),
        upload_items(json_items(3)),
        upload_items(json_items(4)),
    ];
    let batch = client
        .upload_batch(futures::stream::iter(messages))
        .await
        .expect("uploaded");
    let counters = batch
        .into_inner()
        .batch
        .and_then(|b| b.counters)
        .expect("counters");
    assert_eq!((counters.items_total, counters.chunks_total), (7, 4));
    env.finish().await;
}

/// A client that goes away mid-upload (its call cancelled: HTTP/2 RST_STREAM) leaves nothing:
/// the chunks already stored and enqueued are withdrawn and deleted with the open batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_the_client_abandons_leaves_nothing_behind() {
    let mut env = TestEnv::new("abandon").await;
    let address = env.start_server().await;
    let mut client = env.client(address).await;
    let (pieces, received) = tokio::sync::mpsc::channel(4);
    pieces
        .send(echo_upload_header(2))
        .await
        .expect("send header");
    // Ten items make five chunks: the first four are stored and enqueued at once.
    pieces
        .send(upload_items(json_items(10)))
        .await
        .expect("send items");
    let upload = tokio::spawn(async move {
        client
            .upload_batch(tokio_stream::wrappers::ReceiverStream::new(received))
            .await
    });
    eventually("four chunks enqueued", Duration::from_secs(10), || async {
        (env.stream_length().await == 4).then_some(())
    })
    .await;
    let listed = env
        .client(address)
        .await
        .list_batches(api::ListBatchesRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(listed.batches.is_empty(), "an open upload is invisible");
    // The call is dropped while its request stream is still open (the sender lives on), so
    // the client resets the stream rather than ending it.
    upload.abort();
    eventually("the upload's removal", Duration::from_secs(10), || async {
        let mut left = env.stream_length().await;
        for collection in ["batches", "chunks", "results"] {
            left += env.documents(collection).await.len() as u64;
        }
        eprintln!(
            "DEBUG left {left} stream {} batches {:?}",
            env.stream_length().await,
            env.documents("batches").await
        );
        (left == 0).then_some(())
    })
    .await;
    drop(pieces);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ids_tokens_and_enums_are_rejected() {
    let mut env = TestEnv::new("badids").await;
    let address = env.start_server().await;
    let mut client = env.client(address).await;
    let malformed = "not-a-uuid".to_owned();
    let unknown = uuid::Uuid::now_v7().to_string();

    let get = |batch_id: &String| api::GetBatchRequest {
        batch_id: batch_id.clone(),
    };
    assert_eq!(
        client
            .get_batch(get(&malformed))
            .await
            .expect_err("bad")
            .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        client
            .get_batch(get(&unknown))
            .await
            .expect_err("unknown")
            .code(),
        Code::NotFound
    );
    let watch = |batch_id: &String| api::WatchBatchRequest {
        batch_id: batch_id.clone(),
        after_sequence: 0,
    };
    assert_eq!(
        client
            .watch_batch(watch(&malformed))
            .await
            .map(|_| ())
            .expect_err("bad")
            .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        client
            .watch_batch(watch(&unknown))
            .await
            .map(|_| ())
            .expect_err("unknown")
            .code(),
        Code::NotFound
    );
    let cancel = |batch_id: &String| api::CancelBatchRequest {
        batch_id: batch_id.clone(),
    };
    assert_eq!(
        client
            .cancel_batch(cancel(&malformed))
            .await
            .expect_err("bad")
            .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        client
            .cancel_batch(cancel(&unknown))
            .await
            .expect_err("unknown")
            .code(),
        Code::NotFound
    );
    let results = |batch_id: &String| api::ListResultsRequest {
        batch_id: batch_id.clone(),
        ..Default::default()
    };
    assert_eq!(
        client
            .list_results(results(&unknown))
            .await
            .map(|_| ())
            .expect_err("unknown")
            .code(),
        Code::NotFound
    );

    let list = |page_size, page_token: &str, state| api::ListBatchesRequest {
        page_size,
        page_token: page_token.to_owned(),
        state,
    };
    let status = client
        .list_batches(list(1001, "", 0))
        .await
        .expect_err("page too large");
    assert!(status.code() == Code::InvalidArgument && status.message().starts_with("page_size: "));
    let status = client
        .list_batches(list(10, "forged", 0))
        .await
        .expect_err("tampered token");
    assert!(status.code() == Code::InvalidArgument && status.message().starts_with("page_token: "));
    let status = client
        .list_batches(list(10, "", 42))
        .await
        .expect_err("unknown enum");
    assert!(status.code() == Code::InvalidArgument && status.message().starts_with("state: "));
    assert_nothing_written(&env, "bad ids").await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_newest_first_and_cancel_is_idempotent() {
    let mut env = TestEnv::new("list").await;
    let address = env.start_server().await;
    let mut client = env.client(address).await;
    let mut created = Vec::new();
    for _ in 0..5 {
        let batch = client
            .create_batch(create("echo", "", json_items(1)))
            .await
            .expect("created");
        created.push(batch.into_inner().batch.expect("batch").id);
    }
    // No worker runs, so every batch stays QUEUED; cancel the oldest twice.
    for _ in 0..2 {
        let cancelled = client
            .cancel_batch(api::CancelBatchRequest {
                batch_id: created[0].clone(),
            })
            .await
            .expect("cancel is idempotent");
        assert_eq!(
            cancelled.into_inner().batch.expect("batch").state(),
            api::BatchState::Cancelled
        );
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let request = api::ListBatchesRequest {
            page_size: 2,
            page_token: token.clone(),
            state: 0,
        };
        let page = client
            .list_batches(request)
            .await
            .expect("page")
            .into_inner();
        seen.extend(page.batches.into_iter().map(|batch| batch.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);
    let request = api::ListBatchesRequest {
        state: api::BatchState::Cancelled as i32,
        ..Default::default()
    };
    let cancelled = client
        .list_batches(request)
        .await
        .expect("filtered")
        .into_inner()
        .batches;
    assert_eq!(
        cancelled.iter().map(|b| b.id.clone()).collect::<Vec<_>>(),
        vec![created[0].clone()]
    );
    env.finish().await;
}

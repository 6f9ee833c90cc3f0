//! Each built-in task's output for known inputs, read back through ListResults; jq errors are
//! per-item errors and make the batch FAILED.
use integration_tests::*;
use sluice::api::{self, list_results_response::Outcome, BatchState};

async fn run_batch(
    env: &TestEnv,
    address: std::net::SocketAddr,
    task: &str,
    params: &str,
    items: &[&str],
) -> (api::BatchEvent, Vec<Result<String, String>>) {
    let mut client = env.client(address).await;
    let request = api::SubmitBatchRequest {
        task: task.into(),
        params: params.into(),
        items: items.iter().map(|item| text(item)).collect(),
        chunk_size: Some(2),
        ..Default::default()
    };
    let stream = client
        .submit_batch(request)
        .await
        .expect("submit")
        .into_inner();
    let terminal = check_event_stream(&collect_events(stream, |response| response.event).await);
    let results = list_results(&mut client, &terminal.batch_id).await;
    assert_eq!(results.len(), items.len());
    let outcomes = results
        .into_iter()
        .enumerate()
        .map(|(position, result)| {
            assert_eq!(result.index, position as u64);
            match result.outcome.expect("outcome") {
                Outcome::Output(payload) => match payload.kind.expect("kind") {
                    api::payload::Kind::Text(text) => Ok(text),
                    api::payload::Kind::Binary(_) => Err("unexpected binary".to_owned()),
                },
                Outcome::Error(error) => Err(error),
            }
        })
        .collect();
    (terminal, outcomes)
}

fn outputs(values: &[&str]) -> Vec<Result<String, String>> {
    values.iter().map(|value| Ok((*value).to_owned())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_in_tasks_give_known_outputs() {
    let mut env = TestEnv::new("tasks").await;
    let address = env.start_server().await;
    env.start_worker(2).await;

    let (terminal, results) = run_batch(&env, address, "echo", "", &["a", "b c", ""]).await;
    assert_eq!(terminal.state(), BatchState::Succeeded);
    assert_eq!(results, outputs(&["a", "b c", ""]));

    let (terminal, results) = run_batch(&env, address, "sha256", "", &["abc", ""]).await;
    assert_eq!(terminal.state(), BatchState::Succeeded);
    assert_eq!(
        results,
        outputs(&[
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ])
    );

    let (_, results) = run_batch(&env, address, "wordcount", "", &["to be or not to be"]).await;
    assert_eq!(results, outputs(&[r#"{"be":2,"not":1,"or":1,"to":2}"#]));

    let (terminal, results) = run_batch(&env, address, "sleep", r#"{"ms": 1}"#, &["x"]).await;
    assert_eq!(terminal.state(), BatchState::Succeeded);
    assert_eq!(results, outputs(&["x"]));

    let items = [
        r#"{"name": "ada", "langs": ["en", "fr"]}"#,
        r#"{"name": "bob", "langs": []}"#,
    ];
    let params = r#"{"filter": "{n: .name, count: (.langs | length)}"}"#;
    let (terminal, results) = run_batch(&env, address, "jq", params, &items).await;
    assert_eq!(terminal.state(), BatchState::Succeeded);
    assert_eq!(
        results,
        outputs(&[r#"{"n":"ada","count":2}"#, r#"{"n":"bob","count":0}"#])
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jq_errors_are_per_item_and_fail_the_batch() {
    let mut env = TestEnv::new("jqfail").await;
    let address = env.start_server().await;
    env.start_worker(2).await;
    let items = [
        r#"{"a": 1}"#,
        "not json",
        r#"{"a": "text"}"#,
        r#"{"a": 41}"#,
    ];
    let (terminal, results) =
        run_batch(&env, address, "jq", r#"{"filter": ".a + 1"}"#, &items).await;
    assert_eq!(terminal.state(), BatchState::Failed);
    let counters = terminal.counters.expect("counters");
    assert_eq!(
        (
            counters.items_total,
            counters.items_succeeded,
            counters.items_failed
        ),
        (4, 2, 2)
    );
    assert_eq!(results[0], Ok("2".to_owned()));
    assert!(
        results[1]
            .as_ref()
            .is_err_and(|e| e.starts_with("item is not valid JSON")),
        "{results:?}"
    );
    assert!(
        results[2]
            .as_ref()
            .is_err_and(|e| e.starts_with("jq error")),
        "{results:?}"
    );
    assert_eq!(results[3], Ok("42".to_owned()));

    let mut client = env.client(address).await;
    let request = api::ListResultsRequest {
        batch_id: terminal.batch_id.clone(),
        failed_only: true,
        ..Default::default()
    };
    let failed: Vec<_> = futures::TryStreamExt::try_collect(
        client
            .list_results(request)
            .await
            .expect("list")
            .into_inner(),
    )
    .await
    .expect("stream");
    assert_eq!(
        failed.iter().map(|r| r.index).collect::<Vec<_>>(),
        vec![1, 2]
    );
    env.finish().await;
}

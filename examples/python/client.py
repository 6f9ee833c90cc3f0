"""A Sluice client in Python: submits a small batch, prints its progress as the server streams
it, then reads the results.

Run it with `examples/python/run`, which makes the virtualenv and generates the stubs
(`sluice/v1/batch_service_pb2*.py`) from proto/. The server is $SLUICE_SERVER (default
http://127.0.0.1:50051).

It follows the proto's retry advice: the request carries an idempotency_key, so resending it
after UNAVAILABLE cannot create a second batch, and a progress stream that breaks is resumed
with WatchBatch from the last sequence seen, without gaps or duplicates.

Exit status: 0 if the batch SUCCEEDED with one result per item; 3 if it FAILED, 4 if it was
CANCELLED, 1 for a result count that does not match or another error, 5 if the server
stays unreachable (the same codes as the sluice CLI).
"""

import os
import sys
import time
import uuid

import grpc

from sluice.v1 import batch_service_pb2 as pb
from sluice.v1 import batch_service_pb2_grpc as pb_grpc

SENTENCES = [
    "to be or not to be",
    "that is the question",
    "whether tis nobler in the mind to suffer",
    "the slings and arrows of outrageous fortune",
]
TERMINAL = {pb.BATCH_STATE_SUCCEEDED, pb.BATCH_STATE_FAILED, pb.BATCH_STATE_CANCELLED}
EXIT_CODES = {pb.BATCH_STATE_FAILED: 3, pb.BATCH_STATE_CANCELLED: 4}
MAX_ATTEMPTS = 5
CALL_TIMEOUT_SECONDS = 120


def channel_for(server):
    """A channel to `server`: http://host:port (plaintext), https://host:port, or host:port."""
    if server.startswith("https://"):
        return grpc.secure_channel(server[len("https://"):], grpc.ssl_channel_credentials())
    return grpc.insecure_channel(server.removeprefix("http://"))


def state_name(state):
    return pb.BatchState.Name(state).removeprefix("BATCH_STATE_")


def show(event):
    counters = event.counters
    done = counters.items_succeeded + counters.items_failed
    print(f"seq={event.sequence} state={state_name(event.state)} "
          f"items={done}/{counters.items_total} failed={counters.items_failed} "
          f"chunks={counters.chunks_done}/{counters.chunks_total}", flush=True)


def submit_and_follow(stub, request):
    """SubmitBatch, printing every event; returns the terminal one. An UNAVAILABLE stream is
    retried with backoff: before the first event by resending the request (the idempotency key
    makes that safe), after it by WatchBatch from the last sequence seen."""
    last = None
    failures = 0
    while True:
        if last is None:
            responses = stub.SubmitBatch(request, timeout=CALL_TIMEOUT_SECONDS)
        else:
            responses = stub.WatchBatch(
                pb.WatchBatchRequest(batch_id=last.batch_id, after_sequence=last.sequence),
                timeout=CALL_TIMEOUT_SECONDS,
            )
        try:
            for response in responses:
                last = response.event
                failures = 0
                show(last)
                if last.state in TERMINAL:
                    return last
            raise RuntimeError("the event stream ended before the batch finished")
        except grpc.RpcError as error:
            failures += 1
            if error.code() != grpc.StatusCode.UNAVAILABLE or failures >= MAX_ATTEMPTS:
                raise
            backoff = 0.5 * 2 ** (failures - 1)
            print(f"stream unavailable ({error.details()}); retrying in {backoff:.1f}s",
                  file=sys.stderr)
            time.sleep(backoff)


def main():
    server = os.environ.get("SLUICE_SERVER", "http://127.0.0.1:50051")
    request = pb.SubmitBatchRequest(
        task="wordcount",
        items=[pb.Payload(text=sentence) for sentence in SENTENCES],
        chunk_size=2,
        idempotency_key=f"python-example-{uuid.uuid4()}",
    )
    with channel_for(server) as channel:
        stub = pb_grpc.BatchServiceStub(channel)
        try:
            last = submit_and_follow(stub, request)
            results = list(stub.ListResults(pb.ListResultsRequest(batch_id=last.batch_id),
                                            timeout=CALL_TIMEOUT_SECONDS))
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.UNAVAILABLE:
                print(f"cannot reach the Sluice server at {server} ({error.details()}); start "
                      "one (dev/stack up, then sluice-server and sluice-worker) or set "
                      "SLUICE_SERVER", file=sys.stderr)
                return 5
            print(f"the server said {error.code().name}: {error.details()}", file=sys.stderr)
            return 1

    for result in results:
        outcome = result.WhichOneof("outcome")
        if outcome == "output":
            print(f"{result.index}\tok\t{result.output.text}")
        else:
            print(f"{result.index}\terror\t{result.error}")
    total = last.counters.items_total
    print(f"batch {last.batch_id} {state_name(last.state)}: "
          f"{len(results)} results for {total} items")
    if last.state != pb.BATCH_STATE_SUCCEEDED:
        return EXIT_CODES.get(last.state, 1)
    return 0 if len(results) == total else 1


if __name__ == "__main__":
    sys.exit(main())

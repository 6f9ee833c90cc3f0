"""The Celery app of the benchmark's peer: Celery + Redis (broker) + MongoDB (results).

Two task shapes, chosen per worker by PEER_MODE (run.py sets it for the worker it starts):

* ``per-item`` (PEER_MODE=per-item): one Celery task per item. Celery's defaults, except
  ``task_ignore_result`` (see docs/benchmarks.md).
* ``chunked`` (PEER_MODE=chunked, the default): one task per chunk of items, configured per
  Celery's "Optimizing" guide; it stores one document per chunk in the layout Sluice uses.

Environment:
  CELERY_BROKER_URL      broker, default redis://127.0.0.1:6379/1 (db 1: never Sluice's db 0)
  CELERY_RESULT_BACKEND  result backend, default: the broker URL (unused: results are ignored)
  PEER_MONGO_URL         default mongodb://127.0.0.1:27017/?directConnection=true
  PEER_MONGO_DB          default sluice_peer_celery
  PEER_MODE              per-item | chunked (default chunked)
  PEER_PREFETCH          chunked mode's worker_prefetch_multiplier (default in CHUNKED_PREFETCH)
"""

import hashlib
import os

import pymongo
import redis
from celery import Celery

BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/1")
RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", BROKER_URL)
MONGO_URL = os.environ.get("PEER_MONGO_URL", "mongodb://127.0.0.1:27017/?directConnection=true")
MONGO_DB = os.environ.get("PEER_MONGO_DB", "sluice_peer_celery")
MODE = os.environ.get("PEER_MODE", "chunked")

# Collections: per-item outputs, and per-chunk results (Sluice's name for the same thing).
ITEMS_COLLECTION = "outputs"
CHUNKS_COLLECTION = "results"

# The chunked mode's default prefetch multiplier (one reserved chunk per pool process, the
# guide's advice for long tasks); run.py passes 4 for small chunks (docs/benchmarks.md).
CHUNKED_PREFETCH = 1


def progress_channel(run):
    return f"peer:progress:{run}"


def chunk_id(run, chunk_index):
    """The same _id Sluice gives a chunk's result: "<batch>:<index zero-padded to 10>"."""
    return f"{run}:{chunk_index:010d}"


app = Celery("tasks", broker=BROKER_URL, backend=RESULT_BACKEND)

if MODE == "per-item":
    # A guide reader's app: Celery's defaults (prefork, prefetch multiplier 4, early acks, JSON,
    # no compression, broker_pool_limit 10), except that results are not stored in the backend:
    # the output goes to MongoDB, and a million unread results would only fill Redis.
    app.conf.update(task_ignore_result=True)
elif MODE == "chunked":
    app.conf.update(
        # One unacknowledged message per pool process for long tasks (a chunk of 1,000+ items);
        # run.py sets 4 for small chunks, measured faster (docs/benchmarks.md).
        worker_prefetch_multiplier=int(os.environ.get("PEER_PREFETCH", CHUNKED_PREFETCH)),
        # Acknowledge after the chunk's document is stored, so a worker lost mid-chunk has the
        # chunk redelivered (Sluice's guarantee too; the insert is idempotent via _id).
        task_acks_late=True,
        # Outputs go to MongoDB; storing a result per task in Redis would be wasted work.
        task_ignore_result=True,
        # Pool of broker connections shared by the producer's and worker's publishers; the guide
        # says size it to the threads that publish (one here), Celery's default of 10 covers it.
        broker_pool_limit=10,
        # Messages as plain JSON, uncompressed (both are Celery's defaults, stated explicitly).
        task_serializer="json",
        accept_content=["json"],
        task_compression=None,
        result_compression=None,
    )
else:
    raise RuntimeError(f"PEER_MODE must be per-item or chunked, not {MODE!r}")


# --- The functions: exactly what Sluice's `echo` and `sha256` tasks produce. ---

def run_function(task, item, rounds):
    if task == "echo":
        return item
    if task == "sha256":
        return sha256_chained(item, rounds)
    raise ValueError(f"unknown task {task!r}")


def sha256_chained(item, rounds):
    """Hex SHA-256 of the item's UTF-8 bytes; round n hashes round n-1's 32-byte digest."""
    digest = hashlib.sha256(item.encode("utf-8")).digest()
    for _ in range(1, rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


# --- Per-process clients. pymongo's client is not fork-safe, so each pool process opens its own
# on first use (the prefork children are forked after this module is imported). ---

_clients = {}


def _client(kind):
    pid = os.getpid()
    entry = _clients.get(kind)
    if entry is None or entry[0] != pid:
        if kind == "mongo":
            client = pymongo.MongoClient(MONGO_URL)[MONGO_DB]
        else:
            client = redis.Redis.from_url(BROKER_URL)
        entry = _clients[kind] = (pid, client)
    return entry[1]


# --- The tasks. ---

@app.task(name="tasks.process_item")
def process_item(run, index, item, task, rounds):
    """Runs the function on one item, stores one document, and publishes progress."""
    output = run_function(task, item, rounds)
    _client("mongo")[ITEMS_COLLECTION].insert_one(
        {"_id": f"{run}:{index}", "run": run, "index": index, "o": output}
    )
    _client("redis").publish(progress_channel(run), index)


@app.task(name="tasks.process_chunk", bind=True)
def process_chunk(self, run, chunk_index, first_item, items, task, rounds):
    """Runs the function on each item of a chunk and stores ONE document for the chunk."""
    outcomes = []
    failed = 0
    for item in items:
        try:
            outcomes.append({"o": run_function(task, item, rounds)})
        except Exception as error:  # an item's failure is its outcome, as in Sluice
            outcomes.append({"e": str(error)})
            failed += 1
    document = {
        "_id": chunk_id(run, chunk_index),
        "batch_id": run,
        "chunk_index": chunk_index,
        "first_item": first_item,
        "succeeded": len(items) - failed,
        "failed": failed,
        "worker": self.request.hostname,
        "outcomes": outcomes,
    }
    try:
        _client("mongo")[CHUNKS_COLLECTION].insert_one(document)
    except pymongo.errors.DuplicateKeyError:
        pass  # a redelivered chunk (acks_late) whose document an earlier delivery stored
    _client("redis").publish(progress_channel(run), chunk_index)

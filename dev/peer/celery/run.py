#!/usr/bin/env python3
"""The benchmark's driver for the Celery peer. Run it with the venv's python (see ./setup):

  run.py --mode per-item|chunked --task echo|sha256 [--rounds R] --items N [--chunk-size C]
         [--concurrency 2] [--prefetch P] [--mongo-url URL] [--mongo-db DB] [--timeout S]

It makes N deterministic items, empties the peer's Redis db and Mongo collections, starts a
Celery worker and waits for it to answer a ping, then, on the clock: enqueues every task and
waits until MongoDB holds every output. It then reads the worker's CPU time, stops it, checks
every output item by item, and prints one JSON line. Exit status 1 if any output is missing or
wrong, or on timeout; 2 on a setup failure (worker did not start, another worker is running).
"""

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
POLL_SECONDS = 0.05
# The optimisation guide's prefetch advice, per chunk size: a chunk of this many items or more
# is a long task (prefetch 1, with late acks: one reserved chunk per process); smaller chunks
# are short tasks, for which Celery's default multiplier of 4 measured about 10% faster than 1
# at 100 items (docs/benchmarks.md).
LONG_TASK_ITEMS = 1000
SHORT_TASK_PREFETCH = 4
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def make_item(i):
    return json.dumps({"i": i, "name": f"item-{i:08d}", "payload": "x" * 60}, separators=(",", ":"))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["per-item", "chunked"], required=True)
    parser.add_argument("--task", choices=["echo", "sha256"], required=True)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--items", type=int, required=True)
    parser.add_argument("--chunk-size", type=int, default=1000, help="chunked mode only")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--prefetch", type=int, default=None,
                        help="chunked mode's worker_prefetch_multiplier (default: 1 for chunks of "
                             f"{LONG_TASK_ITEMS}+ items, else {SHORT_TASK_PREFETCH})")
    parser.add_argument("--mongo-url", default=os.environ.get(
        "PEER_MONGO_URL", "mongodb://127.0.0.1:27017/?directConnection=true"))
    parser.add_argument("--mongo-db", default=os.environ.get("PEER_MONGO_DB", "sluice_peer_celery"))
    parser.add_argument("--redis-pid", type=int, default=None,
                        help="redis-server's pid, for its CPU (default: found by command line)")
    parser.add_argument("--ferretdb-pid", type=int, default=None,
                        help="FerretDB's pid, for its CPU (default: found by command line)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds allowed from the first enqueue to the last output")
    args = parser.parse_args()
    if args.items < 1 or args.rounds < 1 or args.chunk_size < 1 or args.concurrency < 1:
        parser.error("--items, --rounds, --chunk-size and --concurrency must be at least 1")
    return args


# --- CPU accounting from /proc ---

def _stat(pid):
    """(ppid, utime+stime+cutime+cstime in seconds) of a live process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    # fields[0] is state (field 3); ppid is field 4; utime..cstime are fields 14..17.
    ticks = sum(int(x) for x in fields[11:15])
    return int(fields[1]), ticks / CLOCK_TICKS


def tree_cpu_seconds(root):
    """CPU seconds of a process and all its live descendants, each with its reaped children."""
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _stat(int(name))
            if stat is not None:
                parents[int(name)] = stat
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in parents:
            total += parents[pid][1]
            todo.extend(child for child, (ppid, _) in parents.items() if ppid == pid)
    return total


def find_service_pid(needles):
    """The pid of the first process whose command line starts with the first needle's program
    and contains every needle, or None."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        program = os.path.basename(cmdline.split(" ", 1)[0])
        if program.startswith(needles[0]) and all(needle in cmdline for needle in needles[1:]):
            return int(name)
    return None


def process_cpu_seconds(pid):
    stat = _stat(pid) if pid else None
    return stat[1] if stat else None


def url_port(url, default):
    from urllib.parse import urlsplit
    try:
        return urlsplit(url.split(",")[0]).port or default
    except ValueError:
        return default


# --- the run ---

def main():
    args = parse_args()
    chunk_size = args.chunk_size if args.mode == "chunked" else 1
    os.environ["PEER_MODE"] = args.mode
    os.environ["PEER_MONGO_URL"] = args.mongo_url
    os.environ["PEER_MONGO_DB"] = args.mongo_db
    if args.prefetch is None and args.mode == "chunked":
        args.prefetch = 1 if args.chunk_size >= LONG_TASK_ITEMS else SHORT_TASK_PREFETCH
    if args.prefetch is not None:
        os.environ["PEER_PREFETCH"] = str(args.prefetch)
    sys.path.insert(0, HERE)
    import pymongo
    import tasks  # reads the environment set above, as the worker will

    app = tasks.app
    run = uuid.uuid4().hex[:12]
    items = [make_item(i) for i in range(args.items)]
    chunks = [(c, c * chunk_size, items[c * chunk_size:(c + 1) * chunk_size])
              for c in range((args.items + chunk_size - 1) // chunk_size)]

    # A clean slate: no other worker may consume our queue, and nothing may be left in it.
    stale = app.control.ping(timeout=0.5)
    if stale:
        sys.exit(f"run.py: other Celery workers use {tasks.BROKER_URL}: {stale}; stop them first")
    import redis
    redis.Redis.from_url(tasks.BROKER_URL).flushdb()
    database = pymongo.MongoClient(args.mongo_url)[args.mongo_db]
    collection = database[tasks.ITEMS_COLLECTION if args.mode == "per-item" else tasks.CHUNKS_COLLECTION]
    for name in (tasks.ITEMS_COLLECTION, tasks.CHUNKS_COLLECTION):
        database.drop_collection(name)

    # The worker, as a deployment would run it; its log goes to a file kept on failure.
    hostname = f"peer-{run}@%h"
    log = tempfile.NamedTemporaryFile(prefix="celery-peer-", suffix=".log", delete=False)
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tasks", "worker", "--pool", "prefork",
         "--concurrency", str(args.concurrency), "--loglevel", "warning", "-n", hostname],
        cwd=HERE, env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)

    def stop_worker():
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)  # warm shutdown
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()

    def fail(status, message):
        stop_worker()
        print(f"run.py: {message}; worker log: {log.name}", file=sys.stderr)
        sys.exit(status)

    # Ready when the worker answers a ping (its pool is up and it consumes the queue).
    deadline = time.monotonic() + 120
    while True:
        if worker.poll() is not None:
            fail(2, f"the worker exited with status {worker.returncode} before it was ready")
        replies = app.control.ping(timeout=0.5)
        if any(name.startswith(f"peer-{run}@") for reply in replies for name in reply):
            break
        if time.monotonic() > deadline:
            fail(2, "the worker did not answer a ping within 120 s")

    redis_pid = args.redis_pid or find_service_pid(
        ["redis-server", f":{url_port(tasks.BROKER_URL, 6379)}"])
    mongo_pid = args.ferretdb_pid or find_service_pid(
        ["ferretdb", f":{url_port(args.mongo_url, 27017)}"])
    services_before = [process_cpu_seconds(redis_pid), process_cpu_seconds(mongo_pid)]
    worker_before = tree_cpu_seconds(worker.pid)
    driver_before = resource.getrusage(resource.RUSAGE_SELF)

    # --- on the clock ---
    started = time.perf_counter()
    if args.mode == "per-item":
        for index, item in enumerate(items):
            tasks.process_item.apply_async((run, index, item, args.task, args.rounds))
        target = args.items
    else:
        for chunk_index, first_item, chunk in chunks:
            tasks.process_chunk.apply_async(
                (run, chunk_index, first_item, chunk, args.task, args.rounds))
        target = len(chunks)  # one document per chunk, holding all its outcomes
    enqueue_seconds = time.perf_counter() - started
    while True:
        # `count` command: FerretDB answers it from the table's row count.
        stored = collection.estimated_document_count()
        if stored >= target:
            break
        if worker.poll() is not None:
            fail(1, f"the worker exited with status {worker.returncode} mid-run")
        if time.perf_counter() - started > args.timeout:
            fail(1, f"timeout: {stored} of {target} documents after {args.timeout} s")
        time.sleep(POLL_SECONDS)
    seconds = time.perf_counter() - started
    # --- off the clock ---

    worker_after = tree_cpu_seconds(worker.pid)
    driver_after = resource.getrusage(resource.RUSAGE_SELF)
    services_after = [process_cpu_seconds(redis_pid), process_cpu_seconds(mongo_pid)]
    stop_worker()

    verified = verify(args, run, items, chunks, collection)
    services = [None if a is None or b is None else round(b - a, 3)
                for a, b in zip(services_before, services_after)]
    result = {
        "mode": args.mode,
        "task": args.task,
        "rounds": args.rounds,
        "items": args.items,
        "chunk_size": chunk_size,
        "concurrency": args.concurrency,
        "prefetch": app.conf.worker_prefetch_multiplier,
        "seconds": round(seconds, 3),
        "items_per_s": round(args.items / seconds, 1),
        "enqueue_seconds": round(enqueue_seconds, 3),
        "cpu_s": round(worker_after - worker_before, 3),
        "worker_cpu_total_s": round(worker_after, 3),
        "driver_cpu_s": round(driver_after.ru_utime + driver_after.ru_stime
                              - driver_before.ru_utime - driver_before.ru_stime, 3),
        "redis_cpu_s": services[0],
        "mongo_cpu_s": services[1],
        "verified": verified,
    }
    print(json.dumps(result), flush=True)
    if verified != args.items:
        print(f"run.py: {args.items - verified} outputs missing or wrong; worker log: {log.name}",
              file=sys.stderr)
        sys.exit(1)
    os.unlink(log.name)


def expected_output(args, item):
    import tasks
    return tasks.run_function(args.task, item, args.rounds)


def verify(args, run, items, chunks, collection):
    """The number of items whose stored output is present, unique and equal to the expected."""
    good = set()
    if args.mode == "per-item":
        for doc in collection.find({}, batch_size=10_000):
            index = doc.get("index")
            if (isinstance(index, int) and 0 <= index < len(items) and index not in good
                    and doc["_id"] == f"{run}:{index}" and doc.get("run") == run
                    and doc.get("o") == expected_output(args, items[index])):
                good.add(index)
        return len(good)
    import tasks
    by_index = {chunk_index: (first, chunk) for chunk_index, first, chunk in chunks}
    # Small batches: FerretDB puts up to 101 documents in a reply whatever their size, and a
    # 5,000-item chunk's document is about 600 KB (over pymongo's 48 MB message limit at 101).
    for doc in collection.find({}, batch_size=16):
        chunk_index = doc.get("chunk_index")
        if chunk_index not in by_index or doc["_id"] != tasks.chunk_id(run, chunk_index):
            continue
        first, chunk = by_index[chunk_index]
        outcomes = doc.get("outcomes", [])
        if (doc.get("batch_id") != run or doc.get("first_item") != first
                or len(outcomes) != len(chunk)
                or doc.get("succeeded", 0) + doc.get("failed", 0) != len(chunk)):
            continue
        for offset, (outcome, item) in enumerate(zip(outcomes, chunk)):
            if outcome == {"o": expected_output(args, item)}:
                good.add(first + offset)
    return len(good)


if __name__ == "__main__":
    main()

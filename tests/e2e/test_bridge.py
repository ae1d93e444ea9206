"""The Kafka bridge on the real stack: exact counts, idempotency, malformed input, faults.

Jobs are preloaded (StagingJob object + rows in state ``staging``, see
:mod:`bench.preload`) and messages produced directly, so every burst is exact.
That needs a stack without the operator, which would otherwise also handle the
preloaded objects: the module-scoped ``bridge_stack`` starts its own
bridge-only stack. Set ``BRIDGE_TESTS_SHARED_STACK=1`` to run these tests on
the session ``stack`` instead once the operator leaves rows it did not create
alone. The end-to-end test through the operator and Banksia uses the session stack.

"Processed" is never guessed with a sleep: :func:`wait_consumed` waits until the
offsets the bridge stored in the database reach the topic's high watermarks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kubernetes.client import CustomObjectsApi

from bench.preload import Job, message, preload_jobs, produce, producer, unique_paths
from devstack.stack import Stack
from mwa_staging import kube
from tests.e2e.target import Target
from tests.helpers import free_port, stack_dir, wait_for

pytestmark = pytest.mark.stack

BURST_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def bridge_stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    """A stack running the bridge and not the operator (see the module docstring)."""
    if os.environ.get("BRIDGE_TESTS_SHARED_STACK") == "1":
        yield request.getfixturevalue("stack")
        return
    with stack_dir(request, "bridge-stack") as root:
        the_stack = Stack(root, services=("kafka-bridge",))
        try:
            the_stack.up()
            if "kafka-bridge" in the_stack.skipped:
                pytest.skip(f"bridge unavailable: {the_stack.skipped['kafka-bridge']}")
            yield the_stack
        finally:
            the_stack.down()


# --------------------------------------------------------------------------- helpers


def env(stack: Stack, name: str) -> str:
    return stack.env[name]


def db(stack: Stack) -> Any:
    conn = psycopg2.connect(env(stack, "DATABASE_URL"))
    conn.autocommit = True
    return conn


def query(stack: Stack, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with db(stack) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        rows: list[tuple[Any, ...]] = cur.fetchall()
    conn.close()
    return rows


def preload(stack: Stack, *file_counts: int) -> list[Job]:
    return preload_jobs(
        env(stack, "KUBECONFIG"),
        env(stack, "DATABASE_URL"),
        [unique_paths(n) for n in file_counts],
    )


def send(stack: Stack, msgs: list[tuple[str, bytes]], topic: str | None = None) -> None:
    produce(producer(env(stack, "KAFKA_BOOTSTRAP")), topic or env(stack, "KAFKA_TOPIC"), msgs)


def job_row(stack: Stack, job: Job) -> dict[str, Any]:
    rows = query(
        stack,
        "SELECT state, ready_files, error_files, total_files, return_code, reason, message,"
        " callback_state, version FROM jobs WHERE id = %s",
        (job.pk,),
    )
    keys = ("state", "ready", "errors", "total", "return_code", "reason", "message", "callback",
            "version")  # fmt: skip
    return dict(zip(keys, rows[0], strict=True))


def file_states(stack: Stack, job: Job) -> dict[int, int]:
    rows = query(
        stack, "SELECT state, count(*) FROM job_files WHERE job = %s GROUP BY state", (job.pk,)
    )
    return {int(s): int(n) for s, n in rows}


def status(stack: Stack, job: Job) -> dict[str, Any]:
    obj = kube.StagingJobs(kube.api_client(env(stack, "KUBECONFIG"))).get(job.namespace, job.name)
    return dict((obj or {}).get("status") or {})


def wait_status_complete(stack: Stack, job: Job, timeout: float = BURST_TIMEOUT) -> dict[str, Any]:
    def complete() -> dict[str, Any] | None:
        st = status(stack, job)
        return st if st.get("phase") == "Complete" else None

    found = wait_for(complete, timeout=timeout, interval=0.2, message=f"{job.name} Complete")
    assert found is not None
    return found


def wait_row_complete(stack: Stack, job: Job, timeout: float = BURST_TIMEOUT) -> dict[str, Any]:
    def complete() -> dict[str, Any] | None:
        row = job_row(stack, job)
        return row if row["state"] == "complete" else None

    found = wait_for(complete, timeout=timeout, interval=0.1, message=f"{job.name} row complete")
    assert found is not None
    return found


def high_watermarks(stack: Stack, topic: str) -> dict[int, int]:
    consumer = Consumer(
        {"bootstrap.servers": env(stack, "KAFKA_BOOTSTRAP"), "group.id": "bridge-tests-probe"}
    )
    try:
        meta = consumer.list_topics(topic, timeout=10)
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in meta.topics[topic].partitions
        }
    finally:
        consumer.close()


def wait_consumed(stack: Stack, topic: str | None = None, timeout: float = BURST_TIMEOUT) -> None:
    """Wait until the bridge recorded every message produced so far to ``topic``."""
    topic = topic or env(stack, "KAFKA_TOPIC")
    highs = high_watermarks(stack, topic)

    def done() -> bool:
        stored = dict(
            query(
                stack,
                "SELECT partition, next_offset FROM bridge_offsets WHERE topic = %s",
                (topic,),
            )
        )
        return all(stored.get(p, 0) >= high for p, high in highs.items() if high > 0)

    wait_for(done, timeout=timeout, interval=0.1, message=f"bridge caught up on {topic}")


def counter(stack: Stack, name: str) -> int:
    rows = query(stack, "SELECT value FROM bridge_counters WHERE name = %s", (name,))
    return int(rows[0][0]) if rows else 0


def assert_exact(stack: Stack, job: Job, ready: int, errors: int) -> None:
    row = wait_row_complete(stack, job)
    assert (row["ready"], row["errors"], row["total"]) == (ready, errors, len(job.paths))
    assert file_states(stack, job) == {k: v for k, v in {1: ready, 2: errors}.items() if v}
    st = wait_status_complete(stack, job)
    assert (st["readyFiles"], st["errorFiles"], st["totalFiles"]) == (ready, errors, len(job.paths))


def metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def metric_value(text: str, name: str, labels: str = "") -> float:
    prefix = f"{name}{{{labels}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0


def healthz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


# --------------------------------------------------------------------------- behaviour


def test_jobs_complete_with_exact_counts_and_condition(bridge_stack: Stack) -> None:
    ok_job, mixed = preload(bridge_stack, 300, 120)
    failed = {mixed.paths[3]: "unable to stage file, no valid copies", mixed.paths[77]: "tape lost"}
    msgs = [(p, message(p)) for p in ok_job.paths]
    msgs += [(p, message(p, failed.get(p, ""))) for p in mixed.paths]
    send(bridge_stack, msgs)

    assert_exact(bridge_stack, ok_job, 300, 0)
    assert_exact(bridge_stack, mixed, 118, 2)
    row = job_row(bridge_stack, ok_job)
    assert (row["return_code"], row["reason"], row["message"], row["callback"]) == (
        0, "AllFilesStaged", "300 of 300 files staged", "pending",
    )  # fmt: skip
    row = job_row(bridge_stack, mixed)
    assert (row["return_code"], row["reason"], row["message"]) == (
        5, "FinishedWithErrors", "118 staged, 2 failed",
    )  # fmt: skip

    st = wait_status_complete(bridge_stack, mixed)
    assert st["returnCode"] == 5 and st["lastFileTime"] and st["completionTime"]
    assert sorted((f["path"], f["error"]) for f in st["failedFiles"]) == sorted(failed.items())
    complete = next(c for c in st["conditions"] if c["type"] == "Complete")
    assert (complete["status"], complete["reason"]) == ("True", "FinishedWithErrors")
    complete = next(
        c
        for c in wait_status_complete(bridge_stack, ok_job)["conditions"]
        if c["type"] == "Complete"
    )
    assert (complete["status"], complete["reason"], complete["message"]) == (
        "True", "AllFilesStaged", "300 of 300 files staged",
    )  # fmt: skip


def test_failed_file_staged_later_becomes_ready(bridge_stack: Stack) -> None:
    (job,) = preload(bridge_stack, 3)
    first, second, third = job.paths
    send(bridge_stack, [(first, message(first, "no valid copies")), (second, message(second))])
    wait_consumed(bridge_stack)
    assert (job_row(bridge_stack, job)["ready"], job_row(bridge_stack, job)["errors"]) == (1, 1)
    # The retry first: messages of different paths may sit in different partitions
    # and be recorded in either order, and the third file's arrival would
    # otherwise complete the job (2 ready, 1 failed) before the retry is seen.
    send(bridge_stack, [(first, message(first))])
    wait_consumed(bridge_stack)
    send(bridge_stack, [(third, message(third))])
    assert_exact(bridge_stack, job, 3, 0)
    assert job_row(bridge_stack, job)["return_code"] == 0


def test_same_path_in_two_live_jobs_counts_in_both(bridge_stack: Stack) -> None:
    shared = unique_paths(50)
    jobs = preload_jobs(
        env(bridge_stack, "KUBECONFIG"),
        env(bridge_stack, "DATABASE_URL"),
        [shared + unique_paths(10), shared],
    )
    send(bridge_stack, [(p, message(p)) for p in jobs[0].paths])
    assert_exact(bridge_stack, jobs[0], 60, 0)
    assert_exact(bridge_stack, jobs[1], 50, 0)


def test_duplicates_and_redelivery_count_once(bridge_stack: Stack) -> None:
    (job,) = preload(bridge_stack, 200)
    half = job.paths[:100]
    # DUP within a batch and across batches, then the whole set again after completion.
    send(bridge_stack, [(p, message(p)) for p in half for _ in range(3)])
    wait_consumed(bridge_stack)
    assert job_row(bridge_stack, job)["ready"] == 100
    send(bridge_stack, [(p, message(p)) for p in job.paths])
    assert_exact(bridge_stack, job, 200, 0)
    version = job_row(bridge_stack, job)["version"]
    send(bridge_stack, [(p, message(p, "late error")) for p in job.paths])
    send(bridge_stack, [(p, message(p)) for p in job.paths])
    wait_consumed(bridge_stack)
    row = job_row(bridge_stack, job)
    assert (row["ready"], row["errors"], row["version"]) == (200, 0, version)


def test_unknown_paths_leave_every_job_unchanged(bridge_stack: Stack) -> None:
    (job,) = preload(bridge_stack, 10)
    send(bridge_stack, [(p, message(p)) for p in job.paths[:5]])
    wait_consumed(bridge_stack)
    before_jobs = query(bridge_stack, "SELECT id, version, ready_files, error_files FROM jobs")
    before = counter(bridge_stack, "unknown_path_messages")
    unknown = unique_paths(37)
    send(bridge_stack, [(p, message(p, "x" if i % 2 else "")) for i, p in enumerate(unknown)])
    wait_consumed(bridge_stack)
    assert counter(bridge_stack, "unknown_path_messages") == before + 37
    after = query(bridge_stack, "SELECT id, version, ready_files, error_files FROM jobs")
    assert sorted(after) == sorted(before_jobs)


MALFORMED = [
    (b"\xff\xfe\x00garbage", "not UTF-8"),
    (b"{this is not json", "not JSON"),
    (b'["Filename", "mwa/x.fits"]', "not a JSON object"),
    (b'{"Error": ""}', "no Filename"),
    (b'{"Filename": ""}', "empty Filename"),
    (b'{"Filename": 42}', "wrong type for Filename: int"),
    (b'{"Filename": "mwa/x.fits", "Error": false}', "wrong type for Error: bool"),
    (b'{"Filename": "mwa/\\u0000.fits"}', "Filename is not storable text (NUL or lone surrogate)"),
    (json.dumps({"Filename": "mwa/big.fits", "Error": "x" * 70_000}).encode(), "oversized"),
]


def test_every_malformed_kind_is_kept_and_counted(bridge_stack: Stack) -> None:
    (job,) = preload(bridge_stack, len(MALFORMED) + 1)
    topic = env(bridge_stack, "KAFKA_TOPIC")
    before = counter(bridge_stack, "malformed_messages")
    start = high_watermarks(bridge_stack, topic)
    # One partition (key) for all, so valid and malformed messages interleave in order.
    key = job.paths[0]
    msgs = [(key, message(job.paths[0]))]
    for (value, _reason), path in zip(MALFORMED, job.paths[1:], strict=True):
        msgs += [(key, value), (key, message(path))]
    send(bridge_stack, msgs)
    assert_exact(bridge_stack, job, len(job.paths), 0)
    wait_consumed(bridge_stack)
    assert counter(bridge_stack, "malformed_messages") == before + len(MALFORMED)
    rows = query(
        bridge_stack,
        'SELECT partition, "offset", reason, length(payload) FROM malformed_messages'
        ' WHERE topic = %s ORDER BY partition, "offset"',
        (topic,),
    )
    mine = [r for r in rows if r[1] >= start.get(r[0], 0)]
    assert len(mine) == len(MALFORMED)
    for (_p, _o, reason, size), (_value, expected) in zip(mine, MALFORMED, strict=True):
        assert reason.startswith(expected)
        assert size <= 4096


def test_heartbeat_row(bridge_stack: Stack) -> None:
    (job,) = preload(bridge_stack, 1)
    send(bridge_stack, [(job.paths[0], message(job.paths[0]))])
    wait_row_complete(bridge_stack, job)
    wait_for(
        lambda: query(
            bridge_stack,
            "SELECT 1 FROM bridge_heartbeat WHERE broker_ok AND last_poll > now() - interval '10 s'"
            " AND last_message > now() - interval '30 s'",
        ),
        timeout=30,
        message="a fresh heartbeat row",
    )


# --------------------------------------------------------------------------- faults


def burst(stack: Stack, jobs: list[Job], unknown: int = 0) -> list[tuple[str, bytes]]:
    """Messages for every file, interleaved across jobs, with some unknown paths."""
    msgs = [(p, message(p)) for group in zip(*(j.paths for j in jobs), strict=True) for p in group]
    extra = unique_paths(unknown)
    step = max(1, len(msgs) // max(1, unknown))
    for i, p in enumerate(extra):
        msgs.insert(i * step, (p, message(p)))
    return msgs


def progress(stack: Stack, jobs: list[Job]) -> int:
    rows = query(
        stack, "SELECT sum(ready_files) FROM jobs WHERE id = ANY(%s)", ([j.pk for j in jobs],)
    )
    return int(rows[0][0] or 0)


def test_bridge_sigkill_mid_burst(bridge_stack: Stack) -> None:
    jobs = preload(bridge_stack, 20_000, 20_000)
    unknown_before = counter(bridge_stack, "unknown_path_messages")
    send(bridge_stack, burst(bridge_stack, jobs, unknown=500))
    wait_for(lambda: progress(bridge_stack, jobs) > 0, timeout=60, message="burst under way")
    bridge_stack.kill("kafka-bridge", signal.SIGKILL)
    bridge_stack.start("kafka-bridge")
    for job in jobs:
        assert_exact(bridge_stack, job, 20_000, 0)
    wait_consumed(bridge_stack)
    assert counter(bridge_stack, "unknown_path_messages") == unknown_before + 500


def test_kafka_restart_mid_stream(bridge_stack: Stack) -> None:
    jobs = preload(bridge_stack, 5_000, 5_000)
    msgs = burst(bridge_stack, jobs)
    send(bridge_stack, msgs[: len(msgs) // 2])
    wait_for(lambda: progress(bridge_stack, jobs) > 0, timeout=60, message="stream under way")
    bridge_stack.stop("kafka")
    bridge_stack.start("kafka")
    send(bridge_stack, msgs[len(msgs) // 2 :])
    for job in jobs:
        assert_exact(bridge_stack, job, 5_000, 0)


def test_postgres_restart_mid_stream(bridge_stack: Stack) -> None:
    jobs = preload(bridge_stack, 10_000, 10_000)
    unknown_before = counter(bridge_stack, "unknown_path_messages")
    msgs = burst(bridge_stack, jobs, unknown=200)
    send(bridge_stack, msgs[: len(msgs) // 2])
    wait_for(lambda: progress(bridge_stack, jobs) > 0, timeout=60, message="stream under way")
    bridge_stack.stop("postgres")
    send(bridge_stack, msgs[len(msgs) // 2 :])
    bridge_stack.start("postgres")
    for job in jobs:
        assert_exact(bridge_stack, job, 10_000, 0)
    wait_consumed(bridge_stack)
    assert counter(bridge_stack, "unknown_path_messages") == unknown_before + 200


def test_api_server_outage_status_converges(bridge_stack: Stack) -> None:
    jobs = preload(bridge_stack, 2_000, 500)
    bridge_stack.stop("kube-apiserver")
    try:
        send(bridge_stack, burst(bridge_stack, [jobs[0]]) + burst(bridge_stack, [jobs[1]]))
        for job in jobs:
            wait_row_complete(bridge_stack, job)
        port = int(env(bridge_stack, "BRIDGE_HTTP_PORT"))
        wait_for(
            lambda: metric_value(metrics_text(port), "mwa_bridge_dirty_jobs") >= 2,
            timeout=60,
            message="dirty jobs waiting while the API server is down",
        )
    finally:
        bridge_stack.start("kube-apiserver")
    assert_exact(bridge_stack, jobs[0], 2_000, 0)
    assert_exact(bridge_stack, jobs[1], 500, 0)


def test_two_replicas_share_a_burst(bridge_stack: Stack) -> None:
    port2 = free_port()
    bridge_stack.spawn("kafka-bridge-2", "kafka-bridge", {"BRIDGE_HTTP_PORT": str(port2)})
    try:
        port1 = int(env(bridge_stack, "BRIDGE_HTTP_PORT"))
        applied = "mwa_bridge_messages_total"
        before = [
            metric_value(metrics_text(p), applied, 'outcome="applied"') for p in (port1, port2)
        ]
        wait_for(
            lambda: "mwa_bridge_consumer_lag{" in metrics_text(port2),  # a sample, not HELP
            timeout=60,
            message="the second replica got partitions",
        )
        jobs = preload(bridge_stack, 10_000, 10_000)
        send(bridge_stack, burst(bridge_stack, jobs))
        for job in jobs:
            assert_exact(bridge_stack, job, 10_000, 0)
        after = [
            metric_value(metrics_text(p), applied, 'outcome="applied"') for p in (port1, port2)
        ]
        assert after[0] > before[0] and after[1] > before[1], (before, after)
        assert sum(after) - sum(before) == 20_000
    finally:
        bridge_stack.stop("kafka-bridge-2")


def test_bridge_sigterm_mid_burst_finishes_its_batch_and_exits_0(
    bridge_stack: Stack, tmp_path: Path
) -> None:
    """SIGTERM: the batch in hand is recorded and committed, the process exits 0, and a
    restarted bridge finishes the burst with exact counts (nothing lost or counted twice).

    The stack's bridge is replaced by one run here (to see its exit status) with
    small batches, so that the burst is surely still under way when the signal comes.
    """
    topic = env(bridge_stack, "KAFKA_TOPIC")
    bridge_stack.stop("kafka-bridge")
    run_env = dict(os.environ)
    run_env.update(bridge_stack.service_env("kafka-bridge"))
    run_env.update({"BRIDGE_HTTP_PORT": str(free_port()), "BRIDGE_BATCH_SIZE": "100"})
    group = run_env["KAFKA_GROUP"]
    log = tmp_path / "bridge.log"
    try:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "kafka_bridge"], env=run_env, stdout=out, stderr=out,
                cwd=Path(__file__).resolve().parents[2],
            )  # fmt: skip
            try:
                wait_for(
                    lambda: "assigned partitions" in log.read_text(),
                    timeout=60,
                    message="the bridge got its partitions",
                )
                jobs = preload(bridge_stack, 20_000, 20_000)
                unknown_before = counter(bridge_stack, "unknown_path_messages")
                send(bridge_stack, burst(bridge_stack, jobs, unknown=500))
                wait_for(lambda: progress(bridge_stack, jobs) > 0, timeout=60, message="burst")
                proc.send_signal(signal.SIGTERM)
                code = proc.wait(60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
        text = log.read_text()
        assert code == 0, text[-3000:]
        assert "finishing the batch in hand" in text and "left the consumer group" in text
        done = progress(bridge_stack, jobs)
        assert 0 < done < 40_000, f"the burst was not under way at SIGTERM ({done} applied)"
        # What the database holds is exactly what Kafka has as committed: the
        # batch in hand was recorded and its offsets committed before the exit.
        stored = dict(
            query(
                bridge_stack,
                "SELECT partition, next_offset FROM bridge_offsets WHERE topic = %s",
                (topic,),
            )
        )
        probe = Consumer({"bootstrap.servers": env(bridge_stack, "KAFKA_BOOTSTRAP"),
                          "group.id": group, "enable.auto.commit": False})  # fmt: skip
        try:
            committed = probe.committed([TopicPartition(topic, p) for p in stored], timeout=10)
        finally:
            probe.close()
        assert {tp.partition: tp.offset for tp in committed} == stored
    finally:
        bridge_stack.start("kafka-bridge")
    for job in jobs:
        assert_exact(bridge_stack, job, 20_000, 0)
    wait_consumed(bridge_stack)
    assert counter(bridge_stack, "unknown_path_messages") == unknown_before + 500


def test_a_message_the_database_refuses_is_isolated_and_kept(bridge_stack: Stack) -> None:
    """A batch failing on its content (not a lost connection, not a conflict) is bisected:
    the refused message is kept in malformed_messages with the database's error, the
    rest of the batch is applied, and the bridge goes on.

    The refusal is a test trigger on job_files rejecting one path with a check
    violation, standing for a constraint or limit the messages' validation missed.
    """
    (job,) = preload(bridge_stack, 300)
    poison = job.paths[123]
    topic = env(bridge_stack, "KAFKA_TOPIC")
    malformed_before = counter(bridge_stack, "malformed_messages")
    query_all = db(bridge_stack)
    try:
        with query_all.cursor() as cur:
            cur.execute(
                "CREATE FUNCTION test_refuse_path() RETURNS trigger LANGUAGE plpgsql AS $$"
                " BEGIN RAISE EXCEPTION 'test refuses %', NEW.path"
                "   USING ERRCODE = 'check_violation'; END $$"
            )
            cur.execute(
                "CREATE TRIGGER test_refuse_path BEFORE UPDATE ON job_files FOR EACH ROW"
                " WHEN (NEW.path = %s) EXECUTE FUNCTION test_refuse_path()",
                (poison,),
            )
        start = high_watermarks(bridge_stack, topic)
        send(bridge_stack, [(p, message(p)) for p in job.paths])
        wait_consumed(bridge_stack)
        row = job_row(bridge_stack, job)
        assert (row["state"], row["ready"], row["errors"]) == ("staging", 299, 0)
        assert file_states(bridge_stack, job) == {0: 1, 1: 299}
        kept = [
            r
            for r in query(
                bridge_stack,
                'SELECT partition, "offset", reason, payload FROM malformed_messages'
                " WHERE topic = %s",
                (topic,),
            )
            if r[1] >= start.get(r[0], 0)
        ]
        assert len(kept) == 1, kept
        reason, payload = kept[0][2], bytes(kept[0][3])
        assert reason.startswith("refused by the database: SQLSTATE 23514"), reason
        assert f"test refuses {poison}" in reason
        assert json.loads(payload)["Filename"] == poison
        assert counter(bridge_stack, "malformed_messages") == malformed_before + 1
    finally:
        with query_all.cursor() as cur:
            cur.execute("DROP TRIGGER IF EXISTS test_refuse_path ON job_files")
            cur.execute("DROP FUNCTION IF EXISTS test_refuse_path()")
        query_all.close()
    # Once the database accepts it, the same file's next message completes the job.
    send(bridge_stack, [(poison, message(poison))])
    assert_exact(bridge_stack, job, 300, 0)


# --------------------------------------------------------------------------- SASL_SSL


def sasl_conf(stack: Stack, password: str | None = None) -> dict[str, Any]:
    return {
        "bootstrap.servers": env(stack, "KAFKA_SASL_BOOTSTRAP"),
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": env(stack, "KAFKA_USER"),
        "sasl.password": password or env(stack, "KAFKA_PASSWORD"),
        "ssl.ca.location": env(stack, "KAFKA_CA"),
    }


def sasl_env(stack: Stack, topic: str, password: str | None = None) -> dict[str, str]:
    return {
        "KAFKA_SERVER": env(stack, "KAFKA_SASL_BOOTSTRAP"),
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_PASSWORD": password or env(stack, "KAFKA_PASSWORD"),
        "KAFKA_TOPIC": topic,
        "KAFKA_GROUP": f"sasl-{topic}",
    }


def test_sasl_ssl_scram(bridge_stack: Stack) -> None:
    topic = f"sasl-{os.urandom(4).hex()}"
    admin = AdminClient(sasl_conf(bridge_stack))
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(30)
    port = free_port()
    bridge_stack.spawn(
        "kafka-bridge-sasl",
        "kafka-bridge",
        {**sasl_env(bridge_stack, topic), "BRIDGE_HTTP_PORT": str(port)},
    )
    try:
        (job,) = preload(bridge_stack, 100)
        prod = producer(env(bridge_stack, "KAFKA_SASL_BOOTSTRAP"), **sasl_conf(bridge_stack))
        produce(prod, topic, [(p, message(p)) for p in job.paths])
        assert_exact(bridge_stack, job, 100, 0)
        assert healthz(port)[0] == 200
    finally:
        bridge_stack.stop("kafka-bridge-sasl")


def test_wrong_scram_password_fails_health_clearly(bridge_stack: Stack, tmp_path: Path) -> None:
    port = free_port()
    run_env = dict(os.environ)
    run_env.update(bridge_stack.service_env("kafka-bridge"))
    run_env.update(sasl_env(bridge_stack, env(bridge_stack, "KAFKA_TOPIC"), "not-the-password"))
    run_env["BRIDGE_HTTP_PORT"] = str(port)
    log = tmp_path / "bridge.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kafka_bridge"], env=run_env, stdout=out, stderr=out,
            cwd=Path(__file__).resolve().parents[2],
        )  # fmt: skip
        try:
            wait_for(lambda: healthz(port)[0] == 503, timeout=60, message="/healthz failing")
            body = healthz(port)[1]
            assert "authentication failed" in body and env(bridge_stack, "KAFKA_USER") in body
            wait_for(
                lambda: "authentication failed" in log.read_text(),
                timeout=30,
                message="a clear log error",
            )
            assert "not-the-password" not in log.read_text()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


# --------------------------------------------------------------------------- through the operator


def test_files_staged_through_the_operator_complete(target: Target) -> None:
    """The real flow: operator -> Scout simulator -> Banksia's Kafka messages -> bridge.

    On the ``target`` (the local stack or an external cluster); the tests above
    take ``bridge_stack`` and are ``local_only`` (tests/conftest.py).
    """
    if "operator" in target.skipped or "kafka-bridge" in target.skipped:
        pytest.skip("needs the operator and the bridge in the session stack")
    tag = os.urandom(4).hex()
    files = [f"mwa/{tag}/{tag}_ch{i:03d}.fits" for i in range(20)]
    files += [f"mwa/{tag}/{tag}_ch100_ERROR.fits"]
    name = f"bridge-e2e-{tag}"
    body = {
        "apiVersion": f"{kube.GROUP}/{kube.VERSION}",
        "kind": kube.KIND,
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "jobId": int(tag, 16) + 1,
            "files": files,
            "callback": {"url": target.env["CALLBACK_URL"]},
        },
    }
    api = CustomObjectsApi(kube.api_client(target.env["KUBECONFIG"]))
    api.create_namespaced_custom_object(kube.GROUP, kube.VERSION, "default", kube.PLURAL, body)
    jobs = kube.StagingJobs(kube.api_client(target.env["KUBECONFIG"]))

    def complete() -> dict[str, Any] | None:
        st = dict((jobs.get("default", name) or {}).get("status") or {})
        return st if st.get("phase") == "Complete" else None

    st = wait_for(complete, timeout=180, interval=0.5, message=f"{name} Complete")
    assert st is not None
    assert (st["readyFiles"], st["errorFiles"], st["returnCode"]) == (20, 1, 5)

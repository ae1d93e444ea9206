"""Jobs the bridge can take arrivals for, without the operator, and Banksia-like messages.

The bridge's tests and benchmark need precise bursts: jobs holding exactly known
files, and Kafka messages produced directly. :func:`preload_jobs` creates each
StagingJob object (so status patches have a target) and writes its ``jobs`` row
and ``job_files`` rows (COPY) in state ``staging``, which is what the operator
leaves behind once it has recorded the files and asked the archive to stage
them. Used with a stack that runs the bridge but not the operator: an operator
would also handle these objects.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg2
from confluent_kafka import Producer
from kubernetes.client import CustomObjectsApi

from mwa_staging import kube
from mwa_staging.db.connect import connect

COMPLETE_TIME = "2022-02-04 03:02:32 +0000 GMT"


@dataclass(frozen=True)
class Job:
    """A preloaded job: its row id, object coordinates and files."""

    pk: int
    uid: str
    namespace: str
    name: str
    paths: tuple[str, ...]


def unique_paths(count: int, tag: str | None = None) -> list[str]:
    """``count`` archive-like paths nobody else uses (one uuid per call)."""
    tag = tag or uuid.uuid4().hex[:12]
    return [f"mwa/{tag}/{tag}_ch{i:06d}.fits" for i in range(count)]


def message(path: str, error: str = "", complete_time: str = COMPLETE_TIME) -> bytes:
    """A Banksia notification (docs/contracts.md, Kafka notifications) as Kafka value bytes."""
    return json.dumps(
        {
            "Inode": 45871,
            "Filename": path,
            "RequestTime": "2022-02-04 03:01:38 +0000 GMT",
            "CompleteTime": complete_time,
            "Error": error,
        }
    ).encode()


def preload_jobs(
    kubeconfig: str,
    dsn: str,
    jobs: Sequence[Sequence[str]],
    *,
    namespace: str = "default",
    notify_url: str = "http://127.0.0.1:9/callback",
) -> list[Job]:
    """Create one StagingJob object and its rows (state ``staging``) per list of paths."""
    api = CustomObjectsApi(kube.api_client(kubeconfig))
    created: list[tuple[str, str, int, Sequence[str]]] = []
    for paths in jobs:
        job_id = uuid.uuid4().int % 10**12 + 1
        name = f"bridge-{uuid.uuid4().hex[:10]}"
        body: dict[str, Any] = {
            "apiVersion": f"{kube.GROUP}/{kube.VERSION}",
            "kind": kube.KIND,
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "jobId": job_id,
                "observation": {"obsId": job_id},
                "callback": {"url": notify_url},
            },
        }
        obj: Any = api.create_namespaced_custom_object(
            kube.GROUP, kube.VERSION, namespace, kube.PLURAL, body
        )
        created.append((obj["metadata"]["uid"], name, job_id, paths))
    conn = connect(dsn, application_name="bridge-preload")
    out: list[Job] = []
    try:
        with conn.cursor() as cur:
            for uid, name, job_id, paths in created:
                cur.execute(
                    "INSERT INTO jobs (uid, namespace, name, job_id, state, total_files,"
                    " notify_url, start_time, resolved_at, stage_requested_at)"
                    " VALUES (%s, %s, %s, %s, 'staging', %s, %s, now(), now(), now())"
                    " RETURNING id",
                    (uid, namespace, name, job_id, len(paths), notify_url),
                )
                row = cur.fetchone()
                assert row is not None
                pk = int(row[0])
                copy_files(cur, pk, paths)
                out.append(Job(pk, uid, namespace, name, tuple(paths)))
        conn.commit()
    finally:
        conn.close()
    return out


def copy_files(cur: psycopg2.extensions.cursor, job_pk: int, paths: Iterable[str]) -> None:
    """Bulk-insert a job's pending files with COPY."""
    buf = io.StringIO()
    for path in paths:
        buf.write(f"{job_pk}\t{path}\n")
    buf.seek(0)
    cur.copy_expert("COPY job_files (job, path) FROM STDIN", buf)


def producer(bootstrap: str, **extra: Any) -> Producer:
    """A producer tuned for bursts (batching, no per-message round trips)."""
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "linger.ms": 5,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 2_000_000,
        "queue.buffering.max.kbytes": 2_097_151,
        "compression.type": "lz4",
        "acks": "all",
    }
    conf.update(extra)
    return Producer(conf)


def produce(prod: Producer, topic: str, values: Iterable[tuple[str, bytes]]) -> int:
    """Produce keyed messages (key: the path) and wait for every delivery; return the count."""
    failures: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    count = 0
    for key, value in values:
        while True:
            try:
                prod.produce(topic, value=value, key=key.encode(), on_delivery=delivered)
                break
            except BufferError:
                prod.poll(0.05)
        count += 1
        if count % 10_000 == 0:
            prod.poll(0)
    remaining = prod.flush(120)
    if remaining or failures:
        raise RuntimeError(f"{remaining} undelivered, failures: {failures[:3]}")
    return count

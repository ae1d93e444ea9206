"""Entry point of the Kafka bridge: wire settings, database, projector and consumer together.

Start-up order matters for probes: the HTTP endpoint comes first (so /healthz
can say what the bridge is waiting for), then the schema migrations (safe when
several replicas start at once), then the projector thread and the consumer
loop, which runs on the main thread until SIGTERM/SIGINT.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from types import FrameType

from kafka_bridge.consumer import BridgeConsumer
from kafka_bridge.health import Health
from kafka_bridge.projector import Projector
from kafka_bridge.recorder import Recorder, Result, wait_for_database
from mwa_staging import kube
from mwa_staging import settings as settings_mod
from mwa_staging.db.migrate import migrate
from mwa_staging.observability import serve_http, setup_logging

log = logging.getLogger("kafka_bridge")


def _member(configured: str | None) -> str:
    """The heartbeat row's name: the pod name in a cluster, host and pid elsewhere."""
    return configured or f"{socket.gethostname()}-{os.getpid()}"


def run() -> None:
    """Run the bridge until SIGTERM or SIGINT."""
    settings = settings_mod.load()
    setup_logging(settings.log_level, settings.log_format)
    settings.warn_insecure()  # TLS verification turned off: said loudly at every start
    health = Health(settings.bridge_unhealthy_after_s)
    serve_http(settings.bridge_http_port, health.check, settings.http_bind_address)
    stop = threading.Event()
    consumer: BridgeConsumer | None = None

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: finishing the batch in hand", signal.Signals(signum).name)
        stop.set()
        if consumer is not None:
            consumer.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    dsn = settings.dsn()
    conn = wait_for_database(dsn, stop, health)
    if conn is None:
        return
    try:
        applied = migrate(conn)
        if applied:
            log.info("schema migrations applied: %s", applied)
    finally:
        conn.close()

    writers = settings.bridge_completion_writers
    # The projector thread and its completion writers share one API client.
    jobs = kube.StagingJobs(kube.api_client(settings.kubeconfig, pool_maxsize=writers + 1))
    projector = Projector(
        dsn,
        jobs,
        min_interval_s=settings.bridge_patch_interval_ms / 1000.0,
        patch_rate=settings.bridge_patch_rate,
        writers=writers,
    )
    projector.start()

    def after_commit(result: Result) -> None:
        projector.wake(result.recorded.completed)

    recorder = Recorder(
        dsn,
        topic=settings.kafka_topic,
        max_message_bytes=settings.bridge_max_message_bytes,
        malformed_keep=settings.bridge_malformed_keep,
        health=health,
    )
    member = _member(settings.bridge_member)
    consumer = BridgeConsumer(settings, recorder, health, member=member, after_commit=after_commit)
    if stop.is_set():
        consumer.stop()
    log.info(
        "bridge %s consuming %s as group %s from %s (%s)",
        member,
        settings.kafka_topic,
        settings.kafka_group,
        settings.kafka_server,
        settings.kafka_security_protocol,
    )
    try:
        consumer.run()
    finally:
        projector.stop()
        recorder.close()
    log.info("stopped")
    sys.stdout.flush()

"""Apache Kafka 4.x in KRaft combined mode, run with the JDK from the cached jars.

Three listeners on loopback: PLAINTEXT (inter-broker traffic and the services of
the dev stack), SASL_SSL with SCRAM-SHA-512 (what production uses: a PKCS12
keystore signed by the stack CA, SANs 127.0.0.1 and localhost, advertised as
127.0.0.1 so librdkafka's hostname check passes) and CONTROLLER. The SCRAM user is
written into the metadata log by ``StorageTool format --add-scram``, so it exists
before the broker accepts its first client. Internal topics use replication
factor 1. Once ready, the stack topic is created with 4 partitions so consumer
groups matter.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from devstack import build
from devstack.components.base import Component

if TYPE_CHECKING:
    from devstack.components.base import StackView as Stack

TOPIC_PARTITIONS = 4

_QUIET = logging.getLogger("devstack.kafka.admin")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False

LOG4J2 = """\
Configuration:
  status: warn
  Appenders:
    Console:
      name: STDOUT
      target: SYSTEM_OUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: info
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka
        level: warn
      - name: org.apache.kafka
        level: warn
      - name: kafka.server.KafkaServer
        level: info
      - name: kafka.server.BrokerServer
        level: info
"""


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise RuntimeError("java is needed to run Kafka (apt-get install openjdk-17-jre-headless)")
    return found


class Kafka(Component):
    kind = "kafka"
    ready_timeout = 90.0
    stop_timeout = 30.0

    def dir(self, stack: Stack) -> Path:
        return stack.root / "kafka"

    def unavailable(self, stack: Stack) -> str | None:
        if not build.kafka_done():
            return "the Kafka jars are not in the cache (make build)"
        return None

    def _classpath(self) -> str:
        return ":".join(str(p) for p in sorted(build.kafka_libs_dir().glob("*.jar")))

    def _java_argv(self, stack: Stack, main: str) -> list[str]:
        return [
            _java(),
            "-Xms128m",
            "-Xmx512m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.dir(stack) / 'log4j2.yaml'}",
            f"-Dkafka.logs.dir={self.dir(stack) / 'logs'}",
            "-cp",
            self._classpath(),
            main,
        ]

    def server_properties(self, stack: Stack) -> str:
        plain, sasl, controller = (
            stack.port("kafka-plaintext"),
            stack.port("kafka-sasl"),
            stack.port("kafka-controller"),
        )
        keystore = stack.pki.pkcs12(
            stack.pki.issue("kafka", common_name="127.0.0.1"),
            stack.secret("kafka-keystore-password"),
        )
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{controller}",
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{plain},SASL_SSL://127.0.0.1:{sasl},"
                f"CONTROLLER://127.0.0.1:{controller}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{plain},SASL_SSL://127.0.0.1:{sasl}",
            "listener.security.protocol.map": (
                "PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT"
            ),
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(keystore),
            "ssl.keystore.password": stack.secret("kafka-keystore-password"),
            "ssl.client.auth": "none",
            "log.dirs": str(self.dir(stack) / "data"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "2",
        }
        return "".join(f"{key}={value}\n" for key, value in props.items())

    def prepare(self, stack: Stack) -> None:
        kdir = self.dir(stack)
        (kdir / "logs").mkdir(parents=True, exist_ok=True)
        (kdir / "log4j2.yaml").write_text(LOG4J2)
        (kdir / "server.properties").write_text(self.server_properties(stack))
        if (kdir / "data" / "meta.properties").exists():
            return
        cluster_id = stack.secret("kafka-cluster-id", factory=_cluster_id)
        scram = f"SCRAM-SHA-512=[name={stack.kafka_user},password={stack.secret('kafka-password')}]"
        argv = [
            *self._java_argv(stack, "kafka.tools.StorageTool"),
            "format",
            f"--cluster-id={cluster_id}",  # ids may start with "-": keep it in one argument
            f"--config={kdir / 'server.properties'}",
            "--add-scram",
            scram,
            "--ignore-formatted",
        ]
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"kafka storage format failed:\n{result.stdout}\n{result.stderr}")

    def argv(self, stack: Stack) -> list[str]:
        return [*self._java_argv(stack, "kafka.Kafka"), str(self.dir(stack) / "server.properties")]

    def admin(self, stack: Stack) -> AdminClient:
        # librdkafka logs every refused connection while the broker starts: keep it quiet.
        config: dict[str, Any] = {
            "bootstrap.servers": stack.env_value("KAFKA_BOOTSTRAP"),
            "socket.timeout.ms": 2000,
            "logger": _QUIET,
        }
        return AdminClient(config)

    def probe(self, stack: Stack) -> bool:
        metadata = self.admin(stack).list_topics(timeout=2)
        return bool(metadata.brokers)

    def after_ready(self, stack: Stack) -> None:
        admin = self.admin(stack)
        topic = stack.env_value("KAFKA_TOPIC")
        if topic in admin.list_topics(timeout=10).topics:
            return
        futures = admin.create_topics(
            [NewTopic(topic, num_partitions=TOPIC_PARTITIONS, replication_factor=1)],
            operation_timeout=30,
        )
        try:
            futures[topic].result(timeout=30)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise

    def ports(self, stack: Stack) -> list[int]:
        return [stack.port(k) for k in ("kafka-plaintext", "kafka-sasl", "kafka-controller")]


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding."""
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")

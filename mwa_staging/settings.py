"""Every setting of the operator and the Kafka bridge, read once from the environment.

One pydantic-settings object is built at start-up and passed to whatever needs
it; nothing else reads ``os.environ``. Variable names follow the original
deployment where one existed (``SCOUT_API_USER``, ``DBHOST``, ``KAFKA_SERVER``,
``JOB_EXPIRY_TIME``...), so an existing configuration carries over. Secrets are
``SecretStr``: their ``repr`` and ``str`` show ``**********``, so logging a
settings object cannot leak them.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any, Literal
from urllib.parse import quote

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from mwa_staging.callback_policy import IPNetwork, parse_networks

log = logging.getLogger(__name__)

#: A list setting: JSON (``["a", "b"]``, what the chart writes) or comma-separated text.
TextList = Annotated[list[str], NoDecode]

# Paths of the Scout REST API below its base URL (docs/contracts.md, Scout API).
SCOUT_PATHS = {
    "login": "/v1/security/login",
    "stage": "/v1/request/batchstage",
    "cancel": "/v1/request/cancelbatchstage",
    "query": "/v1/file",
    "cachestate": "/v1/fscache",
}


class Settings(BaseSettings):
    """Configuration shared by the operator and the bridge (each uses its part)."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    # --- PostgreSQL -------------------------------------------------------
    database_url: SecretStr | None = Field(
        default=None, description="libpq URL; overrides the DB* variables."
    )
    dbuser: str = "mwa"
    dbpassword: SecretStr = SecretStr("")
    dbhost: str = "localhost"
    dbport: int = 5432
    dbname: str = "mwa_staging"

    # --- Kubernetes -------------------------------------------------------
    kubeconfig: str | None = Field(
        default=None, description="kubeconfig path; in-cluster config when unset."
    )

    # --- Scout API (through HAProxy) ---------------------------------------
    scout_url: str = Field(
        default="https://haproxy:8080",
        description="Base URL of the Scout API front (HAProxy).",
    )
    scout_login_url: str | None = None
    scout_stage_url: str | None = None
    scout_cancel_url: str | None = None
    scout_query_url: str | None = None
    scout_cachestate_url: str | None = None
    scout_api_user: str = ""
    scout_api_password: SecretStr = SecretStr("")
    scout_ca_file: str | None = Field(default=None, description="CA bundle for Scout's TLS.")
    scout_tls_verify: bool = Field(
        default=True, description="Verify Scout's TLS certificate. Turn off only knowingly."
    )
    scout_timeout_seconds: float = 30.0
    scout_max_paths_per_call: int = Field(default=10_000, ge=1, le=10_000)
    scout_retry_budget_seconds: float = Field(
        default=120.0, description="How long transient Scout failures are retried."
    )
    scout_retry_initial_seconds: float = Field(
        default=0.5, gt=0, description="First pause between retries of a failed Scout call."
    )
    scout_retry_max_seconds: float = Field(
        default=15.0, gt=0, description="Longest pause between retries of a failed Scout call."
    )
    scout_status_concurrency: int = Field(
        default=8, ge=1, description="File-status queries in flight at once (restage pass)."
    )
    scout_status_rate_per_second: float = Field(
        default=100.0,
        gt=0,
        description="File-status queries per second, all restage passes together: the archive"
        " is shared, so a 100,000-file pass takes about 100,000 / rate seconds.",
    )

    # --- Kafka -------------------------------------------------------------
    kafka_server: str = Field(
        default="localhost:9092",
        validation_alias=AliasChoices("KAFKA_SERVER", "KAFKA_BOOTSTRAP"),
    )
    kafka_topic: str = "mwa-staging"
    kafka_group: str = "mwa-staging-bridge"
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_SSL", "SSL", "SASL_PLAINTEXT"] = "PLAINTEXT"
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_user: str = ""
    kafka_password: SecretStr = SecretStr("")
    kafka_ca: str | None = Field(default=None, description="CA file for the broker's TLS.")
    kafka_tls_verify: bool = True

    # --- MWA data_files service -------------------------------------------------
    data_files_url: str = "http://ws.mwatelescope.org/metadata/data_files"
    data_files_timeout_seconds: float = Field(
        default=60.0, gt=0, description="Whole-answer time limit of one data_files attempt."
    )
    data_files_max_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="Largest data_files answer read (100,000 files are ~15 MB); larger: code 100.",
    )
    data_files_ca_file: str | None = Field(
        default=None, description="CA bundle for the data_files service's TLS."
    )
    data_files_tls_verify: bool = True
    data_files_attempts: int = Field(default=3, ge=1)
    data_files_retry_seconds: float = Field(
        default=2.0, ge=0, description="First pause between data_files attempts (doubles)."
    )

    # --- Callback ----------------------------------------------------------
    result_username: str = ""
    result_password: SecretStr = SecretStr("")
    callback_timeout_seconds: float = 60.0
    callback_rate_per_minute: int = Field(default=200, ge=1)
    callback_backoff_initial_seconds: float = 5.0
    callback_backoff_max_seconds: float = 600.0
    callback_give_up_seconds: float = Field(
        default=7 * 86400, description="Stop retrying an undelivered callback after this long."
    )
    callback_ca_file: str | None = None
    callback_tls_verify: bool = True
    callback_allowed_hosts: TextList = Field(
        default_factory=list,
        description="If set, callbacks go only to these host names (others fail with 199);"
        " a leading dot allows a domain's subdomains. Empty: any host (the address rules of"
        " CALLBACK_ALLOWED_NETWORKS still apply).",
    )
    callback_allowed_networks: TextList = Field(
        default_factory=list,
        description="CIDRs a callback host may resolve to although they are loopback,"
        " link-local, metadata, unspecified or multicast (refused otherwise).",
    )
    callback_concurrency: int = Field(
        default=20, ge=1, description="Callback POSTs in flight at once, across all jobs."
    )

    # --- Job lifecycle (defaults of the spec's optional fields) -------------
    job_expiry_time: int = Field(
        default=172_800, ge=1, description="Default activeDeadlineSeconds (seconds)."
    )
    file_restage_interval: int = Field(
        default=21_600, ge=1, description="Default restageIntervalSeconds (seconds)."
    )
    scheduler_max_sleep_seconds: float = Field(
        default=30.0, description="Longest the operator's scheduler sleeps without a wake-up."
    )
    scheduler_batch: int = Field(
        default=200, ge=1, description="Due items of one kind claimed per scheduler pass."
    )
    cancel_retry_seconds: float = Field(
        default=60.0, gt=0, description="Pause before a failed Scout cancel is tried again."
    )
    restage_concurrency: int = Field(
        default=4, ge=1, description="Jobs whose restage pass runs at once."
    )

    # --- Operator process ----------------------------------------------------
    watch_namespace: str = Field(
        default="",
        description="Comma-separated namespaces the operator serves; empty: all namespaces.",
    )
    db_pool_size: int = Field(
        default=6, ge=1, description="PostgreSQL connections the operator keeps for its work."
    )
    status_write_concurrency: int = Field(
        default=6,
        ge=1,
        description="Status writes the operator makes at once, each with its own PostgreSQL"
        " connection (held while the API server answers the patch, so they have their own"
        " pool and never hold up the database steps of other jobs).",
    )

    # --- Kafka bridge ------------------------------------------------------
    bridge_batch_size: int = Field(default=5000, ge=1)
    bridge_batch_window_ms: int = Field(default=50, ge=1)
    bridge_patch_interval_ms: int = Field(
        default=1000,
        ge=0,
        description="At most one progress status patch per job per this interval (a person"
        " watching sees no more than one change a second; completions are patched at once).",
    )
    bridge_completion_writers: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Completion status patches the bridge makes at once, each with its own"
        " PostgreSQL connection (with thousands of jobs finishing together, one at a time"
        " left their Complete status minutes behind the database).",
    )
    bridge_patch_rate: float = Field(
        default=10.0,
        gt=0,
        description="Progress status patches per second, all jobs together (completions are"
        " patched at once): with N jobs receiving files, each is patched every N/rate seconds"
        " at most.",
    )
    bridge_max_message_bytes: int = 65_536
    bridge_malformed_keep: int = Field(default=10_000, ge=1)
    bridge_auto_offset_reset: Literal["earliest", "latest"] = Field(
        default="earliest",
        description="Where a group without committed offsets starts (earliest: lose nothing).",
    )
    bridge_heartbeat_interval_s: float = Field(
        default=2.0, gt=0, description="How often the bridge_heartbeat row is written."
    )
    bridge_unhealthy_after_s: float = Field(
        default=60.0,
        gt=0,
        description="/healthz fails once the broker or the database is unreachable this long.",
    )
    bridge_member: str | None = Field(
        default=None, description="Heartbeat row name; default host name and process id."
    )

    # --- File lists (spec.filesFrom: ConfigMaps holding big lists) ----------
    filelist_wait_seconds: float = Field(
        default=30.0,
        ge=0,
        description="How long after a job's creation the operator waits for a ConfigMap of"
        " spec.filesFrom that does not exist yet (the gateway creates them just after the job).",
    )
    filelist_max_paths: int = Field(
        default=1_000_000, ge=1, description="Most paths a job's spec.filesFrom may hold."
    )
    filelist_max_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1,
        description="Most bytes the decompressed lists of one job may take (a gzip bomb guard).",
    )

    # --- HTTP gateway (the original service's API) ---------------------------
    gateway_namespace: str = Field(
        default="default", description="Namespace where the gateway creates its StagingJobs."
    )
    gateway_host: str = "0.0.0.0"
    gateway_port: int = 8082
    gateway_auth: Literal["token", "none"] = Field(
        default="token",
        description="token: every API call needs a bearer token (or Basic auth with a token as"
        " password); none: no authentication (the original's behaviour; logged as a warning).",
    )
    gateway_tokens: SecretStr = Field(
        default=SecretStr(""), description="Accepted tokens, separated by commas or whitespace."
    )
    gateway_tokens_file: str | None = Field(
        default=None,
        description="A file of accepted tokens (one per line, e.g. a mounted Secret); re-read"
        " when it changes, so tokens rotate without a restart.",
    )
    gateway_max_body_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1024, description="Larger request bodies get 413."
    )
    gateway_max_files: int = Field(
        default=100_000, ge=1, description="Most paths in one POST /staging or /filestatus."
    )
    gateway_max_path_length: int = Field(default=4096, ge=1, le=4096)
    gateway_max_url_length: int = Field(default=2048, ge=1, le=2048)
    gateway_inline_files: int = Field(
        default=1000,
        ge=1,
        le=10_000,
        description="Jobs with up to this many paths carry them in spec.files; larger ones in"
        " gzip-compressed ConfigMaps named by spec.filesFrom.",
    )
    gateway_confirm_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long POST /staging waits for the operator to record the new job (to"
        " answer 403 for a duplicate job id created meanwhile) before answering 202 anyway.",
    )
    gateway_job_ttl_seconds: int | None = Field(
        default=86_400,
        ge=0,
        description="ttlSecondsAfterFinished of the StagingJobs the gateway creates (None: keep).",
    )
    gateway_scout_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Retry budget of one Scout call made for an HTTP request."
    )
    gateway_filestatus_concurrency: int = Field(default=16, ge=1)
    fscache_poll_seconds: float = Field(
        default=60.0, gt=0, description="How often the gateway reads Scout's /v1/fscache."
    )
    report_expiredays: int = Field(
        default=30, ge=0, description="Days a failed-job report is kept (REPORT_EXPIREDAYS)."
    )

    # --- Bounds on what the outside sends back ------------------------------
    scout_max_response_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="Largest Scout answer read."
    )

    # --- Process -----------------------------------------------------------
    operator_http_port: int = 8080
    bridge_http_port: int = 8081
    http_bind_address: str = Field(
        default="0.0.0.0",
        description="Address of the /healthz and /metrics listener (127.0.0.1 on a host network).",
    )
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"

    @field_validator("callback_allowed_hosts", "callback_allowed_networks", mode="before")
    @classmethod
    def _text_list(cls, value: Any) -> Any:
        """Accept JSON lists and comma/whitespace-separated text from the environment."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return text.replace(",", " ").split()
        return value

    @field_validator("callback_allowed_networks", mode="after")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        parse_networks(value)  # ValueError (a settings error at start) for a bad CIDR
        return value

    @model_validator(mode="after")
    def _fill_scout_urls(self) -> Settings:
        """Derive each Scout endpoint from SCOUT_URL unless it was given explicitly."""
        base = self.scout_url.rstrip("/")
        for name, path in SCOUT_PATHS.items():
            attr = f"scout_{name}_url"
            if not getattr(self, attr):
                setattr(self, attr, base + path)
        return self

    def dsn(self) -> str:
        """The libpq connection string (contains the password: never log it)."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        user = quote(self.dbuser, safe="")
        password = quote(self.dbpassword.get_secret_value(), safe="")
        return f"postgresql://{user}:{password}@{self.dbhost}:{self.dbport}/{self.dbname}"

    def gateway_token_list(self) -> list[str]:
        """The tokens of GATEWAY_TOKENS (the file's are read by the gateway itself)."""
        return self.gateway_tokens.get_secret_value().replace(",", " ").split()

    def watch_namespaces(self) -> list[str]:
        """The namespaces of WATCH_NAMESPACE (empty list: every namespace)."""
        return [ns.strip() for ns in self.watch_namespace.split(",") if ns.strip()]

    def scout_verify(self) -> bool | str:
        """The ``verify`` argument for httpx: a CA file, True, or False (opt-out)."""
        if not self.scout_tls_verify:
            return False
        return self.scout_ca_file or True

    def callback_verify(self) -> bool | str:
        """The ``verify`` argument for callback requests."""
        if not self.callback_tls_verify:
            return False
        return self.callback_ca_file or True

    def data_files_verify(self) -> bool | str:
        """The ``verify`` argument for data_files requests."""
        if not self.data_files_tls_verify:
            return False
        return self.data_files_ca_file or True

    def callback_networks(self) -> list[IPNetwork]:
        """CALLBACK_ALLOWED_NETWORKS, parsed."""
        return parse_networks(self.callback_allowed_networks)

    def tls_warnings(self) -> list[str]:
        """One line per connection whose certificate check was turned off (logged at start)."""
        off = [
            ("SCOUT_TLS_VERIFY", self.scout_tls_verify),
            ("DATA_FILES_TLS_VERIFY", self.data_files_tls_verify),
            ("CALLBACK_TLS_VERIFY", self.callback_tls_verify),
            ("KAFKA_TLS_VERIFY", self.kafka_tls_verify),
        ]
        return [
            f"{name}=false: TLS certificates are NOT verified on this connection"
            for name, verify in off
            if not verify
        ]

    def warn_insecure(self, logger: logging.Logger | None = None) -> list[str]:
        """Log :meth:`tls_warnings` as warnings (each process calls this at start)."""
        found = self.tls_warnings()
        for line in found:
            (logger or log).warning("%s", line)
        return found

    def kafka_config(self) -> dict[str, str]:
        """librdkafka settings for the broker connection (shared by consumers and tools)."""
        conf = {
            "bootstrap.servers": self.kafka_server,
            "security.protocol": self.kafka_security_protocol,
        }
        if self.kafka_security_protocol.startswith("SASL"):
            conf["sasl.mechanism"] = self.kafka_sasl_mechanism
            conf["sasl.username"] = self.kafka_user
            conf["sasl.password"] = self.kafka_password.get_secret_value()
        if self.kafka_security_protocol in ("SASL_SSL", "SSL"):
            if self.kafka_ca:
                conf["ssl.ca.location"] = self.kafka_ca
            conf["enable.ssl.certificate.verification"] = (
                "true" if self.kafka_tls_verify else "false"
            )
        return conf


def load() -> Settings:
    """Read the settings from the environment (call once, at start-up)."""
    return Settings()

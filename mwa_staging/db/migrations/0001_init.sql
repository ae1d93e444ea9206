-- Initial schema of mwa-staging. The database is the source of truth for every
-- job; the StagingJob status is a projection of the `jobs` row (see
-- mwa_staging/status.py). Applied by mwa_staging.db.migrate, never by hand.

-- One row per StagingJob, keyed by the object's uid.
CREATE TABLE jobs (
    id                     bigserial PRIMARY KEY,
    uid                    text NOT NULL UNIQUE,
    namespace              text NOT NULL,
    name                   text NOT NULL,
    job_id                 bigint NOT NULL,
    -- A live job holds its job id: a second job with the same id in the same
    -- namespace is refused while this is true. Cleared when the job's story is
    -- over (callback delivered or given up, or no callback due).
    live                   boolean NOT NULL DEFAULT true,
    state                  text NOT NULL DEFAULT 'pending'
                           CHECK (state IN ('pending', 'resolving', 'staging', 'complete', 'failed')),
    reason                 text,
    message                text,
    return_code            integer,
    generation             bigint NOT NULL DEFAULT 1,
    total_files            integer NOT NULL DEFAULT 0,
    ready_files            integer NOT NULL DEFAULT 0,
    error_files            integer NOT NULL DEFAULT 0,
    created_at             timestamptz NOT NULL DEFAULT now(),
    start_time             timestamptz,
    resolved_at            timestamptz,
    stage_requested_at     timestamptz,
    last_file_time         timestamptz,
    completion_time        timestamptz,
    deadline               timestamptz,
    restage_interval_s     integer NOT NULL DEFAULT 21600,
    next_restage_at        timestamptz,
    ttl_after_finished_s   integer,
    notify_url             text NOT NULL,
    callback_secret        text,
    callback_state         text NOT NULL DEFAULT 'none'
                           CHECK (callback_state IN ('none', 'pending', 'delivered', 'gave_up')),
    callback_attempts      integer NOT NULL DEFAULT 0,
    callback_last_attempt  timestamptz,
    callback_last_error    text,
    callback_next_attempt  timestamptz,
    callback_delivered_at  timestamptz,
    -- Status projection bookkeeping: every change that the status shows bumps
    -- `version`; a projector writes the status and then records the version it
    -- wrote. version > projected_version means the status is behind ("dirty").
    version                bigint NOT NULL DEFAULT 1,
    projected_version      bigint NOT NULL DEFAULT 0,
    projected_at           timestamptz
);
CREATE UNIQUE INDEX jobs_live_job_id ON jobs (namespace, job_id) WHERE live;
CREATE INDEX jobs_dirty ON jobs (id) WHERE version > projected_version;
CREATE INDEX jobs_callback_due ON jobs (callback_next_attempt) WHERE callback_state = 'pending';
CREATE INDEX jobs_deadline ON jobs (deadline) WHERE state IN ('resolving', 'staging');
CREATE INDEX jobs_restage_due ON jobs (next_restage_at) WHERE state = 'staging';

-- One row per (job, path). state: 0 pending, 1 ready (on disk), 2 error.
CREATE TABLE job_files (
    job         bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    path        text NOT NULL,
    state       smallint NOT NULL DEFAULT 0 CHECK (state IN (0, 1, 2)),
    error       text,
    updated_at  timestamptz,
    PRIMARY KEY (job, path)
) WITH (fillfactor = 85);
-- fillfactor leaves room on each page so that marking a file ready (state and
-- updated_at change, no indexed column does) is a HOT update: no index writes.
-- The bridge finds every job holding an arrived path through this index.
CREATE INDEX job_files_path ON job_files (path);
-- The failed-path sample in status reads only failed rows. Its predicate is on
-- `error`, not `state`, so that the common pending -> ready update stays HOT.
CREATE INDEX job_files_failed ON job_files (job) WHERE error IS NOT NULL;

-- Every callback attempt, for people and for the status' callback block.
CREATE TABLE callback_attempts (
    job          bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt      integer NOT NULL,
    at           timestamptz NOT NULL DEFAULT now(),
    http_status  integer,
    error        text,
    PRIMARY KEY (job, attempt)
);

-- Kafka messages that could not be understood, kept (bounded) for inspection.
CREATE TABLE malformed_messages (
    id           bigserial PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    topic        text NOT NULL,
    partition    integer NOT NULL,
    "offset"     bigint NOT NULL,
    reason       text NOT NULL,
    payload      bytea,
    UNIQUE (topic, partition, "offset")
);

-- Monotonic counters the bridge keeps (e.g. messages for paths in no job).
CREATE TABLE bridge_counters (
    name   text PRIMARY KEY,
    value  bigint NOT NULL DEFAULT 0
);

-- The bridge's heartbeat, one row per consumer (replica).
CREATE TABLE bridge_heartbeat (
    member        text PRIMARY KEY,
    last_poll     timestamptz,
    last_message  timestamptz,
    broker_ok     boolean NOT NULL DEFAULT false,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- The Kafka bridge's applied offsets, written in the same transaction as the
-- arrivals of each batch. Kafka's committed offset trails the database by up to
-- one batch (it is committed after the transaction); on redelivery the bridge
-- skips every message below `next_offset`, so counters that are not naturally
-- idempotent (unknown-path messages, malformed messages) are not counted twice.
-- If the topic is ever deleted and recreated, delete its rows here as well.
CREATE TABLE bridge_offsets (
    topic        text NOT NULL,
    partition    integer NOT NULL,
    next_offset  bigint NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);

-- Parallel loads. A load splits the source's keys into ranges (chunks) that any
-- worker of any daemon claims, one at a time, under a lease. Each batch a worker
-- commits renews its lease and checks its fencing token in the batch's own
-- transaction, so a worker whose chunk was taken over writes nothing more.
CREATE TABLE {schema}.loads (
    sync_name   text PRIMARY KEY,
    load_id     text NOT NULL,
    -- The newest cursor value the load's snapshot saw: once every chunk is done,
    -- the sync goes on reading rows from it (less the lookback).
    since       text,
    -- The source snapshot the chunks read at, while its exporter keeps it alive.
    snapshot    text,
    planned_by  text NOT NULL,
    planned_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz
);

CREATE TABLE {schema}.chunks (
    sync_name    text NOT NULL,
    chunk        integer NOT NULL,
    load_id      text NOT NULL,
    -- Key positions as JSON text: after lower_bound (NULL: the first key) up to and
    -- including upper_bound (NULL: the last key), resuming after resume_key.
    lower_bound  json,
    upper_bound  json,
    resume_key   json,
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'done')),
    owner        text,
    lease_until  timestamptz,
    token        bigint NOT NULL DEFAULT 0,
    attempts     integer NOT NULL DEFAULT 0,
    rows_read    bigint NOT NULL DEFAULT 0,
    rows_written bigint NOT NULL DEFAULT 0,
    -- Every instance that committed a batch of this chunk, in order.
    workers      text[] NOT NULL DEFAULT '{}',
    finished_at  timestamptz,
    PRIMARY KEY (sync_name, chunk)
);

-- After a load, a sync reads on from the load's cursor value until it has a position.
ALTER TABLE {schema}.sync_state ADD COLUMN since text;

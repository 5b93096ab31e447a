-- syncd's own bookkeeping. {schema} is replaced by the quoted state schema.
CREATE TABLE {schema}.sync_state (
    sync_name       text PRIMARY KEY,
    -- The last committed keyset position: the cursor value (if any) then the key
    -- values, each in its source text form. NULL means "from the start".
    position        jsonb,
    current_offset  bigint NOT NULL DEFAULT 0,
    total_synced    bigint NOT NULL DEFAULT 0,
    last_sync_at    timestamptz,
    is_complete     boolean NOT NULL DEFAULT false,
    holder_host     text,
    holder_pid      integer,
    holder_since    timestamptz,
    holder_run_id   text,
    last_error      text,
    reset_at        timestamptz
);

CREATE TABLE {schema}.runs (
    run_id          text PRIMARY KEY,
    sync_name       text NOT NULL,
    trigger         text NOT NULL,
    started_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at     timestamptz,
    status          text NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'succeeded', 'failed', 'interrupted', 'cancelled')),
    batches         integer NOT NULL DEFAULT 0,
    rows_read       bigint NOT NULL DEFAULT 0,
    rows_written    bigint NOT NULL DEFAULT 0,
    rows_unchanged  bigint NOT NULL DEFAULT 0,
    error           text
);

CREATE INDEX runs_by_sync ON {schema}.runs (sync_name, started_at DESC);

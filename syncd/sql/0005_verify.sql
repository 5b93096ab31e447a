-- Verify. Each verify's outcome, as `syncd verify --json` prints it; and each row a
-- repair deleted or marked deleted, written in the transaction that did it.
CREATE TABLE {schema}.verifications (
    verify_id   text PRIMARY KEY,
    sync_name   text NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    repair      boolean NOT NULL,
    equal       boolean NOT NULL,
    result      jsonb NOT NULL
);

CREATE INDEX verifications_by_sync ON {schema}.verifications (sync_name, finished_at DESC);

CREATE TABLE {schema}.deletes (
    -- Checked at commit: the verify's record is written last, once it knows what was deleted.
    verify_id  text NOT NULL REFERENCES {schema}.verifications DEFERRABLE INITIALLY DEFERRED,
    sync_name  text NOT NULL,
    key        jsonb NOT NULL,
    mode       text NOT NULL CHECK (mode IN ('soft', 'hard')),
    deleted_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX deletes_by_sync ON {schema}.deletes (sync_name, deleted_at DESC);

-- Schema drift. The source's columns as the last run saw them, so that a change is
-- noticed; the columns a policy ignores or keeps after a drop; a backfill's own
-- keyset position while a new column is filled in; and the history of changes.
ALTER TABLE {schema}.sync_state
    ADD COLUMN source_columns   json,
    ADD COLUMN ignored_columns  text[] NOT NULL DEFAULT '{}',
    ADD COLUMN dropped_columns  text[] NOT NULL DEFAULT '{}',
    ADD COLUMN backfill_columns text[] NOT NULL DEFAULT '{}',
    ADD COLUMN backfill_position json;

CREATE TABLE {schema}.schema_changes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sync_name   text NOT NULL,
    run_id      text,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    column_name text NOT NULL,
    change      text NOT NULL CHECK (change IN ('added', 'dropped', 'type_changed')),
    old_type    text,
    new_type    text,
    action      text NOT NULL
);

CREATE INDEX schema_changes_by_sync ON {schema}.schema_changes (sync_name, at DESC);

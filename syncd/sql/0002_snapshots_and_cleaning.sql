-- A full pass read at one snapshot (Oracle SCN) keeps that snapshot in its
-- checkpoint, so a resumed pass reads the same data. Runs count the values that
-- had to be cleaned (NUL characters) on the way in.
ALTER TABLE {schema}.sync_state ADD COLUMN snapshot text;
ALTER TABLE {schema}.runs ADD COLUMN values_cleaned bigint NOT NULL DEFAULT 0;

-- jsonb cannot hold the character U+0000, which an Oracle key may contain: a run
-- that reached such a key could never save its position. json keeps the text as
-- written, escapes included.
ALTER TABLE {schema}.sync_state ALTER COLUMN position TYPE json USING position::text::json;

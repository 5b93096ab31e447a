-- Runs inside the batch's transaction, after the upsert: the position and the
-- counters move together with the rows, or not at all.
WITH state AS (
    UPDATE {schema}.sync_state
       SET position       = $2::json,
           current_offset = current_offset + $3,
           total_synced   = total_synced + $4,
           last_sync_at   = clock_timestamp(),
           is_complete    = $6,
           snapshot       = $8,
           last_error     = NULL
     WHERE sync_name = $1
)
UPDATE {schema}.runs
   SET batches        = batches + 1,
       rows_read      = rows_read + $3,
       rows_written   = rows_written + $4,
       rows_unchanged = rows_unchanged + $5,
       values_cleaned = values_cleaned + $9
 WHERE run_id = $7

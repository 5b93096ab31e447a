-- Runs inside a chunk batch's transaction, after its rows are written. No row
-- matches once another worker holds a newer token: the caller then rolls the
-- batch back, rows and all. A match renews the lease.
UPDATE {schema}.chunks
   SET resume_key   = $3::json,
       rows_read    = rows_read + $4,
       rows_written = rows_written + $5,
       lease_until  = clock_timestamp() + $6::interval,
       workers      = CASE WHEN workers[cardinality(workers)] IS DISTINCT FROM owner
                           THEN workers || owner ELSE workers END
 WHERE sync_name = $1 AND chunk = $2 AND token = $7 AND status = 'running'
RETURNING chunk

-- The first chunk of the sync's load that nobody works on: never started, or its
-- worker's lease ran out. SKIP LOCKED lets concurrent claimers pass each other by.
-- A new token fences out whoever held the chunk before.
WITH next AS (
    SELECT sync_name, chunk, status AS was, owner AS previous_owner
      FROM {schema}.chunks
     WHERE sync_name = $1 AND load_id = $2
       AND (status = 'pending' OR (status = 'running' AND lease_until < clock_timestamp()))
     ORDER BY chunk
     LIMIT 1
       FOR UPDATE SKIP LOCKED
)
UPDATE {schema}.chunks AS c
   SET status = 'running', owner = $3, token = c.token + 1, attempts = c.attempts + 1,
       lease_until = clock_timestamp() + $4::interval
  FROM next
 WHERE c.sync_name = next.sync_name AND c.chunk = next.chunk
RETURNING c.chunk, c.lower_bound::text, c.upper_bound::text, c.resume_key::text, c.token,
          next.was = 'running' AS reclaimed, next.previous_owner

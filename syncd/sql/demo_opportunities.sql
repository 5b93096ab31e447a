-- Realistic sales opportunities, made by the server itself so that even a
-- million rows take seconds. {table} is the quoted table name, {rows} the row count.
CREATE TABLE {table} (
    opportunity_id    bigint PRIMARY KEY,
    opportunity_name  text NOT NULL,
    account_name      text NOT NULL,
    owner_email       text NOT NULL,
    stage             text NOT NULL,
    amount            numeric(14, 2),
    currency          char(3) NOT NULL,
    probability       smallint,
    close_date        date,
    created_at        timestamptz NOT NULL,
    last_update_date  timestamptz NOT NULL,
    region            text,
    product_line      text,
    is_won            boolean,
    notes             text
);

INSERT INTO {table}
SELECT n,
       (ARRAY['Renewal', 'Expansion', 'New logo', 'Upsell', 'Pilot'])[1 + n % 5]
           || ' – ' || (ARRAY['Acme', 'Globex', 'Initech', 'Umbrella', 'Stark', 'Wayne', 'Tyrell', 'Cyberdyne'])[1 + (n * 7) % 8]
           || ' ' || (n % 97)::text,
       (ARRAY['Acme Corp', 'Globex GmbH', 'Initech Ltd', 'Umbrella SA', 'Stark Industries', 'Wayne Enterprises', 'Tyrell Corp', 'Cyberdyne Systems'])[1 + (n * 7) % 8],
       'rep' || (n % 40)::text || '@example.com',
       (ARRAY['Prospecting', 'Qualification', 'Proposal', 'Negotiation', 'Closed Won', 'Closed Lost'])[1 + (n * 13) % 6],
       CASE WHEN n % 50 = 0 THEN NULL ELSE round((1000 + (n * 7919) % 250000)::numeric + (n % 100) / 100.0, 2) END,
       (ARRAY['EUR', 'USD', 'GBP'])[1 + n % 3],
       ((n * 37) % 11 * 10)::smallint,
       date '2026-01-01' + (n % 365)::integer,
       timestamptz '2024-01-01 00:00:00+00' + n * interval '37 seconds',
       timestamptz '2024-06-01 00:00:00+00' + (n / 3) * interval '61 seconds' + (n % 3) * interval '1 microsecond',
       (ARRAY['EMEA', 'AMER', 'APAC', NULL])[1 + n % 4],
       (ARRAY['Platform', 'Analytics', 'Support', 'Training'])[1 + (n * 3) % 4],
       CASE (n * 13) % 6 WHEN 4 THEN true WHEN 5 THEN false END,
       CASE WHEN n % 10 = 0 THEN 'Follow up “next quarter” 🚀 — ''urgent'''
            WHEN n % 10 = 1 THEN NULL
            ELSE 'Call notes #' || n::text END
  FROM generate_series(1::bigint, {rows}) AS n;

CREATE INDEX ON {table} (last_update_date, opportunity_id);
ANALYZE {table};

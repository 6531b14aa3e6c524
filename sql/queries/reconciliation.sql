-- A provider's transaction report against the ledger (app/operator/reconciliation.py). The
-- report's lines are copied into reconciliation_lines, a temporary table of the transaction,
-- and matched here, so that neither side of a large day is held in the app.

-- name: create_reconciliation_lines
CREATE TEMPORARY TABLE reconciliation_lines (
    line            integer NOT NULL,
    transaction_id  text PRIMARY KEY,
    round_id        text,
    player_id       text NOT NULL,
    event           text NOT NULL,
    amount          bigint NOT NULL,
    currency        text NOT NULL
) ON COMMIT DROP;

-- name: analyze_reconciliation_lines
-- Autovacuum never analyzes a temporary table: without this, the planner guesses its size.
ANALYZE reconciliation_lines;

-- name: provider_findings
-- Every line or posting the two sides do not agree on: the lines in file order (each matched by
-- transaction id with the provider's posting of any day), then the day's postings no line
-- names, in the order they were posted. Lines both sides agree on are not returned.
SELECT l.line, l.transaction_id, l.event AS provider_event, l.player_id AS provider_player_id,
       l.round_id AS provider_round_id, l.amount AS provider_amount,
       l.currency AS provider_currency, t.kind AS wallet_event,
       t.player_id AS wallet_player_id, t.round_id AS wallet_round_id,
       reconciliation_amount(t.amount, t.delta) AS wallet_amount,
       t.currency AS wallet_currency, t.created_at AS wallet_posted_at
  FROM reconciliation_lines l
  LEFT JOIN ledger_transactions t ON t.source = :provider AND t.external_id = l.transaction_id
 WHERE t.id IS NULL
    OR (t.kind, t.player_id, t.round_id, reconciliation_amount(t.amount, t.delta), t.currency)
       IS DISTINCT FROM (l.event, l.player_id, l.round_id, l.amount, l.currency)
UNION ALL
SELECT NULL, t.external_id, NULL, NULL, NULL, NULL, NULL, t.kind, t.player_id, t.round_id,
       reconciliation_amount(t.amount, t.delta), t.currency, t.created_at
  FROM ledger_transactions t
 WHERE t.source = :provider AND t.created_at >= :since AND t.created_at < :until
   AND NOT EXISTS (SELECT 1 FROM reconciliation_lines l WHERE l.transaction_id = t.external_id)
 ORDER BY line NULLS LAST, wallet_posted_at, transaction_id;

-- name: provider_totals
-- Per currency, each side's count and amount sum: the report's lines, and the provider's
-- postings of the day (those a line names from another day are not the day's).
SELECT currency, sum(provider_count)::bigint AS provider_count,
       sum(provider_amount) AS provider_amount, sum(wallet_count)::bigint AS wallet_count,
       sum(wallet_amount) AS wallet_amount
  FROM (SELECT currency, count(*) AS provider_count, sum(amount) AS provider_amount,
               0 AS wallet_count, 0 AS wallet_amount
          FROM reconciliation_lines
         GROUP BY currency
        UNION ALL
        SELECT currency, 0, 0, count(*), sum(reconciliation_amount(amount, delta))
          FROM ledger_transactions
         WHERE source = :provider AND created_at >= :since AND created_at < :until
         GROUP BY currency) sides
 GROUP BY currency
 ORDER BY currency;

-- name: reconciliation_timeout
-- For the rest of the transaction: matching a large day takes longer than a request's usual
-- allowance (WALLET_DB_STATEMENT_TIMEOUT_MS).
SELECT set_config('statement_timeout', :timeout, true);

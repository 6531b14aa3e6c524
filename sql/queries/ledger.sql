-- name: check_unbalanced_transactions
-- Postings whose entries do not sum to zero in each currency.
SELECT e.transaction_id, a.currency, sum(e.amount)::bigint AS total
  FROM entries e JOIN accounts a ON a.id = e.account_id
 GROUP BY e.transaction_id, a.currency
HAVING sum(e.amount) <> 0
 ORDER BY e.transaction_id
 LIMIT :limit;

-- name: check_player_balances
-- Player balances that differ from the sum of their entries. Both sides are materialised first:
-- with the LIMIT right on top of the join, the planner walks accounts in owner order and joins
-- each one against the whole aggregate, which on a ledger of millions of entries (whose distinct
-- account count it underestimates) took time quadratic in the number of players.
WITH totals AS MATERIALIZED (
    SELECT account_id, sum(amount) AS total FROM entries GROUP BY account_id
), differing AS MATERIALIZED (
    SELECT a.owner AS player_id, a.currency, a.balance,
           coalesce(t.total, 0)::bigint AS entries_total
      FROM accounts a
      LEFT JOIN totals t ON t.account_id = a.id
     WHERE a.kind = 'player' AND a.balance IS DISTINCT FROM coalesce(t.total, 0)
)
SELECT * FROM differing ORDER BY player_id LIMIT :limit;

-- name: check_negative_balances
SELECT owner AS player_id, currency, balance FROM accounts
 WHERE kind = 'player' AND balance < 0
 ORDER BY owner
 LIMIT :limit;

-- name: check_orphan_entries
-- Entries that name no account (entries carry no foreign key to accounts; see 001_ledger.sql).
SELECT e.id AS entry_id, e.transaction_id, e.account_id FROM entries e
 WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = e.account_id)
 ORDER BY e.id
 LIMIT :limit;

-- name: check_transaction_deltas
-- Postings whose recorded delta is not what their entries moved on the player's account.
SELECT t.id AS transaction_id, t.player_id, t.delta, coalesce(e.amount, 0)::bigint AS entry_amount
  FROM ledger_transactions t
  JOIN players p ON p.player_id = t.player_id
  LEFT JOIN entries e ON e.transaction_id = t.id AND e.account_id = p.account_id
 WHERE t.delta <> coalesce(e.amount, 0)
 ORDER BY t.id
 LIMIT :limit;

-- name: ledger_check_lock
-- Transaction-level, taken first in the periodic check's own transaction and released by its
-- end: a session lock would outlive a check whose statements PgBouncer (transaction pooling)
-- ran on different server connections, and the pool skips the reset that would drop it. Any
-- other process trying meanwhile skips its turn.
SELECT pg_try_advisory_xact_lock(hashtextextended('wallet-ledger-check', 0));

-- name: ledger_check_last
SELECT problems, extract(epoch FROM finished_at)::float8 AS finished_at,
       finished_at < now() - make_interval(secs => :period_seconds) AS due
  FROM ledger_check_last;

-- name: record_ledger_check
INSERT INTO ledger_check_last (finished_at, problems) VALUES (now(), :problems)
    ON CONFLICT (only_row) DO UPDATE SET finished_at = excluded.finished_at,
                                         problems = excluded.problems
RETURNING extract(epoch FROM finished_at)::float8;

-- name: ledger_check_statement_timeout
-- For the transaction of the periodic check only: its scans of the whole ledger may take longer
-- than WALLET_DB_STATEMENT_TIMEOUT_MS, which is sized for requests.
SELECT set_config('statement_timeout', (:timeout_ms::bigint)::text, true);

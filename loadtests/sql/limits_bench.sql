-- Seeding for the limits benchmark (loadtests/limits_bench.py) and its regression test
-- (tests/seamless/test_limits.py): one player's long history of this month, in one statement.
--
-- Like bench.sql, everything is what the wallet itself would have written: balanced postings
-- with their entries, rounds, and the account balance moved by the same amounts, so the ledger
-- check passes on a seeded database.

-- name: limits_history
-- :rounds past rounds of player :player_id at provider :provider in currency :currency, spread
-- evenly from the start of this month (UTC) to a minute ago: a bet of 100, then half a step
-- later either its cancel (every tenth round) or its result, a win of 225 (even rounds) or a loss
-- of 0 (odd rounds, no entries).
-- Every round is closed. Each group of ten rounds nets zero, so the balance ends where it began.
WITH span AS (
    SELECT wallet_window_start('monthly') AS start,
           (now() - interval '1 minute' - wallet_window_start('monthly')) / :rounds::bigint AS step
), rounds_played AS (
    SELECT i, s.start + s.step * (i - 1) AS at, s.step / 2 AS later
      FROM span s, generate_series(1, :rounds::bigint) AS i
), postings AS (
    SELECT i, at, 'bet' AS kind, 'lb-bet-' || :player_id || '-' || i AS external_id, 100 AS amount,
           -100 AS delta, NULL AS ref
      FROM rounds_played
    UNION ALL
    SELECT i, at + later,
           CASE WHEN i % 10 = 0 THEN 'cancel' ELSE 'result' END,
           CASE WHEN i % 10 = 0 THEN 'lb-can-' ELSE 'lb-res-' END || :player_id || '-' || i,
           CASE WHEN i % 10 = 0 THEN 100 WHEN i % 2 = 0 THEN 225 ELSE 0 END,
           CASE WHEN i % 10 = 0 THEN 100 WHEN i % 2 = 0 THEN 225 ELSE 0 END,
           CASE WHEN i % 10 = 0 THEN 'lb-bet-' || :player_id || '-' || i END
      FROM rounds_played
), player AS (
    SELECT a.id AS account_id, a.balance FROM players p JOIN accounts a ON a.id = p.account_id
     WHERE p.player_id = :player_id
), tx AS (
    INSERT INTO ledger_transactions (source, external_id, kind, player_id, currency, amount, delta,
                                     balance_after, round_id, game_id, ref_external_id,
                                     created_at)
    SELECT :provider, p.external_id, p.kind, :player_id, :currency, p.amount, p.delta,
           pl.balance + sum(p.delta) OVER (ORDER BY p.at, p.kind <> 'bet'),
           'lb-round-' || p.i, 'lb-slot', p.ref, p.at
      FROM postings p CROSS JOIN player pl
    RETURNING id, delta
), rnd AS (
    INSERT INTO rounds (provider, player_id, round_id, game_id, bets, cancelled_bets, results,
                        closed_at, created_at)
    SELECT :provider, :player_id, 'lb-round-' || i, 'lb-slot', 1, (i % 10 = 0)::integer,
           (i % 10 <> 0)::integer, at + later, at
      FROM rounds_played
), moved AS (
    -- Zero by construction for whole groups of ten; a last partial group moves the balance.
    UPDATE accounts a SET balance = a.balance + (SELECT coalesce(sum(delta), 0) FROM tx)
      FROM player pl WHERE a.id = pl.account_id
), counter AS (
    SELECT wallet_clearing_account('provider', :provider, :currency) AS account_id
)
INSERT INTO entries (transaction_id, account_id, amount)
SELECT t.id, e.account_id, e.amount
  FROM tx t
 CROSS JOIN player pl
 CROSS JOIN counter c
 CROSS JOIN LATERAL (VALUES (pl.account_id, t.delta), (c.account_id, -t.delta))
       AS e (account_id, amount)
 WHERE t.delta <> 0;

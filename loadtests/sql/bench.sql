-- Set-based seeding for the benchmark: many players and a long ledger history in a few
-- statements, where going through the operator API one player at a time would take hours.
--
-- Everything written here is what the wallet itself would have written: every funding and every
-- history posting is a balanced ledger transaction with its entries, every account balance equals
-- the sum of its entries, so `wallet ledger check` passes on a seeded database.
--
-- Players are "<prefix><i>"; the session token of player i is "<token_prefix><i>" (only its
-- SHA-256 is stored, as the wallet does), so the load generator can derive any player's token
-- without a file of a million tokens.

-- name: bench_players
-- Players :first ..= :last with accounts holding :balance each in currency :currency, funded by
-- one adjustment each.
WITH ids AS (
    SELECT i, :prefix || i AS player_id FROM generate_series(:first::bigint, :last::bigint) AS i
), acc AS (
    INSERT INTO accounts (kind, owner, currency, balance)
    SELECT 'player', player_id, :currency, :balance::bigint FROM ids
    RETURNING id, owner
), ply AS (
    INSERT INTO players (player_id, account_id, currency)
    SELECT owner, id, :currency FROM acc
    RETURNING player_id, account_id
), house AS (
    SELECT wallet_clearing_account('house', 'adjustments', :currency) AS account_id
), fund AS (
    INSERT INTO ledger_transactions (source, external_id, kind, player_id, currency, amount, delta,
                                     balance_after, metadata, created_at)
    SELECT '#adjustment', 'bench-funding-' || p.player_id, 'adjustment', p.player_id, :currency,
           :balance, :balance, :balance,
           '{"reason": "benchmark funding", "actor": "loadtests.bench"}'::jsonb,
           now() - interval '31 days'
      FROM ply p
    RETURNING id, player_id
)
INSERT INTO entries (transaction_id, account_id, amount)
SELECT f.id, e.account_id, e.amount
  FROM fund f
  JOIN ply p ON p.player_id = f.player_id
 CROSS JOIN house h
 CROSS JOIN LATERAL (VALUES (p.account_id, :balance::bigint), (h.account_id, -:balance::bigint))
       AS e (account_id, amount);

-- name: bench_sessions
-- One session of provider :provider for each of players :first ..= :last, valid for a day, token
-- ":token_prefix<i>".
INSERT INTO sessions (token_hash, player_id, provider, game_id, expires_at)
SELECT sha256(convert_to(:token_prefix || i, 'UTF8')), :prefix || i, :provider, 'bench-slot',
       now() + interval '1 day'
  FROM generate_series(:first::bigint, :last::bigint) AS i;

-- name: bench_history
-- :rounds past rounds for each of players :first ..= :last of provider :provider: a bet of 100 and
-- a result of 200 (even rounds) or 0 (odd rounds, no entries), spread over the last 30 days,
-- closed. Each player ends :rounds % 2 * 100 above their funding; the balance column is moved by
-- the same amount.
WITH rounds_played AS (
    SELECT :prefix || i AS player_id, r,
           now() - interval '30 days' + (r * interval '1 hour') + (i % 3600) * interval '1 second'
               AS at
      FROM generate_series(:first::bigint, :last::bigint) AS i,
           generate_series(0, :rounds - 1) AS r
), postings AS (
    SELECT player_id, r, at, kind, delta
      FROM rounds_played,
           LATERAL (VALUES ('bet', -100), ('result', CASE WHEN r % 2 = 0 THEN 200 ELSE 0 END))
           AS k (kind, delta)
), tx AS (
    INSERT INTO ledger_transactions (source, external_id, kind, player_id, currency, amount, delta,
                                     balance_after, round_id, game_id, created_at)
    SELECT :provider, 'bench-' || kind || '-' || player_id || '-' || r, kind, player_id, :currency,
           abs(delta), delta, :balance::bigint + CASE WHEN r % 2 = 1 THEN 100 ELSE 0 END
                             + CASE WHEN kind = 'bet' THEN -100 ELSE delta - 100 END,
           'bench-round-' || r, 'bench-slot',
           at + CASE WHEN kind = 'bet' THEN interval '0' ELSE interval '1 second' END
      FROM postings
    RETURNING id, player_id, delta
), rnd AS (
    INSERT INTO rounds (provider, player_id, round_id, game_id, bets, results, closed_at,
                        created_at)
    SELECT :provider, player_id, 'bench-round-' || r, 'bench-slot', 1, 1, at, at FROM rounds_played
), moved AS (
    UPDATE accounts a SET balance = a.balance + 100
      FROM players p, generate_series(:first::bigint, :last::bigint) AS i
     WHERE :rounds % 2 = 1 AND p.player_id = :prefix || i AND a.id = p.account_id
), counter AS (
    SELECT wallet_clearing_account('provider', :provider, :currency) AS account_id
)
INSERT INTO entries (transaction_id, account_id, amount)
SELECT t.id, e.account_id, e.amount
  FROM tx t
  JOIN players p ON p.player_id = t.player_id
 CROSS JOIN counter c
 CROSS JOIN LATERAL (VALUES (p.account_id, t.delta), (c.account_id, -t.delta))
       AS e (account_id, amount)
 WHERE t.delta <> 0;

-- name: bench_counts
SELECT (SELECT count(*) FROM players WHERE player_id LIKE 'bp%') AS players,
       (SELECT count(*) FROM ledger_transactions WHERE external_id LIKE 'bench-bet-%') * 2
           AS history,
       (SELECT count(*) FROM ledger_transactions) AS ledger_transactions,
       (SELECT count(*) FROM entries) AS entries;

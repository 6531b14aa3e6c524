-- The game side of contract 1.1: typed wins, promotions, free rounds, end of round, the round's
-- lifecycle and its timeline.

-- Ledger kinds: promo_win credits outside game rounds (tournament prizes, cash drops, campaign
-- payouts). NOT VALID then VALIDATE: existing rows are checked without holding writers back.
ALTER TABLE ledger_transactions DROP CONSTRAINT ledger_transactions_kind_check;
ALTER TABLE ledger_transactions ADD CONSTRAINT ledger_transactions_kind_check CHECK (kind IN (
    'bet', 'cancel', 'result', 'result_change', 'adjustment', 'promo_win',
    'deposit', 'withdrawal_hold', 'withdrawal_release', 'withdrawal_settle')) NOT VALID;
ALTER TABLE ledger_transactions VALIDATE CONSTRAINT ledger_transactions_kind_check;

-- What a credit was, stored with the posting: the kind of a result (win, jackpot, bonus,
-- free_round), which its corrections carry too; NULL on every other posting. A bet of a free
-- round names its grant. Both are nullable columns with no default: adding them rewrites nothing.
ALTER TABLE ledger_transactions
    ADD COLUMN result_kind text
        CONSTRAINT ledger_transactions_result_kind
        CHECK (result_kind IN ('win', 'jackpot', 'bonus', 'free_round')),
    ADD COLUMN free_round_id bigint;

-- Free-round grants, given by the operator to one player for one provider and game: `rounds`
-- bets of `bet_value` each, until `expires_at`. `used` counts the bets that took a round (a
-- cancel gives it back); a withdrawn grant has no round left. The database keeps the count
-- within the grant, whatever races.
CREATE TABLE free_rounds (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    player_id      text NOT NULL REFERENCES players (player_id),
    provider       text NOT NULL REFERENCES providers (code),
    game_id        text NOT NULL CHECK (game_id ~ '^[A-Za-z0-9_.:-]{1,64}$'),
    rounds         integer NOT NULL CHECK (rounds BETWEEN 1 AND 100000),
    used           integer NOT NULL DEFAULT 0,
    bet_value      bigint NOT NULL CHECK (bet_value > 0),
    currency       text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    expires_at     timestamptz NOT NULL,
    withdrawn_at   timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT free_rounds_used_within CHECK (used BETWEEN 0 AND rounds)
);
CREATE INDEX free_rounds_by_player ON free_rounds (player_id, id);

-- The round's lifecycle. `state` is derived from the counts and stamps the posting functions
-- keep, so it cannot disagree with them:
--   open       bets (or results with round_closed false) and no closing yet;
--   cancelled  every bet cancelled, nothing closed it;
--   closed     closed by a result, or by end_round (closed_by says which);
--   settled    settled by an operator (settled_action refund or close).
-- `transactions` lists the round's postings in order (ledger ids): its timeline reads them by
-- primary key, with no index on the ledger for rounds. `free_round_bets` counts bets of free
-- rounds: the round's results are then credited as kind free_round.
ALTER TABLE rounds
    ADD COLUMN closed_by text CHECK (closed_by IN ('result', 'end_round', 'operator')),
    ADD COLUMN settled_action text CHECK (settled_action IN ('refund', 'close')),
    ADD COLUMN free_round_bets integer NOT NULL DEFAULT 0,
    ADD COLUMN transactions bigint[] NOT NULL DEFAULT '{}';
UPDATE rounds SET closed_by = 'result' WHERE closed_at IS NOT NULL;
ALTER TABLE rounds ADD COLUMN state text NOT NULL GENERATED ALWAYS AS (
    CASE WHEN settled_action IS NOT NULL THEN 'settled'
         WHEN closed_at IS NOT NULL THEN 'closed'
         WHEN bets > 0 AND bets = cancelled_bets THEN 'cancelled'
         ELSE 'open' END) STORED;
-- Stale rounds are open ones past an age: this finds them without reading closed rounds.
CREATE INDEX rounds_open ON rounds (created_at) WHERE closed_at IS NULL;
-- A player's rounds, newest first (the operator's listing by player).
CREATE INDEX rounds_by_player ON rounds (player_id, created_at);

-- The round events that post nothing: an end_round that closed the round, an operator's
-- settlement. Append-only, like the ledger; with the round's postings they are its timeline.
CREATE TABLE round_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider    text NOT NULL,
    player_id   text NOT NULL,
    round_id    text NOT NULL,
    event       text NOT NULL CHECK (event IN ('end_round', 'settle_refund', 'settle_close')),
    request_id  text,
    actor       text,
    reason      text,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX round_events_by_round ON round_events (provider, player_id, round_id, id);
CREATE TRIGGER round_events_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON round_events
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

-- A replayed delivery answers with the balance of its first delivery, from Redis or from here
-- alike (before, this table's replays carried the balance at the time of the replay).
ALTER TABLE seamless_requests ADD COLUMN balance bigint, ADD COLUMN currency text;

-- The new event fields reach the batch in its rows: the result's kind, the bet's free-round
-- grant, the promotion's id.
ALTER TYPE seamless_event
    ADD ATTRIBUTE result_kind text,
    ADD ATTRIBUTE free_round_id text,
    ADD ATTRIBUTE promo_id text;

-- Signatures that change (sql/functions/seamless.sql creates them anew).
DROP FUNCTION seamless_bet(text, text, text, text, text, bigint, text, bytea, text);
DROP FUNCTION seamless_result(text, text, text, text, text, bigint, text, boolean, text);

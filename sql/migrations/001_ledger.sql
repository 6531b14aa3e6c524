-- Ledger schema: providers and keys, players and their wallet accounts, sessions, rounds,
-- double-entry postings, and the seamless call history.
--
-- Where each guarantee lives:
--   no double posting     UNIQUE (source, external_id) on ledger_transactions
--   one refund per bet    partial UNIQUE (source, ref_external_id) WHERE kind = 'cancel'
--   no negative balance   CHECK (balance >= 0) on accounts
--   no hot row            only player accounts keep a balance column; provider and house accounts
--                         are derived from their entries, so no bet updates a shared row
--   append-only           triggers refuse UPDATE, DELETE and TRUNCATE on postings and entries

CREATE TABLE providers (
    code        text PRIMARY KEY CHECK (code ~ '^[A-Za-z0-9_.:-]{1,64}$'),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- At most two active keys per provider, current and previous, so keys rotate without downtime.
CREATE TABLE provider_keys (
    provider    text NOT NULL REFERENCES providers (code),
    key_id      text NOT NULL CHECK (key_id ~ '^[A-Za-z0-9_.:-]{1,64}$'),
    secret      bytea NOT NULL CHECK (octet_length(secret) = 32),
    state       text NOT NULL CHECK (state IN ('current', 'previous', 'retired')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, key_id)
);
CREATE UNIQUE INDEX provider_keys_one_current ON provider_keys (provider) WHERE state = 'current';
CREATE UNIQUE INDEX provider_keys_one_previous ON provider_keys (provider) WHERE state = 'previous';

CREATE TABLE accounts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('player', 'provider', 'house')),
    owner       text NOT NULL,
    currency    text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    balance     bigint CONSTRAINT accounts_balance_non_negative CHECK (balance >= 0),
    CONSTRAINT accounts_balance_for_players_only CHECK ((kind = 'player') = (balance IS NOT NULL)),
    UNIQUE (kind, owner, currency)
);

CREATE TABLE players (
    player_id   text PRIMARY KEY CHECK (player_id ~ '^[A-Za-z0-9_.:-]{1,64}$'),
    account_id  bigint NOT NULL UNIQUE REFERENCES accounts (id),
    currency    text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status      text NOT NULL DEFAULT 'active'
                CHECK (status IN ('active', 'blocked', 'self_excluded')),
    -- Know-your-customer level, set by the operator; payment methods may require a minimum.
    kyc_tier    smallint NOT NULL DEFAULT 0 CHECK (kyc_tier BETWEEN 0 AND 3),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Responsible-gaming limits; windows are calendar periods in UTC (see docs/contract.md).
-- A limit that is raised or removed changes only after a cooling-off period; a limit that is
-- lowered or newly set changes at once. The pending change sits beside the limit in force:
-- next_from NOT NULL means a change is pending, and next_amount NULL then means removal.
CREATE TABLE player_limits (
    player_id    text NOT NULL REFERENCES players (player_id),
    kind         text NOT NULL CHECK (kind IN ('deposit', 'wager', 'loss')),
    period       text NOT NULL CHECK (period IN ('daily', 'weekly', 'monthly')),
    amount       bigint NOT NULL CHECK (amount >= 0),
    next_amount  bigint CHECK (next_amount >= 0),
    next_from    timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (player_id, kind, period),
    CONSTRAINT player_limits_next_amount_needs_time
        CHECK (next_amount IS NULL OR next_from IS NOT NULL)
);

-- Only a hash of each token is kept, so a database dump cannot be replayed as sessions.
CREATE TABLE sessions (
    token_hash  bytea PRIMARY KEY,
    player_id   text NOT NULL REFERENCES players (player_id),
    provider    text NOT NULL REFERENCES providers (code),
    game_id     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    ended_at    timestamptz
);
CREATE INDEX sessions_by_player ON sessions (player_id, created_at DESC);

-- Round ids are the provider's and may be shared by many players at one live table, so a round
-- is keyed per player.
CREATE TABLE rounds (
    provider        text NOT NULL,
    player_id       text NOT NULL,
    round_id        text NOT NULL,
    game_id         text,
    bets            integer NOT NULL DEFAULT 0,
    cancelled_bets  integer NOT NULL DEFAULT 0,
    results         integer NOT NULL DEFAULT 0,
    closed_at       timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, player_id, round_id)
);

-- One row per accepted money event (and per operator adjustment). `source` is the provider code,
-- or '#adjustment' (not a valid provider code) for operator adjustments keyed by Idempotency-Key.
CREATE TABLE ledger_transactions (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source           text NOT NULL,
    external_id      text NOT NULL,
    kind             text NOT NULL
                     CHECK (kind IN ('bet', 'cancel', 'result', 'result_change', 'adjustment')),
    player_id        text NOT NULL REFERENCES players (player_id),
    currency         text NOT NULL,
    amount           bigint,          -- as the caller sent it (NULL: a cancel without amount)
    delta            bigint NOT NULL, -- signed change of the player's balance
    balance_after    bigint NOT NULL,
    round_id         text,
    game_id          text,
    ref_external_id  text,
    request_id       text,
    metadata         jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_transactions_idempotency UNIQUE (source, external_id)
);
CREATE UNIQUE INDEX ledger_one_cancel_per_bet
    ON ledger_transactions (source, ref_external_id) WHERE kind = 'cancel';
CREATE INDEX ledger_result_changes
    ON ledger_transactions (source, ref_external_id, id) WHERE kind = 'result_change';
CREATE INDEX ledger_by_player ON ledger_transactions (player_id, created_at, id);

-- No foreign key to accounts on purpose: a key check takes a KEY SHARE lock on the referenced
-- row, and every bet of every player would then lock the same provider account row.
-- The ledger check verifies instead that every entry names an existing account.
CREATE TABLE entries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id  bigint NOT NULL REFERENCES ledger_transactions (id),
    account_id      bigint NOT NULL,
    amount          bigint NOT NULL CHECK (amount <> 0),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX entries_by_transaction ON entries (transaction_id);
CREATE INDEX entries_by_account ON entries (account_id);

CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger rows are append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END
$$;
CREATE TRIGGER ledger_transactions_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER entries_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

-- Every seamless call, accepted or refused. Written in batches off the hot path.
CREATE TABLE seamless_calls (
    id                     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider               text NOT NULL,
    event                  text,
    request_id             text,
    player_id              text,
    transaction_id         text,
    code                   text NOT NULL,
    reason                 text NOT NULL,
    wallet_transaction_id  bigint,
    duplicate              boolean NOT NULL DEFAULT false,
    replayed               boolean NOT NULL DEFAULT false,
    latency_us             integer NOT NULL,
    created_at             timestamptz NOT NULL
);
CREATE INDEX seamless_calls_by_time ON seamless_calls (created_at, id);
-- The failures list is the calls answered R1 to R3 (R4 is a player's balance, not a fault).
CREATE INDEX seamless_calls_failures ON seamless_calls (id) WHERE code IN ('R1', 'R2', 'R3');
CREATE INDEX seamless_calls_by_player ON seamless_calls (player_id, created_at);
CREATE INDEX seamless_calls_by_provider ON seamless_calls (provider, id);

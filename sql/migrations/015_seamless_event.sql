-- The batch takes its events as one array of rows instead of thirteen parallel arrays, one per
-- field, that the app transposed its events into: each event reaches SQL whole, as the app's
-- Posting holds it (app/seamless/batch.py, the same fields in the same order), the way
-- pgledger's pgledger_create_transfers takes TRANSFER_REQUEST[].
--
-- A field the event does not have is NULL. token_hash is the SHA-256 of the session token,
-- event_hash the event's digest (app.seamless.events.digest).
CREATE TYPE seamless_event AS (
    event               text,
    provider            text,
    player_id           text,
    transaction_id      text,
    ref_transaction_id  text,
    round_id            text,
    game_id             text,
    amount              bigint,
    currency            text,
    token_hash          bytea,
    round_closed        boolean,
    request_id          text,
    event_hash          bytea
);

-- Its signature changes: sql/functions/seamless.sql creates it anew. IF EXISTS: on a database
-- migrating through 014 in the same run, 014 dropped it already and no function file ran since.
DROP FUNCTION IF EXISTS seamless_batch(text[], text[], text[], text[], text[], text[], text[], bigint[],
                             text[], bytea[], boolean[], text[], bytea[], integer, integer);

-- Free-round grants (sql/migrations/016_game_side.sql, `free_rounds`): what the operator API
-- reads of them.
--
-- The current definition of each function (see sql/README.md): edit it here, in place;
-- `wallet migrate` re-applies this file when it changes.

-- The state of a grant at p_at, the one definition the answers and the list's filter share (the
-- names are app.operator.free_rounds.STATES). A withdrawn grant stays withdrawn; one whose every
-- round is used is used_up, whether or not it has expired since (all it gave was taken); else it
-- is expired from expires_at on, the instant from which the bet function refuses its rounds
-- (`expires_at > now()`), and active before.
CREATE OR REPLACE FUNCTION free_round_state(
    p_rounds integer, p_used integer, p_expires_at timestamptz, p_withdrawn_at timestamptz,
    p_at timestamptz
) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_withdrawn_at IS NOT NULL THEN 'withdrawn'
                WHEN p_used >= p_rounds THEN 'used_up'
                WHEN p_expires_at <= p_at THEN 'expired'
                ELSE 'active' END
$$;

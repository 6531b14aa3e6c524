-- Reconciliation: how the ledger's postings compare with a counterpart's report.

-- The amount of a posting as the provider reports it: the amount its event carried (a bet's
-- stake, a win, a result_change's corrected total, a promotion's credit). A cancel sent without
-- an amount stored none: it compares by what it refunded (its delta; 0 for a tombstone).
CREATE OR REPLACE FUNCTION reconciliation_amount(p_amount bigint, p_delta bigint)
RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(p_amount, p_delta)
$$;

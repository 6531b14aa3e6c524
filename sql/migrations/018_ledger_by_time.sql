-- The ledger's postings by time: a reconciliation reads one provider's postings of one UTC day,
-- the daily report every posting of one day. BRIN, because postings are appended in time order
-- (created_at is the clock at insert): a few pages whatever the ledger's size, and nearly
-- nothing added to the cost of a posting, where a B-tree would be written on every bet.
CREATE INDEX ledger_by_time ON ledger_transactions USING brin (created_at);

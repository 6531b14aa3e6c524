"""The operator API, one module per resource.

Each module holds, in this order, its messages (the typed bodies, queries and answers of
:mod:`app.web.messages`), its rules (async functions taking a connection and raising
:mod:`app.web.errors`, used by its routes, by ``wallet`` commands and by the load tests), and its
``api``, whose ``routes`` :mod:`app.main` lists:

- :mod:`.providers`: game providers and their keys;
- :mod:`.players`: players, their status, KYC tier, limits and sessions;
- :mod:`.adjustments`: manual credits and debits;
- :mod:`.postings`: a player's postings and statements;
- :mod:`.reports`: the seamless call history, the ledger check, the daily report, the audit log;
- :mod:`.api_keys`: the operator API's own keys;
- :mod:`.rounds`: game rounds, their timelines, the settlement of stale ones;
- :mod:`.reconciliation`: a game provider's transaction report against the ledger.

Every administrative write records an audit entry (:mod:`app.audit`) in the same transaction as
the change itself, so the log can neither miss a change nor invent one.
"""

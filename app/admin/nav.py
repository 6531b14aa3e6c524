"""The nav bar: each entry names the API operation its screen stands on, and shows only for the
roles that operation allows."""

from __future__ import annotations

from app.admin import calls, deposits, events, players, records, rounds, withdrawals
from app.web.routing import Operation

NAV: list[tuple[str, str, Operation]] = [
    ("Players", "/players", players.LIST),
    ("Calls", "/calls", calls.CALLS),
    ("Rounds", "/rounds", rounds.LIST),
    ("Withdrawals", "/withdrawals", withdrawals.ATTENTION),
    ("Deposits", "/deposits", deposits.ATTENTION),
    ("Events", "/events", events.LIST),
    ("Audit", "/audit", records.AUDIT),
    ("Ledger", "/ledger", records.LEDGER),
    ("Daily", "/reports/daily", records.DAILY),
    ("PSP recon", "/reports/psp", records.PSP),
    ("Provider recon", "/reports/provider", records.PROVIDER),
]

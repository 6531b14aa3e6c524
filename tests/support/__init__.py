"""Helpers that tests import: no fixtures here."""

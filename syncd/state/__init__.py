"""Durable state: resume position, ledger, backfill progress, dead letters."""

from syncd.state.sqlite import BackfillProgress, DeadLetter, LedgerEntry, Position, StateStore

__all__ = ["BackfillProgress", "DeadLetter", "LedgerEntry", "Position", "StateStore"]

"""Raft-only benchmark: MedLedger Raft against PySyncObj (see README.md)."""

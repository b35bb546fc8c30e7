"""Deterministic simulation of Raft cores under faults (run.py), its command line
(__main__.py), and a scripted in-memory network for scenario tests (scripted.py)."""

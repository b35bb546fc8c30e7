"""Pending transactions waiting to be ordered."""

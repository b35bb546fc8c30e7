"""Turning pending transactions into ordered batches."""

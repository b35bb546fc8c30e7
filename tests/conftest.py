"""Settings every test process shares, including the node processes tests start."""

import os

# 1 MiB Raft log segments instead of 64: a test consortium makes dozens of data
# directories, and each holds a zero-filled segment and a spare.
os.environ.setdefault("MEDLEDGER_STORAGE_RAFT_SEGMENT_MB", "1")

"""Contract execution: the types every engine shares, the in-process engine, the sandbox."""

"""The ledger: block store, tx index, world state, history, all in one LevelDB."""

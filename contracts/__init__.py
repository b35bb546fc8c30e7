"""Built-in contract modules. Their source goes into the genesis block; nodes run the
code from the chain, never from this folder directly."""

"""How transactions, Raft messages, votes and blocks move between nodes."""

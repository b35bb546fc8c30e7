"""The `medledger` command."""

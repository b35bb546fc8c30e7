"""Keys, signatures, certificates and hashes."""

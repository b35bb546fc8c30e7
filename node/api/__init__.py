"""The integrator API: the medledger.v1.Gateway gRPC service."""

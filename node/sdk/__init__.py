"""The client SDK: identities and a Gateway client, used by the CLI and by integrators."""

from node.sdk.client import Client, ClientError, Identity

__all__ = ["Client", "ClientError", "Identity"]

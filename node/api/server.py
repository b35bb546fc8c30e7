"""Building and stopping the gRPC server: Gateway, health checking, reflection, TLS."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from medledger.v1 import gateway_pb2, gateway_pb2_grpc, vault_pb2, vault_pb2_grpc

from node.api.gateway import Gateway
from node.config import ApiSection

SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name
VAULT_SERVICE = vault_pb2.DESCRIPTOR.services_by_name["Vault"].full_name
MAX_MESSAGE = 64 * 1024 * 1024


class ApiError(Exception):
    pass


@dataclass
class ApiServer:
    server: grpc.Server
    pool: ThreadPoolExecutor
    health: health.HealthServicer
    port: int

    def stop(self, grace_s: float = 5.0) -> None:
        """Blocking: mark NOT_SERVING, stop accepting, wait for handlers to finish."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace_s).wait()
        self.pool.shutdown(wait=True, cancel_futures=True)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ApiError(f"cannot read {what} {path}: {exc.strerror}") from exc


def start(
    gateway: Gateway,
    api: ApiSection,
    resolve: Callable[[str], Path],
    vault: vault_pb2_grpc.VaultServicer | None = None,
) -> ApiServer:
    pool = ThreadPoolExecutor(max_workers=api.max_workers, thread_name_prefix="grpc")
    server = grpc.server(
        pool,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=api.max_workers * 8,
    )
    gateway_pb2_grpc.add_GatewayServicer_to_server(gateway, server)
    services = [SERVICE]
    if vault is not None:
        vault_pb2_grpc.add_VaultServicer_to_server(vault, server)
        services.append(VAULT_SERVICE)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*services, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    if api.tls:
        key = _read(resolve(api.tls_key), "TLS key")
        cert = _read(resolve(api.tls_certificate), "TLS certificate")
        client_ca = _read(resolve(api.client_ca), "client CA bundle") if api.client_ca else None
        creds = grpc.ssl_server_credentials(
            [(key, cert)],
            root_certificates=client_ca,
            require_client_auth=api.require_client_certificate,
        )
        port = server.add_secure_port(api.listen, creds)
    else:
        port = server.add_insecure_port(api.listen)
    if port == 0:
        pool.shutdown(wait=False)
        raise ApiError(
            f"cannot listen on api.listen = {api.listen!r} (address in use or not local)"
        )
    server.start()
    for name in ("", *services):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return ApiServer(server, pool, health_servicer, port)

"""A ProviderService plugin served by pyvider-rpcplugin 0.5.5 (grpc.aio): HealthCheck only,
for the Go host's throughput row. Runs in pyvider's venv; settings from the environment."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import _common as c

os.environ.update(
    {
        "PLUGIN_MAGIC_COOKIE_KEY": c.COOKIE_KEY,
        "PLUGIN_MAGIC_COOKIE_VALUE": c.COOKIE_VALUE,
        "PLUGIN_LOG_LEVEL": "ERROR",
        "PLUGIN_SHOW_EMOJI_MATRIX": "false",
    }
)
logging.disable(logging.WARNING)

import grpc  # noqa: E402
from pyvider.rpcplugin import RPCPluginProtocol, plugin_server  # noqa: E402

PB = c.provider_pb2()


class Handler:
    async def health(self, request: Any, context: Any) -> Any:
        return PB.HealthCheckResponse(code=0, message="ok")


class Provider(RPCPluginProtocol[Any, Handler]):
    async def get_grpc_descriptors(self) -> tuple[Any, str]:
        return PB.DESCRIPTOR, "protocol.ProviderService"

    async def add_to_server(self, server: Any, handler: Handler) -> None:
        method = grpc.unary_unary_rpc_method_handler(
            handler.health,
            request_deserializer=PB.HealthCheckRequest.FromString,
            response_serializer=PB.HealthCheckResponse.SerializeToString,
        )
        service = "protocol.ProviderService"
        generic = grpc.method_handlers_generic_handler(service, {"HealthCheck": method})
        server.add_generic_rpc_handlers((generic,))


async def main() -> None:
    await plugin_server(protocol=Provider(), handler=Handler()).serve()  # in the running loop


if __name__ == "__main__":
    asyncio.run(main())

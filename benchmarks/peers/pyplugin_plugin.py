"""A ProviderService plugin served by python-plugin 0.1.0 (grpclib): HealthCheck only,
for the Go host's throughput row. Runs in python-plugin's venv."""

from __future__ import annotations

from typing import Any

import _common as c
from grpclib.const import Cardinality, Handler
from pyplugin import HandshakeConfig, Plugin, ServeConfig, serve

PB = c.provider_pb2()


class ProviderServicer:
    async def health(self, stream: Any) -> None:
        await stream.recv_message()
        await stream.send_message(PB.HealthCheckResponse(code=0, message="ok"))

    def __mapping__(self) -> dict[str, Handler]:
        return {
            c.HEALTH: Handler(
                self.health, Cardinality.UNARY_UNARY, PB.HealthCheckRequest, PB.HealthCheckResponse
            )
        }


class Provider(Plugin):
    def servicers(self, broker: Any) -> list[Any]:
        return [ProviderServicer()]

    def stub(self, broker: Any, channel: Any) -> Any:
        raise NotImplementedError


if __name__ == "__main__":
    serve(
        ServeConfig(
            handshake_config=HandshakeConfig(c.APP_VERSION, c.COOKIE_KEY, c.COOKIE_VALUE),
            plugins={"provider": Provider()},
        )
    )

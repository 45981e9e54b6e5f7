"""The plugin side: write a go-plugin (AOG) plugin in Python.

A few lines serve a gRPC servicer the way go-plugin's ``plugin.Serve`` does::

    from aog_plugins.server import serve
    serve(lambda server: add_MyServicer_to_server(MyServicer(), server))
"""

from aog_plugins.server._broker import Broker, current_broker
from aog_plugins.server._hclog import HclogFormatter, configure_logging
from aog_plugins.server._provider import ProviderServicer, serve_provider
from aog_plugins.server._serve import (
    HEALTH_SERVICE,
    CookieMissing,
    PluginServer,
    Register,
    ServerOptions,
    serve,
)

__all__ = [
    "HEALTH_SERVICE",
    "Broker",
    "CookieMissing",
    "HclogFormatter",
    "PluginServer",
    "ProviderServicer",
    "Register",
    "ServerOptions",
    "configure_logging",
    "current_broker",
    "serve",
    "serve_provider",
]

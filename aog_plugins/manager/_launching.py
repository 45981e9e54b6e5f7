"""How the manager starts one plugin directory: the settings every plugin of a manager
shares, and the launch of one directory's executable with them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial

from aog_plugins.errors import ConfigurationError, PluginConnectError, PluginStartError
from aog_plugins.handshake import AOG_HANDSHAKE, HandshakeConfig
from aog_plugins.manager._discovery import Found, check_checksum
from aog_plugins.process import Plugin, PluginEvent, RestartPolicy, launch
from aog_plugins.transport import seconds

__all__ = ["LaunchSettings", "launch_found"]


@dataclass(frozen=True)
class LaunchSettings:
    """How the manager starts every plugin (see :class:`PluginManager` for each field)."""

    handshake: HandshakeConfig = AOG_HANDSHAKE
    auto_mtls: bool = True
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    start_timeout: float = 60.0
    env: Mapping[str, str] | None = None
    replace_env: bool = False
    aog_version: str | None = None
    checksums: Mapping[str, str] = field(default_factory=dict)
    kill_grace: float = 2.0
    drain_timeout: float = 30.0
    install_signal_handlers: bool = True

    def __post_init__(self) -> None:
        """Check the values (a typed error naming the bad one) and keep copies."""
        fix = partial(object.__setattr__, self)
        fix("start_timeout", seconds("start_timeout", self.start_timeout))
        fix("drain_timeout", seconds("drain_timeout", self.drain_timeout, zero=True))
        fix("kill_grace", seconds("kill_grace", self.kill_grace, zero=True))
        if not isinstance(self.restart, RestartPolicy):
            raise ConfigurationError(f"restart must be a RestartPolicy, got {self.restart!r}")
        sums = dict(self.checksums)
        for key, value in sums.items():
            if not isinstance(key, str) or not isinstance(value, str) or not value:
                raise ConfigurationError(
                    f"checksums maps plugin names to 'sha256:<hex>', got {key!r}: {value!r}"
                )
        fix("checksums", sums)
        fix("env", dict(self.env) if self.env is not None else None)

    def environment(self) -> tuple[dict[str, str] | None, dict[str, str]]:
        """(``env`` for launch: replaces the host's, or None), (``extra_env``: added)."""
        extra = dict(self.env or {})
        if self.aog_version is not None:
            extra["AOG_VERSION"] = self.aog_version
        if self.replace_env:
            return extra, {}
        return None, extra


def launch_found(
    found: Found, settings: LaunchSettings, on_event: Callable[[PluginEvent], None]
) -> Plugin:
    """Start ``found``'s executable (checksum first) as a supervised plugin, in its
    directory; errors name the plugin and its directory."""
    if found.error is not None:
        raise found.error
    assert found.executable is not None  # set whenever there is no error
    checksum = settings.checksums.get(found.name)
    bad = check_checksum(found, checksum)
    if bad is not None:
        raise bad
    env, extra_env = settings.environment()
    prefix = f"plugin {found.name!r} ({found.directory})"
    try:
        plugin = launch(
            str(found.executable),
            handshake=settings.handshake,
            auto_mtls=settings.auto_mtls,
            start_timeout=settings.start_timeout,
            env=env,
            extra_env=extra_env,
            restart=settings.restart,
            on_event=on_event,
            kill_grace=settings.kill_grace,
            logger=logging.getLogger(f"aog_plugins.plugin.{found.name}"),
            checksum=checksum,
            cwd=str(found.directory),
            install_signal_handlers=settings.install_signal_handlers,
        )
    except PluginStartError as exc:
        exc.message = f"{prefix}: {exc.message}"
        raise
    except PluginConnectError as exc:
        raise type(exc)(f"{prefix}: {exc}") from exc
    return plugin

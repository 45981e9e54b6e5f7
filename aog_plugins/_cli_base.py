"""What every CLI subcommand shares: the :class:`Command` record and the exit codes."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "EXIT_CODES",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "MAX_SECONDS",
    "Command",
    "path",
    "seconds",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
"""Not returned: the status a shell shows for a process that died of SIGTERM (128 + 15)."""

MAX_SECONDS = 365 * 24 * 3600
"""The longest time option the CLI takes (a year): far beyond that, gRPC deadlines and the
clocks the plugin start waits on overflow."""


def seconds(text: str) -> float:
    """The argparse ``type`` of every time option: a positive, finite number of seconds.

    Checked while parsing, so a bad value is a usage error (exit 2) naming the option,
    before anything starts; ``float`` alone takes ``0``, ``-1``, ``inf`` and ``nan``.
    """
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_SECONDS:  # also false for nan
        raise argparse.ArgumentTypeError(
            f"wants a number of seconds greater than 0 and at most {MAX_SECONDS} (a year), "
            f"got {text!r}"
        )
    return value


def path(text: str) -> str:
    """The argparse ``type`` of every path argument: not empty. ``Path("")`` is the current
    directory, so an unset shell variable (``aog-plugins run "$DIR"``) would otherwise
    list, run or invoke whatever plugins the current directory holds."""
    if not text:
        raise argparse.ArgumentTypeError("is empty; pass a path (an unset shell variable?)")
    return text


EXIT_CODES = f"""\
exit codes:
  {EXIT_OK}    success; for run, also its end by Ctrl-C or SIGTERM (every plugin stopped)
  {EXIT_FAILED}    the plugin failed: it could not be started or connected, a call failed,
       answered with an AOG error code, or the plugin died; or the output could
       not be written (the reader of a pipe went away, a full disk)
  {EXIT_USAGE}    usage: a bad option, --data that is not UTF-8 JSON, an unreadable or
       empty credential, a service the plugin's manifest does not list, a plugins
       directory where no plugin or several serve the service (nothing is called)
  {EXIT_INTERRUPTED}  interrupted by Ctrl-C (SIGINT); the plugin has been stopped (run exits
       {EXIT_OK} instead)
  {EXIT_TERMINATED}  ended by SIGTERM, as a shell shows it (128 + 15): the command dies of the
       signal once its plugins are stopped (run exits {EXIT_OK} instead)"""


@dataclass(frozen=True)
class Command:
    """One ``aog-plugins <name>`` subcommand.

    ``configure`` adds its arguments (each with a help line); ``run`` returns an exit code
    or raises an :class:`~aog_plugins.errors.AogPluginsError`, which the CLI turns into a
    short message and exit code 1 (2 for a ``ConfigurationError``). ``examples`` is shown
    at the end of the command's ``--help``.
    """

    name: str
    summary: str
    description: str
    examples: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]

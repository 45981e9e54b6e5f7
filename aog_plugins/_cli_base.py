"""What every CLI subcommand shares: the :class:`Command` record and the exit codes."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["EXIT_CODES", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "Command"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

EXIT_CODES = f"""\
exit codes:
  {EXIT_OK}    success
  {EXIT_FAILED}    the plugin failed: it could not be started or connected, a call failed,
       answered with an AOG error code, or the plugin died
  {EXIT_USAGE}    usage: a bad option, --data that is not JSON, an unreadable credential,
       a service the plugin's manifest does not list, a plugins directory where
       no plugin or several serve the service (nothing is called)
  {EXIT_INTERRUPTED}  interrupted by Ctrl-C (SIGINT); the plugin has been stopped"""


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

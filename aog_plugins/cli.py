"""The ``aog-plugins`` command line: start go-plugin (AOG) plugins, inspect and call them.

Subcommands are :class:`~aog_plugins._cli_base.Command` records listed in ``COMMANDS``;
adding one is adding its record there. Errors become one short message on stderr and an
exit code (see ``EXIT_CODES``); Ctrl-C stops the plugin and exits 130 without a traceback
(``run`` stops every plugin and exits 0: Ctrl-C or SIGTERM is how a run ends).
"""

from __future__ import annotations

import argparse
import errno
import io
import logging
import os
import sys
from collections.abc import Sequence
from typing import IO, Any

from aog_plugins._cli_base import (
    EXIT_CODES,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Command,
)
from aog_plugins._cli_call import INSPECT, INVOKE
from aog_plugins._cli_demo import DEMO
from aog_plugins._cli_manager import LIST, RUN
from aog_plugins._cli_show import CliLogFormatter, describe_error, hide_unimplemented_noise
from aog_plugins.errors import AogPluginsError, ConfigurationError, printable

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS: dict[str, Command] = {c.name: c for c in (DEMO, INSPECT, INVOKE, LIST, RUN)}
"""Every subcommand, in the order ``--help`` lists them."""

DESCRIPTION = """\
Host plugins that speak HashiCorp's go-plugin protocol (AOG provider plugins first):
start one, look at it, call it. Every command stops the plugins it started before it
exits. Run 'aog-plugins COMMAND --help' for a command's options and examples."""

EXAMPLES = """\
examples:
  aog-plugins demo
  aog-plugins inspect ./my-plugin
  aog-plugins invoke ./my-plugin chat --data '{"messages": []}'"""


def _plain(**kwargs: Any) -> dict[str, Any]:
    """argparse options for plain-text help (no colour on Pythons that would add it)."""
    if sys.version_info >= (3, 14):
        kwargs["color"] = False
    return kwargs


def _add_log_level(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--log-level",
        default=default,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="which plugin and library log records to show on stderr (default WARNING); "
        "DEBUG also shows the tracebacks plugins log",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, one subparser per entry of ``COMMANDS``."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        **_plain(
            prog="aog-plugins",
            description=DESCRIPTION,
            epilog=f"{EXAMPLES}\n\n{EXIT_CODES}",
            formatter_class=formatter,
        )
    )
    _add_log_level(parser, "WARNING")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="what to do (one of these)"
    )
    for command in COMMANDS.values():
        child = sub.add_parser(
            command.name,
            **_plain(
                help=command.summary,
                description=command.description,
                epilog=f"{command.examples}\n\n{EXIT_CODES}",
                formatter_class=formatter,
            ),
        )
        command.configure(child)
        _add_log_level(child, argparse.SUPPRESS)  # also accepted after the command
        child.set_defaults(run=command.run)
    return parser


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(CliLogFormatter(verbose=level == "DEBUG"))
    if level != "DEBUG":
        handler.addFilter(hide_unimplemented_noise)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level))


def _error(text: str) -> None:
    # Paths, names and services in a message may come from a plugins directory (or a
    # hostile argument): escape their control characters; the message's own lines stay.
    print(f"aog-plugins: error: {printable(text, newlines=True)}", file=sys.stderr, flush=True)


_STREAMS = (("stdin", 0, "r"), ("stdout", 1, "w"), ("stderr", 2, "w"))
_OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO})
"""Why writing stdout fails when the reader is still there (a full disk, ``>/dev/full``)."""


def _standard_streams() -> None:
    """Make stdin, stdout and stderr safe to use, whatever the shell gave us.

    A closed one (``2>&-``) is None in ``sys``: then ``print(file=sys.stderr)`` writes to
    stdout, mixing errors into the data, and the next file or pipe opened takes its fd
    (where C code, gRPC's logging, still writes). It becomes /dev/null. Text that cannot
    be encoded (a file name that is not UTF-8) is written escaped, not a traceback.
    """
    for name, fd, mode in _STREAMS:
        stream = getattr(sys, name)
        if stream is None:
            stream = _null_stream(fd, mode)
            setattr(sys, name, stream)
        if mode == "w" and isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def _null_stream(fd: int, mode: str) -> IO[str]:
    """/dev/null as ``fd`` when ``fd`` is closed; else (the fd belongs to whoever runs us
    without a ``sys`` stream for it, say a test runner) /dev/null on an fd of its own."""
    try:
        os.fstat(fd)
    except OSError:
        null = os.open(os.devnull, os.O_RDWR)  # the lowest free fd: ``fd`` itself
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        return open(fd, mode, closefd=False)
    return open(os.devnull, mode)


def _silence_stdout() -> None:
    """stdout failed: what is still buffered goes to /dev/null, not into an error at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 plugin failure, 2 usage, 130 Ctrl-C)."""
    _standard_streams()
    try:
        args = build_parser().parse_args(argv)
        _setup_logging(args.log_level)
        code: int = args.run(args)
        return code
    except KeyboardInterrupt:
        print("aog-plugins: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except ConfigurationError as exc:
        _error(describe_error(exc))
        return EXIT_USAGE
    except AogPluginsError as exc:
        _error(describe_error(exc))
        return EXIT_FAILED
    except BrokenPipeError:
        # The reader went away (e.g. '| head'): stop quietly, without a flush error at exit.
        _silence_stdout()
        return EXIT_FAILED
    except OSError as exc:
        if exc.errno not in _OUTPUT_ERRNOS or exc.filename is not None:
            raise  # not the output: a bug to see in full
        _silence_stdout()
        _error(f"cannot write the output: {exc.strerror}")
        return EXIT_FAILED

#!/usr/bin/env python3
"""aog-plugins next to go-plugin's Go host and the two Python peers on PyPI (issue 14).

    python benchmarks/bench_peers.py [--quick] [--rounds N] [--baseline DIR] [--name NAME]

Columns: go-plugin's Go host (``fixtures/hosts/go``), aog-plugins (this checkout; and its
asyncio API ``aog_plugins.aio`` as a column of its own where the checkout has it), the
grpcio floor (``peers/grpcio_floor_host.py``: spawn, read the handshake line, a bare grpcio
channel and call, nothing else; what no grpcio-based host can beat; ``--no-floor`` leaves
it out), and python-plugin 0.1.0 (grpclib) and pyvider-rpcplugin 0.5.5 (grpc.aio), each
installed by this script into a throwaway venv of its own (``--venvs``, default under
``~/.cache/aog-plugins/bench-venvs``; never a test dependency). ``--baseline DIR`` adds a
column for another checkout of aog-plugins (e.g. ``git worktree add /tmp/perf-old <commit>``),
run by the same interpreter with ``PYTHONPATH=DIR``: before/after in one interleaved run.

Every host loads the same Go AOG provider binary (``fixtures/plugins/go``), except in the
"plugin side" row, where the Go host loads each library's own Python plugin. The call
timed is ``ProviderService.HealthCheck``; the 16 MiB row is ``InvokeService("big")``.
Each measurement runs in a fresh process per host (the drivers are in
``benchmarks/peers/``), round after round, with the column order rotated every round, so
load from other processes on a shared machine hits every column alike. A figure is the
median over rounds, with the spread (min-max of the rounds) beside it, and its ratio to the
Go host and to aog-plugins. A cell that cannot be measured says why. Prints a table and
writes everything to ``benchmarks/results/<name>.json`` (gitignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PEERS = REPO / "benchmarks" / "peers"
sys.path.insert(0, str(REPO))

from tests.support.gobuild import GoBinaries, build_go_binaries, cache_root  # noqa: E402

MIB = 1024 * 1024
FLOOR = "grpcio floor (no library)"
Value = float | str  # a figure, or why there is none


@dataclass(frozen=True)
class RowSpec:
    key: str
    label: str
    unit: str
    lower_is_better: bool


ROWS = [
    RowSpec("start_plain", "cold start to first call, plaintext", "ms", True),
    RowSpec("start_mtls", "cold start to first call, AutoMTLS", "ms", True),
    RowSpec("p50_plain", "unary p50, plaintext", "us", True),
    RowSpec("p50_mtls", "unary p50, AutoMTLS", "us", True),
    RowSpec("cpu_plain", "  host CPU per call (all threads), plaintext", "us", True),
    RowSpec("cpu_mtls", "  host CPU per call (all threads), AutoMTLS", "us", True),
    RowSpec("ops_plain", "8 threads x 500 calls, plaintext", "/s", False),
    RowSpec("ops_mtls", "8 threads x 500 calls, AutoMTLS", "/s", False),
    RowSpec("big", "16 MiB reply, plaintext", "ms", True),
    RowSpec("plugin_mtls", "own plugin, Go host, AutoMTLS, 8x500", "/s", False),
    RowSpec("fleet", "N plugins started at once, wall", "ms", True),
    RowSpec("fleet_rss", "  host RSS per running plugin", "KiB", True),
    RowSpec("import", "import of the library", "ms", True),
]


@dataclass(frozen=True)
class Settings:
    rounds: int
    start_samples: int
    unary_calls: int
    warmup: int
    parallel: int
    per_worker: int
    big_bytes: int
    big_rounds: int
    fleet: int


class Column:
    """One host: measures a row for one round, or says why it cannot."""

    name: str
    unavailable: str = ""
    round: int = 0

    def measure(self, row: str, s: Settings) -> Value:
        raise NotImplementedError


def run_json(argv: list[str], env: dict[str, str] | None = None, timeout: float = 600) -> Any:
    """Run a driver; its last stdout line that parses as JSON, or a RuntimeError."""
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"timed out after {timeout:g}s") from None
    for line in reversed(done.stdout.splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    raise RuntimeError(f"exit {done.returncode}: {tail[:160]}")


class GoHost(Column):
    name = "Go host"

    def __init__(self, bins: GoBinaries) -> None:
        self.bins = bins
        self._p50: dict[bool, dict[str, Any]] = {}

    def _events(self, flags: list[str], plugin: list[str]) -> dict[str, dict[str, Any]]:
        argv = [str(self.bins.go_host), *flags, "-log-level", "error", "-call-timeout", "300s"]
        done = subprocess.run(
            [*argv, "--", *plugin], capture_output=True, text=True, timeout=600, check=False
        )
        events = {}
        for line in done.stdout.splitlines():
            event = json.loads(line)
            events[event["event"]] = event
        if "error" in events:
            raise RuntimeError(events["error"]["error"][:160])
        return events

    def _bench(self, tls: bool, bench: str, parallel: int = 1, **extra: str) -> dict[str, Any]:
        flags = ["-bench", bench, "-parallel", str(parallel), *(["-automtls"] if tls else [])]
        for flag, value in extra.items():
            flags += [f"-{flag.replace('_', '-')}", value]
        event = self._events(flags, [str(self.bins.aog_provider)])["bench"]
        if event["errors"]:
            raise RuntimeError(f"bench errors: {event.get('first_error')}")
        return event

    def measure(self, row: str, s: Settings) -> Value:
        tls = row.endswith("_mtls")
        if row.startswith("start"):
            samples = []
            for _ in range(s.start_samples):
                flags = ["-first-call", *(["-automtls"] if tls else [])]
                start = self._events(flags, [str(self.bins.aog_provider)])["start"]
                samples.append(start["first_call_ns"] / 1e6)
            return statistics.median(samples)
        if row.startswith("p50"):
            bench = self._bench(tls, f"health:{s.unary_calls}", bench_warmup=str(s.warmup))
            self._p50[tls] = bench
            return float(bench["p50_ns"]) / 1000
        if row.startswith("cpu"):
            return float(self._p50[tls]["cpu_ns"]) / s.unary_calls / 1000
        if row.startswith("ops"):
            bench = self._bench(tls, f"health:{s.parallel * s.per_worker}", s.parallel)
            return float(bench["ops_per_sec"])
        if row == "big":
            data = json.dumps({"size": s.big_bytes})
            bench = self._bench(
                False, f"unary:{s.big_rounds}", bench_service="big", bench_data=data,
                bench_warmup="1",
            )  # fmt: skip
            return float(bench["ns_per_op"]) / 1e6
        if row == "plugin_mtls":
            return plugin_row(self, "go-provider", [str(self.bins.aog_provider)], s)
        if row in ("fleet", "fleet_rss"):
            if not s.fleet:
                return "skipped (--fleet 0)"
            event = self._events(["-fleet", str(s.fleet)], [str(self.bins.aog_provider)])["fleet"]
            if event["errors"]:
                return f"{event['errors']} failed: {event['first_error'][:120]}"
            if row == "fleet":
                return float(event["wall_ns"]) / 1e6
            return (event["rss_kb_after"] - event["rss_kb_before"]) / s.fleet
        return "-"


def plugin_row(go: GoHost, label: str, plugin: list[str], s: Settings) -> Value:
    """The Go host loading ``plugin`` with AutoMTLS: ops/s over 8 callers."""
    n = s.parallel * s.per_worker
    flags = ["-automtls", "-bench", f"health:{n}", "-parallel", str(s.parallel)]
    event = go._events(flags, plugin)["bench"]
    if event["errors"]:
        raise RuntimeError(f"{label}: {event.get('first_error')}")
    return float(event["ops_per_sec"])


class DriverHost(Column):
    """A Python host driven through benchmarks/peers/<driver> in a given interpreter."""

    def __init__(
        self,
        name: str,
        *,
        python: str,
        driver: str,
        plugin_argv: list[str],
        go: GoHost,
        bins: GoBinaries,
        pythonpath: str | None = None,
        no_plugin: str = "same plugin as the sync column",
    ) -> None:
        self.name, self.python, self.driver = name, python, str(PEERS / driver)
        self.no_plugin = no_plugin  # the "plugin side" cell without a plugin of its own
        self.plugin_argv, self.go, self.bins = plugin_argv, go, bins
        self.env = dict(os.environ)
        self.env.pop("PYTHONPATH", None)
        # Without a bytecode cache every import compiles: the import row then measured the
        # compiler for a checkout that had none (PYTHONDONTWRITEBYTECODE=1 in the shell).
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        if pythonpath:
            self.env["PYTHONPATH"] = pythonpath
            package = str(Path(pythonpath) / "aog_plugins")
            subprocess.run([python, "-m", "compileall", "-q", package], check=False)
        self._runs: dict[tuple[int, str, bool], dict[str, Any]] = {}
        self._imports: list[float] = []
        self._broken: dict[str, str] = {}  # mode+tls -> why (not retried every round)

    def _drive(self, mode: str, tls: bool, s: Settings, **override: Any) -> dict[str, Any]:
        key = f"{mode}/{tls}"
        if key in self._broken:
            raise RuntimeError(self._broken[key])
        spec = {**asdict(s), **override, "mode": mode, "tls": tls}
        spec["plugin"] = [str(self.bins.aog_provider)]
        try:
            return dict(run_json([self.python, self.driver, json.dumps(spec)], self.env))
        except RuntimeError as exc:
            self._broken[key] = str(exc)
            raise

    def _cached(self, mode: str, tls: bool, s: Settings, **override: Any) -> dict[str, Any]:
        """One driver run per mode, TLS setting and round serves several rows."""
        key = (self.round, mode, tls)
        if key not in self._runs:
            self._runs[key] = self._drive(mode, tls, s, **override)
        return self._runs[key]

    def measure(self, row: str, s: Settings) -> Value:
        tls = row.endswith("_mtls")
        if row.startswith("start"):
            samples = []
            for _ in range(s.start_samples):
                got = self._drive("start", tls, s)
                if "import_ms" in got:
                    self._imports.append(got["import_ms"])
                if isinstance(got["first_call_ms"], str):
                    self._broken[f"start/{tls}"] = got["first_call_ms"]
                    return str(got["first_call_ms"])
                samples.append(got["first_call_ms"])
            return statistics.median(samples)
        if row == "import":
            return statistics.median(self._imports) if self._imports else "not measured"
        if row.startswith(("p50", "cpu", "ops")) or row == "big":
            # p50, CPU, ops and 16 MiB (plaintext only) come from one driver run.
            got = self._cached("calls", tls, s, big_bytes=0 if tls else s.big_bytes)
            value = got.get({"p": "p50_us", "c": "cpu_us", "o": "ops_s", "b": "big_ms"}[row[0]])
            return value if value is not None else "not measured"
        if row == "plugin_mtls":
            if not self.plugin_argv:
                return self.no_plugin
            return plugin_row(self.go, self.name, self.plugin_argv, s)
        if row in ("fleet", "fleet_rss"):
            if not s.fleet:
                return "skipped (--fleet 0)"
            got = self._cached("fleet", False, s)
            value = got.get("wall_ms" if row == "fleet" else "rss_kb_per_plugin")
            return value if value is not None else "not measured"
        return "-"


def ensure_venv(root: Path, requirement: str) -> tuple[str, str]:
    """A venv with only ``requirement`` in it: (python path, "" or why it is unusable)."""
    where = root / requirement.replace("==", "-")
    python = where / "bin" / "python"
    marker = where / ".installed"
    if marker.exists():
        return str(python), ""
    print(f"installing {requirement} into {where} ...", file=sys.stderr, flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(where)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        done = subprocess.run([*pip, requirement], capture_output=True, text=True, check=False)
    except (OSError, subprocess.CalledProcessError) as exc:
        return str(python), f"cannot create a venv: {exc}"
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
        return str(python), f"pip install {requirement} failed: {tail[:120]}"
    marker.write_text(requirement + "\n")
    return str(python), ""


class Unavailable(Column):
    def __init__(self, name: str, why: str) -> None:
        self.name, self.unavailable = name, why

    def measure(self, row: str, s: Settings) -> Value:
        return self.unavailable


def run(columns: list[Column], s: Settings) -> dict[str, dict[str, list[Value]]]:
    """Round by round, row by row, every column (order rotated each round)."""
    found: dict[str, dict[str, list[Value]]] = {r.key: {c.name: [] for c in columns} for r in ROWS}
    for round_ in range(s.rounds):
        turn = columns[round_ % len(columns) :] + columns[: round_ % len(columns)]
        for row in ROWS:
            print(f"round {round_ + 1}/{s.rounds}: {row.label}", file=sys.stderr, flush=True)
            for column in turn:
                column.round = round_
                try:
                    value: Value = column.measure(row.key, s)
                except Exception as exc:  # the cell says why
                    value = str(exc).strip().splitlines()[0][:160] if str(exc) else repr(exc)
                found[row.key][column.name].append(value)
    return found


def summarize(values: list[Value]) -> dict[str, Any]:
    numbers = [v for v in values if isinstance(v, (int, float))]
    if not numbers:
        return {"why": next((v for v in values if isinstance(v, str)), "no data")}
    out: dict[str, Any] = {"median": statistics.median(numbers), "rounds": numbers}
    out["min"], out["max"] = min(numbers), max(numbers)
    if len(numbers) < len(values):
        out["failed_rounds"] = [v for v in values if isinstance(v, str)]
    return out


def table(summary: dict[str, dict[str, dict[str, Any]]], names: list[str], ours: str) -> str:
    lines = []
    width = 30
    head = f"{'row':<56}" + "".join(f"{n:<{width}}" for n in names)
    lines += [head, "-" * len(head)]
    for row in ROWS:
        cells = summary[row.key]
        go = cells.get("Go host", {}).get("median")
        us = cells.get(ours, {}).get("median")
        arrow = "less is better" if row.lower_is_better else "more is better"
        text = f"{row.label} ({row.unit}, {arrow})"
        main_line, spread_line, ratio_line = f"{text:<56}", f"{'':<56}", f"{'':<56}"
        for name in names:
            cell = cells[name]
            if "median" not in cell:
                why = cell["why"]
                main_line += f"{why[: width - 2]:<{width}}"
                spread_line += f"{why[width - 2 : 2 * width - 4]:<{width}}"
                ratio_line += f"{why[2 * width - 4 : 3 * width - 6]:<{width}}"
                continue
            value = cell["median"]
            fmt = ".0f" if value >= 100 else ".2f"
            main_line += f"{value:<{width}{fmt}}"
            spread = f"[{cell['min']:{fmt}}-{cell['max']:{fmt}}]"
            if cell.get("failed_rounds"):
                spread += f" {len(cell['failed_rounds'])} failed"
            spread_line += f"{spread:<{width}}"
            ratio = []
            if go and name != "Go host":
                ratio.append(f"{value / go:.2f}x Go")
            if us and name != ours:
                ratio.append(f"{value / us:.2f}x ours")
            ratio_line += f"{', '.join(ratio):<{width}}"
        lines += [main_line, spread_line, ratio_line]
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    go = subprocess.run(["go", "version"], capture_output=True, text=True, check=False)
    git = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    return {
        "python": platform.python_version(),
        "go": go.stdout.strip(),
        "commit": git.stdout.strip(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_before": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke run)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--fleet", type=int, default=None, help="plugins at once (0: skip)")
    parser.add_argument("--baseline", help="another aog-plugins checkout: an extra column")
    parser.add_argument("--only", help="comma list of row keys (default: all)")
    parser.add_argument("--no-peers", action="store_true", help="leave the PyPI peers out")
    parser.add_argument("--no-floor", action="store_true", help="leave the grpcio floor out")
    parser.add_argument("--venvs", default=str(Path.home() / ".cache/aog-plugins/bench-venvs"))
    parser.add_argument("--name", default=time.strftime("peers-%Y%m%d-%H%M%S"))
    args = parser.parse_args(argv)
    if args.quick:
        s = Settings(2, 2, 300, 30, 8, 100, 16 * MIB, 1, 20)
    else:
        s = Settings(3, 3, 1000, 100, 8, 500, 16 * MIB, 2, 100)
    if args.rounds is not None:
        s = Settings(**{**asdict(s), "rounds": args.rounds})
    if args.fleet is not None:
        s = Settings(**{**asdict(s), "fleet": args.fleet})
    if args.only:
        keep = set(args.only.split(","))
        ROWS[:] = [r for r in ROWS if r.key in keep]
    info = environment()
    bins = build_go_binaries(cache_root())
    fixtures = REPO / "fixtures" / "plugins"
    go = GoHost(bins)

    def host_args(python: str, driver: str, plugin: list[str]) -> dict[str, Any]:
        return {"python": python, "driver": driver, "plugin_argv": plugin, "go": go, "bins": bins}

    ours = "aog-plugins"
    columns: list[Column] = [go]
    own_plugin = [sys.executable, str(fixtures / "remote_provider.py")]
    here = str(REPO)
    columns.append(
        DriverHost(ours, **host_args(sys.executable, "aog_host.py", own_plugin), pythonpath=here)
    )
    try:
        import aog_plugins.aio  # noqa: F401  (the asyncio API, where this checkout has it)
    except ImportError:
        pass
    else:
        aio = host_args(sys.executable, "aog_aio_host.py", [])
        columns.append(DriverHost(f"{ours} (asyncio)", **aio, pythonpath=here))
    if not args.no_floor:
        floor = host_args(sys.executable, "grpcio_floor_host.py", [])
        columns.append(DriverHost(FLOOR, **floor, no_plugin="a host only, no plugin side"))
    if args.baseline:
        base = Path(args.baseline).resolve()
        old_plugin = [sys.executable, str(base / "fixtures" / "plugins" / "remote_provider.py")]
        name = f"aog-plugins@{base.name}"
        args_ = host_args(sys.executable, "aog_host.py", old_plugin)
        columns.append(DriverHost(name, **args_, pythonpath=str(base)))
    if not args.no_peers:
        venvs = Path(args.venvs)
        for name, requirement, host, plugin in (
            ("python-plugin", "python-plugin==0.1.0", "pyplugin_host.py", "pyplugin_plugin.py"),
            ("pyvider", "pyvider-rpcplugin==0.5.5", "pyvider_host.py", "pyvider_plugin.py"),
        ):
            python, why = ensure_venv(venvs, requirement)
            if why:
                columns.append(Unavailable(name, why))
                continue
            side = [python, str(PEERS / plugin)]
            columns.append(DriverHost(name, **host_args(python, host, side)))
    found = run(columns, s)
    summary = {r: {n: summarize(v) for n, v in cells.items()} for r, cells in found.items()}
    names = [c.name for c in columns]
    print(table(summary, names, ours))
    print(
        f"\nmedian of {s.rounds} rounds, [min-max] of the rounds; start: median of "
        f"{s.start_samples} starts per round; 'plugin side' row: the Go host loads each "
        "library's own Python plugin (Go host column: the Go plugin)"
    )
    info["loadavg_after"] = os.getloadavg()
    out_dir = REPO / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{args.name}.json"
    document = {
        "settings": asdict(s),
        "environment": info,
        "columns": names,
        "rows": {r.key: {"label": r.label, "unit": r.unit} for r in ROWS},
        "results": summary,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

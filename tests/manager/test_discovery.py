"""Discovery: every broken form of a plugin directory gets its own typed error, naming the
plugin and its directory, and never stops the others from loading."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from aog_plugins import PluginManager
from aog_plugins.errors import (
    AogPluginsError,
    ChecksumMismatchError,
    ConfigurationError,
    DuplicatePluginError,
    ExecutableMissingError,
    ExecutableNotExecutableError,
    InvalidManifestError,
    InvalidProviderTypeError,
    MissingProviderNameError,
    NoPlatformError,
    PluginChecksumError,
    PluginEntryError,
    UnknownPluginError,
)
from aog_plugins.manager import EntryState
from tests.manager.conftest import BIN_DIR, Layout, manifest_doc
from tests.support.leaks import LeakCheck


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def broken_directory(layout: Layout) -> dict[str, type[PluginEntryError]]:
    """One good plugin and one of each broken form; returns dir name -> expected error."""
    layout.add("good")
    (layout.root / "unparseable").mkdir()
    (layout.root / "unparseable" / "plugin.yaml").write_text("provider: [unclosed\n")
    layout.add("noname", manifest=manifest_doc(""))
    layout.add("badtype", kind="cloud")
    layout.add(
        "noplatform",
        manifest={**manifest_doc("noplatform"), "platforms": {"plan9_mips": {"executable": "x"}}},
    )
    layout.add("missingexe", write_exe=False)
    layout.add("notexec", exe_mode=0o644)
    layout.add("zdupe", name="good")  # sorts after "good": the second one is the duplicate
    layout.add("badsum")
    return {
        "unparseable": InvalidManifestError,
        "noname": MissingProviderNameError,
        "badtype": InvalidProviderTypeError,
        "noplatform": NoPlatformError,
        "missingexe": ExecutableMissingError,
        "notexec": ExecutableNotExecutableError,
        "zdupe": DuplicatePluginError,
        "badsum": PluginChecksumError,
    }


def test_every_broken_form_is_listed_with_its_own_error(layout: Layout, leaks: LeakCheck) -> None:
    expected = broken_directory(layout)
    (layout.root / ".hidden").mkdir()
    layout.add("ignored", into=layout.root / ".hidden")  # inside a hidden entry
    layout.add(".dotplugin")
    (layout.root / "not-a-plugin").mkdir()  # no manifest: not a plugin
    (layout.root / "stray-file.yaml").write_text("x: 1\n")
    checksums = {"badsum": "sha256:" + "0" * 64}
    with PluginManager(layout.root, watch=False, checksums=checksums, env=leaks.env) as manager:
        entries = {e.directory.name: e for e in manager.entries()}
        assert sorted(entries) == sorted([*expected, "good"])
        for dirname, kind in expected.items():
            entry = entries[dirname]
            assert type(entry.error) is kind, (dirname, entry.error)
            assert entry.state is EntryState.BROKEN
            assert entry.pid is None
            assert str(layout.root / dirname) in str(entry.error)
        assert entries["noname"].name == "noname"  # the directory's name stands in
        good = entries["good"]
        assert good.error is None
        assert good.state is EntryState.NOT_STARTED
        assert good.services == ("chat",)
        assert good.executable == layout.exe("good")
        # The good one works although everything around it is broken.
        assert b'"name": "good"' in manager.client("good").invoke_service("chat", b"{}")


def test_errors_say_what_to_do(layout: Layout) -> None:
    broken_directory(layout)
    mode_before = stat.S_IMODE(os.stat(layout.exe("notexec")).st_mode)
    with PluginManager(layout.root, watch=False) as manager:
        errors = {e.directory.name: e.error for e in manager.entries()}
    not_exec = errors["notexec"]
    assert isinstance(not_exec, ExecutableNotExecutableError)
    assert f"chmod +x {layout.exe('notexec')}" in str(not_exec)
    # Never chmod it for the user.
    assert stat.S_IMODE(os.stat(layout.exe("notexec")).st_mode) == mode_before
    assert "provider.name" in str(errors["noname"])
    assert "'local'" in str(errors["badtype"])
    assert "'cloud'" in str(errors["badtype"])
    platform_error = str(errors["noplatform"])
    assert "plan9_mips" in platform_error
    assert BIN_DIR.split("/")[1].replace("-", "_") in platform_error
    assert "already provided by" in str(errors["zdupe"])
    assert str(layout.root / "good") in str(errors["zdupe"])
    assert "does not exist" in str(errors["missingexe"])


def test_get_and_client_raise_the_entry_error(layout: Layout, leaks: LeakCheck) -> None:
    layout.add("notexec", exe_mode=0o644)
    with PluginManager(layout.root, watch=False, env=leaks.env) as manager:
        with pytest.raises(ExecutableNotExecutableError) as caught:
            manager.get("notexec")
        assert caught.value.plugin == "notexec"
        assert caught.value.directory == str(layout.root / "notexec")
        with pytest.raises(ExecutableNotExecutableError):
            manager.client("notexec")
        with pytest.raises(UnknownPluginError) as unknown:
            manager.get("nope")
        assert isinstance(unknown.value, KeyError)
        assert "nope" in str(unknown.value)
        assert "notexec" in str(unknown.value)
        assert leaks.processes() == []


def test_checksum_mismatch_is_listed_and_a_match_starts(layout: Layout, leaks: LeakCheck) -> None:
    layout.add("ok")
    layout.add("bad")
    sums = {"ok": sha256(layout.exe("ok")), "bad": "sha256:" + "1" * 64}
    with PluginManager(layout.root, watch=False, checksums=sums, env=leaks.env) as manager:
        bad = manager.entry("bad")
        assert isinstance(bad.error, PluginChecksumError)
        assert isinstance(bad.error, ChecksumMismatchError)  # catchable as the process-layer one
        manager.get("ok").ping()


def test_a_malformed_checksum_is_that_plugins_error(layout: Layout, leaks: LeakCheck) -> None:
    # Now refused by the process layer as a ConfigurationError: it must not fail the scan.
    layout.add("ok")
    layout.add("typo")
    sums = {"typo": "sha256:" + "1" * 63}
    with PluginManager(layout.root, watch=False, checksums=sums, env=leaks.env) as manager:
        error = manager.entry("typo").error
        assert isinstance(error, PluginChecksumError)
        assert "hex digits" in str(error)
        manager.get("ok").ping()


def test_manifest_variants_json_and_yml(layout: Layout, leaks: LeakCheck) -> None:
    layout.add("as-json", manifest_name="plugin.json")
    layout.add("as-yml", manifest_name="plugin.yml")
    with PluginManager(layout.root, watch=False, env=leaks.env) as manager:
        assert [e.name for e in manager.entries() if e.error is None] == ["as-json", "as-yml"]
        assert b"as-json" in manager.client("as-json").invoke_service("chat", b"{}")


def test_a_known_name_keeps_its_directory_when_a_duplicate_arrives(layout: Layout) -> None:
    layout.add("zeta", name="shared")
    with PluginManager(layout.root, watch=False) as manager:
        layout.add("alpha", name="shared")  # sorts first, but arrives second
        manager.rescan()
        errors = {e.directory.name: e.error for e in manager.entries()}
        assert errors["zeta"] is None
        assert isinstance(errors["alpha"], DuplicatePluginError)
        assert manager.entry("shared").directory == layout.root / "zeta"
        # Once the owner is gone, the other one takes the name.
        shutil.rmtree(layout.root / "zeta")
        manager.rescan()
        assert manager.entry("shared").directory == layout.root / "alpha"
        assert manager.entry("shared").error is None


def test_bad_arguments(tmp_path: Path, layout: Layout) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        PluginManager(tmp_path / "missing")
    with pytest.raises(ConfigurationError):
        PluginManager(layout.root, start_timeout=0)
    with pytest.raises(ConfigurationError):
        PluginManager(layout.root, idle_timeout=-1)
    for bad in (float("nan"), float("inf"), 1e12):  # 1e12: an OverflowError in the start
        with pytest.raises(ConfigurationError, match="start_timeout"):
            PluginManager(layout.root, start_timeout=bad)
    with pytest.raises(ConfigurationError, match="idle_timeout"):
        PluginManager(layout.root, idle_timeout=float("nan"))
    with pytest.raises(ConfigurationError):
        PluginManager(layout.root, watch="sometimes")
    with pytest.raises(ConfigurationError):
        PluginManager(layout.root, checksums={"x": ""})
    with pytest.raises(ConfigurationError):
        PluginManager(layout.root, drain_timeout=-1)
    for bad in (float("nan"), float("inf")):  # inf: an OverflowError in kill()
        with pytest.raises(ConfigurationError, match="kill_grace"):
            PluginManager(layout.root, kill_grace=bad)
        with pytest.raises(ConfigurationError, match="drain_timeout"):
            PluginManager(layout.root, drain_timeout=bad)
    assert issubclass(PluginEntryError, AogPluginsError)


UNREADABLE = """
import json, os, sys
from pathlib import Path
from aog_plugins import PluginManager
from aog_plugins.cli import main
from tests.manager.conftest import Layout
root = Path(sys.argv[1]) / "plugins"
root.mkdir()
layout = Layout(root)
layout.add("good")
layout.add("locked")
layout.add("huge")
(root / "huge" / "plugin.yaml").write_text("# padding\\n" * 200_000)  # about 2 MiB
os.chmod(root / "locked", 0)
try:
    with PluginManager(root, watch=False) as manager:
        print(json.dumps({e.name: type(e.error).__name__ for e in manager.entries()}))
    print(json.dumps({"list": main(["list", str(root)])}))
finally:
    os.chmod(root / "locked", 0o755)
"""


def run_as_nobody(script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with the work dir it may use as argv[1]. Permissions bind only a
    user other than root: as root, run it as nobody."""
    repo = Path(__file__).resolve().parents[2]
    work = tempfile.mkdtemp(prefix="aogt-perm-", dir="/tmp")
    os.chmod(work, 0o777)
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    try:
        return subprocess.run(
            [*(prefix if os.getuid() == 0 else []), sys.executable, "-c", script, work],
            env={**os.environ, "PYTHONPATH": str(repo)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        subprocess.run(["chmod", "-R", "u+rwx", work], check=False, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def test_an_unreadable_or_oversized_plugin_is_listed_broken_and_stops_nothing() -> None:
    # Path.is_file() raises PermissionError for a directory we may not search: that made
    # PluginManager() and `aog-plugins list` fail as a whole (and killed the watcher).
    done = run_as_nobody(UNREADABLE)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    entries = json.loads(lines[0])
    assert entries == {
        "good": "NoneType",
        "locked": "InvalidManifestError",
        "huge": "InvalidManifestError",
    }
    assert json.loads(lines[-1]) == {"list": 0}
    assert "Permission denied" in done.stdout
    assert "larger than 1024 KiB" in done.stdout


def test_a_nul_byte_in_the_executable_path_is_listed_broken(
    layout: Layout, leaks: LeakCheck
) -> None:
    # os.stat() raises ValueError (not OSError) for it: PluginManager() failed as a whole,
    # and a watcher that met such a manifest later could apply no change any more.
    layout.add("good")
    layout.add("nul", write_exe=False, manifest=manifest_doc("nul", executable="bin/\x00x"))
    with PluginManager(layout.root, env=leaks.env) as manager:
        error = manager.entry("nul").error
        assert isinstance(error, NoPlatformError)
        assert "NUL byte" in str(error)
        layout.add("later", manifest=manifest_doc("later", executable="bin/later\x00"))
        layout.add("after")
        assert isinstance({e.name: e.error for e in manager.rescan()}["later"], NoPlatformError)
        assert b'"name": "after"' in manager.client("after").invoke_service("chat", b"{}")


UNREADABLE_ROOT = """
import json, logging, os, sys, threading
from pathlib import Path
from aog_plugins import PluginManager
from aog_plugins.cli import main
from tests.manager.conftest import Layout
work = Path(sys.argv[1])
root = work / "plugins"
root.mkdir()
(work / "secret" / "inner").mkdir(parents=True)
os.chmod(work / "secret", 0)
layout = Layout(root)
layout.add("good")
os.symlink(work / "secret" / "inner", root / "link")  # into a directory we may not search
warned = threading.Event()
class Warned(logging.Handler):
    def emit(self, record):
        if "cannot read the plugins directory" in record.getMessage():
            warned.set()
logging.getLogger("aog_plugins.manager").addHandler(Warned())
out = {}
events = []
with PluginManager(root, watch="poll", on_event=events.append) as manager:
    out["entries"] = {e.directory.name: type(e.error).__name__ for e in manager.entries()}
    layout.add("later")
    out["rescan"] = sorted(e.directory.name for e in manager.rescan())
    os.chmod(root, 0)
    try:
        manager.rescan()
    except Exception as exc:
        out["rescan_unreadable"] = type(exc).__name__
    out["warned"] = warned.wait(30)  # the watcher met it too
    out["kept"] = sorted(e.directory.name for e in manager.entries())
    os.chmod(root, 0o755)
out["removed"] = [e.name for e in events if e.kind == "removed"]
os.chmod(root, 0)
out["list"] = main(["list", str(root)])
os.chmod(root, 0o755)
print(json.dumps(out))
"""


def test_a_directory_that_cannot_be_read_is_not_taken_for_empty() -> None:
    # A symlink into a directory we may not search made every scan raise PermissionError
    # (PluginManager() and rescan() failed, the watcher applied nothing any more); a
    # plugins directory made unreadable read as empty: every plugin was stopped and
    # dropped, and `aog-plugins list` exited 0 listing nothing.
    done = run_as_nobody(UNREADABLE_ROOT)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["entries"] == {"good": "NoneType", "link": "InvalidManifestError"}
    assert out["rescan"] == ["good", "later", "link"]
    assert out["rescan_unreadable"] == "ConfigurationError"
    assert out["warned"] is True
    assert out["kept"] == ["good", "later", "link"]
    assert out["removed"] == []
    assert out["list"] == 2
    assert "cannot read the plugins directory" in done.stderr

"""A SIGKILLed host leaves nothing behind: its reaper kills every plugin group it started.

Each test runs a real host process, SIGKILLs it, and watches the plugins (and their
children) disappear within 2 s, the acceptance criterion. The reaper must also spare a
group it cannot prove is ours, survive its own death or wedging, and ignore forks.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.faults.conftest import HostFactory, gone, plugin_cmd, wait_gone
from tests.gofixtures.conftest import go_bins
from tests.process.conftest import LeakCheck
from tests.support.gobuild import GoBinaries
from tests.support.wait import wait_until

__all__ = ["go_bins"]

KILL_DEADLINE = 2.0

LAUNCH_HOST = textwrap.dedent(
    """
    import json, os, sys, time
    import aog_plugins
    from aog_plugins.process._reaper import reaper

    plugins = [aog_plugins.launch(cmd) for cmd in json.loads(sys.argv[1])]
    print(json.dumps({
        "plugins": [p.pid for p in plugins],
        "dirs": [os.path.dirname(p.handshake.address) for p in plugins],
        "tracked": reaper().tracked_pids(),
        "reaper": reaper().pid,
    }), flush=True)
    time.sleep(600)
    """
)

# One multiplexed plugin (argv[1]: its command), called once; argv[2] "stop": stopped
# before reporting what is left in this host's private TMPDIR.
MUX_HOST = textwrap.dedent(
    """
    import json, os, sys, time
    import aog_plugins

    plugin = aog_plugins.launch(json.loads(sys.argv[1]), multiplex=True)
    plugin.ping()
    if sys.argv[2] == "stop":
        plugin.kill()
    print(json.dumps({
        "plugin": plugin.pid, "left": sorted(os.listdir(os.environ["TMPDIR"]))
    }), flush=True)
    time.sleep(600)
    """
)

# Tracks plain process groups by hand. argv[1]: JSON list of [command, create_time
# offset, reap the leader at once?]; $STEPS: what else to do before reporting.
TRACK_HOST = textwrap.dedent(
    """
    import json, os, signal, subprocess, sys, tempfile, time
    import psutil
    from aog_plugins.process._reaper import reaper

    steps = os.environ.get("STEPS", "").split(",")
    out = {"groups": [], "dirs": []}
    for cmd, offset, reap_leader in json.loads(sys.argv[1]):
        p = subprocess.Popen(cmd, start_new_session=True)
        d = tempfile.mkdtemp(prefix="aogp-%d-" % os.getpid())
        reaper().track(p.pid, psutil.Process(p.pid).create_time() + offset, d)
        if reap_leader:
            p.wait()
        out["groups"].append(p.pid)
        out["dirs"].append(d)
        out.setdefault("first_reaper", reaper().pid)
        if "kill-reaper" in steps:
            os.kill(reaper().pid, signal.SIGKILL)
            while psutil.Process(reaper().pid).status() != psutil.STATUS_ZOMBIE:
                time.sleep(0.01)
            steps.remove("kill-reaper")
        if "stop-reaper" in steps:
            os.kill(reaper().pid, signal.SIGSTOP)
            for fake in range(4000):  # fills the pipe: the host must notice and replace it
                reaper().track(4000000 + fake, 0.0, None)
            steps.remove("stop-reaper")
    if "untrack" in steps:
        for pid in out["groups"]:
            reaper().untrack(pid)
    if "fork" in steps:
        child = os.fork()
        if child == 0:
            time.sleep(600)
            os._exit(0)
        out["forked"] = child
    out["reaper"] = reaper().pid
    out["tracked"] = reaper().tracked_pids()
    print(json.dumps(out), flush=True)
    if "exit" not in steps:
        time.sleep(600)
    """
)

# Dies of SIGKILL in the middle of launching argv[1], before spawn() could tell the
# reaper the plugin's pid: argv[2] "after-fork" right after the fork (the plugin may not
# have exec'd yet), "after-handshake" once Popen has returned and the plugin has written
# its handshake (a plugin that dies before that does so of SIGPIPE when it writes it).
KILLED_IN_SPAWN_HOST = textwrap.dedent(
    """
    import json, os, select, signal, subprocess, sys
    import aog_plugins

    cmd, where = json.loads(sys.argv[1]), sys.argv[2]

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if where == "after-fork":
        real_fork_exec = subprocess._fork_exec

        def fork_exec(args, *rest):
            pid = real_fork_exec(args, *rest)
            if list(args) == cmd:
                die()
            return pid

        subprocess._fork_exec = fork_exec
    else:
        real_init = subprocess.Popen.__init__

        def init(self, args, *rest, **kwargs):
            real_init(self, args, *rest, **kwargs)
            if list(args) == cmd:
                select.select([self.stdout], [], [], 30)
                die()

        subprocess.Popen.__init__ = init
    aog_plugins.launch(cmd)
    """
)

# Dies of SIGKILL the first time it would unlink a file of its TMPDIR that is not a socket
# dir's, as tempfile.gettempdir() does with the file it writes to probe the directory.
KILLED_IN_TMPDIR_PROBE_HOST = textwrap.dedent(
    """
    import json, os, signal, sys
    import aog_plugins

    tmpdir, real_unlink = os.environ["TMPDIR"], os.unlink

    def unlink(path, *args, **kwargs):
        path = os.fsdecode(path)
        if os.path.dirname(path) == tmpdir and not os.path.basename(path).startswith("aogp-"):
            os.kill(os.getpid(), signal.SIGKILL)
        return real_unlink(path, *args, **kwargs)

    os.unlink = unlink
    with aog_plugins.launch(json.loads(sys.argv[1])) as plugin:
        plugin.ping()
    """
)

# Dies of SIGKILL right after it makes its first socket dir (in its TMPDIR), before the
# plugin is forked.
KILLED_AFTER_MKDIR_HOST = textwrap.dedent(
    """
    import json, os, signal, sys
    import aog_plugins

    tmpdir, real_mkdir = os.environ["TMPDIR"], os.mkdir

    def mkdir(path, *args, **kwargs):
        real_mkdir(path, *args, **kwargs)
        path = os.fsdecode(path)
        if os.path.dirname(path) == tmpdir and os.path.basename(path).startswith("aogp-"):
            os.kill(os.getpid(), signal.SIGKILL)

    os.mkdir = mkdir
    aog_plugins.launch(json.loads(sys.argv[1]))
    """
)

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
# The leader starts a member of its group and exits at once; the member stays.
LEADER_EXITS = ["sh", "-c", f"{sys.executable} -c 'import time; time.sleep(600)' & exit 0"]


def _group_members(pgid: int) -> list[int]:
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and not gone(proc.pid):
                members.append(proc.pid)
        except (OSError, psutil.Error):
            continue
    return members


def _kill_host(host_kill: Any, pids: list[int], what: str) -> None:
    """SIGKILL the host and wait (at most KILL_DEADLINE) until every pid is gone."""
    host_kill()
    wait_gone(pids, KILL_DEADLINE, what)


def _wait_removed(dirs: list[str], what: str) -> None:
    def left() -> list[str]:
        return [d for d in dirs if os.path.exists(d)]

    wait_until(lambda: not left(), KILL_DEADLINE, lambda: f"{what}; left: {left()}")


def _kill_and_wait(pid: int) -> None:
    """SIGKILL a process the test left alive on purpose; the leak check runs right after,
    and a signal takes effect asynchronously (a forked child whose host is gone is only
    reaped by init)."""
    os.kill(pid, signal.SIGKILL)
    wait_gone([pid], 10, f"pid {pid} to die of SIGKILL")


def _track(*groups: tuple[list[str], float, bool]) -> str:
    return json.dumps([list(g) for g in groups])


def test_sigkilled_host_loses_every_plugin_and_grandchild_within_2s(
    make_host: HostFactory, leak_check: LeakCheck
) -> None:
    cmds = [plugin_cmd("echo_plugin.py"), plugin_cmd("misbehave.py", "grandchild")]
    host = make_host(LAUNCH_HOST, json.dumps(cmds))
    info = host.read()
    assert set(info["plugins"]) <= set(info["tracked"]), "spawn() did not track its plugins"
    victims = [p.pid for p in leak_check.tagged() if p.pid != host.proc.pid]
    assert set(info["plugins"]) < set(victims), "the grandchild is missing"
    assert all(Path(d).is_dir() and host.in_tmpdir(d) for d in info["dirs"])

    _kill_host(host.kill, victims, "the killed host's plugins and grandchild to end")

    _wait_removed(info["dirs"], "the reaper to remove the socket dirs")
    wait_gone([info["reaper"]], KILL_DEADLINE, "the reaper to exit")


def test_sigkilled_host_loses_its_go_plugins_within_2s(
    make_host: HostFactory, leak_check: LeakCheck, go_bins: GoBinaries
) -> None:
    cmds = [[str(go_bins.aog_provider)], [str(go_bins.misbehave)]]
    host = make_host(LAUNCH_HOST, json.dumps(cmds), env={"AOG_FIXTURE_MODE": "ok"})
    info = host.read()
    assert set(info["plugins"]) <= set(info["tracked"])
    victims = [p.pid for p in leak_check.tagged() if p.pid != host.proc.pid]
    assert set(info["plugins"]) <= set(victims)
    assert all(Path(d).is_dir() and host.in_tmpdir(d) for d in info["dirs"])

    _kill_host(host.kill, victims, "the killed host's Go plugins to end")

    _wait_removed(info["dirs"], "the reaper to remove the socket dirs")


def test_a_multiplexed_plugin_leaves_no_private_dir_behind(make_host: HostFactory) -> None:
    # Both sides' yamux sockets used to live in a dir of their own in TMPDIR (the
    # plugin never removed its one), outside what the reaper and the stale sweep remove.
    host = make_host(MUX_HOST, json.dumps(plugin_cmd("echo_plugin.py")), "stop")
    assert host.read()["left"] == []


def test_sigkilled_host_of_a_multiplexed_plugin_leaves_no_dir_behind(
    make_host: HostFactory,
) -> None:
    host = make_host(MUX_HOST, json.dumps(plugin_cmd("echo_plugin.py")), "run")
    info = host.read()
    assert len(info["left"]) == 1, "the plugin's socket dir is the only dir"
    _kill_host(host.kill, [info["plugin"]], "the killed host's plugin to end")

    def left() -> list[str]:
        return os.listdir(host.tmpdir)

    wait_until(lambda: not left(), KILL_DEADLINE, lambda: f"left in TMPDIR: {left()}")


def test_reaper_spares_a_group_whose_leader_is_another_process(
    make_host: HostFactory, leak_check: LeakCheck
) -> None:
    # A create_time that does not match stands for a pid reused by a stranger.
    host = make_host(TRACK_HOST, _track((SLEEPER, -100.0, False), (SLEEPER, 0.0, False)))
    info = host.read()
    stranger, ours = info["groups"]
    _kill_host(host.kill, [ours], "our group to be killed")
    try:
        # The reaper decides on every group, kills, and only then exits: once it is gone,
        # whatever it was going to do to the stranger is done.
        wait_gone([info["reaper"]], 30, "the reaper to finish and exit")
        assert not gone(stranger), "the reaper killed a process it could not prove was ours"
    finally:
        _kill_and_wait(stranger)


def test_reaper_kills_a_group_whose_leader_is_already_gone(make_host: HostFactory) -> None:
    host = make_host(TRACK_HOST, _track((LEADER_EXITS, 0.0, True)))
    (pgid,) = host.read()["groups"]
    assert gone(pgid)
    members = _group_members(pgid)
    assert members, "the fixture group has no member left"
    _kill_host(host.kill, members, "the leaderless group to be killed")


def test_dead_reaper_is_restarted_with_the_tracked_set(make_host: HostFactory) -> None:
    host = make_host(
        TRACK_HOST,
        _track((SLEEPER, 0.0, False), (SLEEPER, 0.0, False)),
        env={"STEPS": "kill-reaper"},
    )
    info = host.read()
    assert info["reaper"] != info["first_reaper"]
    assert sorted(info["tracked"]) == sorted(info["groups"])
    assert all(host.in_tmpdir(d) for d in info["dirs"])
    _kill_host(host.kill, info["groups"], "the restarted reaper to kill the replayed groups")
    _wait_removed(info["dirs"], "the restarted reaper to remove the socket dirs")


def test_wedged_reaper_is_replaced(make_host: HostFactory) -> None:
    host = make_host(TRACK_HOST, _track((SLEEPER, 0.0, False)), env={"STEPS": "stop-reaper"})
    info = host.read()
    try:
        assert info["reaper"] != info["first_reaper"]
        assert gone(info["first_reaper"]), "the wedged reaper was not killed"
    except AssertionError:
        os.kill(info["first_reaper"], signal.SIGKILL)  # not replaced: it is still ours, stopped
        raise
    _kill_host(host.kill, info["groups"], "the replacement reaper to kill the group")


def test_a_forked_child_does_not_hold_the_reaper_off(
    make_host: HostFactory, leak_check: LeakCheck
) -> None:
    host = make_host(TRACK_HOST, _track((SLEEPER, 0.0, False)), env={"STEPS": "fork"})
    info = host.read()
    try:
        _kill_host(host.kill, info["groups"], "the group to end despite the forked child")
        assert not gone(info["forked"])
    finally:
        _kill_and_wait(info["forked"])


def test_clean_exit_spares_untracked_groups_and_ends_the_reaper(
    make_host: HostFactory, leak_check: LeakCheck
) -> None:
    host = make_host(TRACK_HOST, _track((SLEEPER, 0.0, False)), env={"STEPS": "untrack,exit"})
    info = host.read()
    assert info["tracked"] == []
    assert host.proc.wait(10) == 0
    try:
        wait_gone([info["reaper"]], KILL_DEADLINE, "the reaper to end with its host")
        assert not gone(info["groups"][0]), "an untracked group was killed"
        # In the host's private TMPDIR: no other host's stale-dir cleanup reaches them.
        assert all(host.in_tmpdir(d) for d in info["dirs"])
        assert all(os.path.isdir(d) for d in info["dirs"]), "the reaper removed them"
    finally:
        _kill_and_wait(info["groups"][0])
        for d in info["dirs"]:
            os.rmdir(d)


@pytest.mark.parametrize("where", ["after-fork", "after-handshake"])
@pytest.mark.parametrize("kind", ["python", "go"])
def test_host_killed_while_spawning_leaves_no_plugin(
    make_host: HostFactory, leak_check: LeakCheck, go_bins: GoBinaries, where: str, kind: str
) -> None:
    # The reaper used to learn of a plugin only from spawn()'s track() after Popen had
    # returned (on a host's first launch, after the reaper itself had been started): a
    # host killed in between left a plugin that had written its handshake running for
    # good, and the socket dir to a later host's sweep.
    cmd = plugin_cmd("echo_plugin.py") if kind == "python" else [str(go_bins.aog_provider)]
    host = make_host(KILLED_IN_SPAWN_HOST, json.dumps(cmd), where)
    assert host.proc.wait(30) == -signal.SIGKILL, host.stderr_text()

    def plugins() -> list[int]:
        return [p.pid for p in leak_check.processes()]

    # The reaper ends each plugin of its host, found by its socket dir, and removes the dir.
    wait_until(lambda: not plugins(), 10, lambda: f"the plugin to be killed: {plugins()}")
    wait_until(
        lambda: not os.listdir(host.tmpdir),
        10,
        lambda: f"the socket dir to be removed: {os.listdir(host.tmpdir)}",
    )


def test_a_launch_leaves_no_probe_file_in_tmpdir(make_host: HostFactory) -> None:
    # The socket dir's base came from tempfile.gettempdir(), whose first call writes a
    # randomly named file into TMPDIR and unlinks it: a host killed in between left that
    # file, which no sweep recognizes. (The fault-injecting host dies at that unlink.)
    host = make_host(KILLED_IN_TMPDIR_PROBE_HOST, json.dumps(plugin_cmd("echo_plugin.py")))
    exit_code = host.proc.wait(60)
    assert os.listdir(host.tmpdir) == []
    assert exit_code == 0, host.stderr_text()


def test_host_killed_right_after_making_the_socket_dir_leaves_no_dir(
    make_host: HostFactory,
) -> None:
    # The reaper used to hear of a socket dir only when the plugin was about to be forked
    # (on a host's first launch it was not even running yet): a host killed between the
    # mkdir and that announcement left the empty dir for a later host's sweep.
    host = make_host(KILLED_AFTER_MKDIR_HOST, json.dumps(plugin_cmd("echo_plugin.py")))
    assert host.proc.wait(30) == -signal.SIGKILL, host.stderr_text()
    wait_until(
        lambda: not os.listdir(host.tmpdir),
        10,
        lambda: f"the socket dir to be removed: {os.listdir(host.tmpdir)}",
    )

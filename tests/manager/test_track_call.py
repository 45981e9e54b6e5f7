"""PluginManager.track_call: the hook a client of one's own (the aio one) uses so that a
replacement drains its calls, as it drains those of ``client(name)``."""

from __future__ import annotations

import threading

import pytest

from aog_plugins import PluginManager
from aog_plugins.errors import PluginRemovedError, UnknownPluginError
from tests.manager.conftest import EventLog, Layout
from tests.support.leaks import LeakCheck
from tests.support.wait import wait_until


def test_a_tracked_call_holds_the_old_process_until_it_ends(
    layout: Layout, leaks: LeakCheck
) -> None:
    layout.add("p", version="1.0.0")
    events = EventLog()
    with PluginManager(layout.root, watch=False, env=leaks.env, on_event=events) as manager:
        old = manager.get("p")
        end = manager.track_call("p", old)
        assert end is not None
        layout.add("p", version="2.0.0")
        rescan = threading.Thread(target=manager.rescan)
        rescan.start()
        events.wait("replaced", "p")
        new = manager.get("p")
        assert new is not old
        # The old process no longer serves the name: nothing is counted on it ...
        assert manager.track_call("p", old) is None
        # ... and it keeps running while the tracked call is open.
        assert rescan.is_alive()
        assert not old.exited
        assert "stopped" not in events.kinds("p")
        end()
        end()  # a second end does nothing (the count does not go negative)
        rescan.join()
        wait_until(lambda: old.exited, 30.0, "the old process to stop")
        # Events arrive off the I/O thread: the exit can be seen before its event lands.
        events.wait("stopped", "p")
        stopped = events.of("stopped", "p")
        assert [e.pid for e in stopped] == [old.pid]
        assert "in flight" not in stopped[0].reason
        # The new one counts; ended at once, it does not hold a later stop.
        later = manager.track_call("p", new)
        assert later is not None
        later()
        manager.stop("p")
        assert new.exited
        with pytest.raises(UnknownPluginError):
            manager.track_call("nope", new)
    with pytest.raises(PluginRemovedError):
        manager.track_call("p", new)

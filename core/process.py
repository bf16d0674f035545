"""Process helpers shared by the parts that leave crash-safe markers (locks, temp folders) or start servers."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable

import psutil

STOP_GRACE_S = 60  # a vLLM server frees its engine in seconds; past a minute it is stuck, not busy


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (a lock or temp folder of a dead one is stale)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def group_members(pgid: int) -> list[psutil.Process]:
    """The live processes of a process group (zombies, already dead, are not counted)."""
    members = []
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc)
    return members


def stop_group(pgid: int, grace_s: float | None = None, reap: Callable[[], object] | None = None) -> None:
    """SIGTERM every process of the group, wait until none is left (`reap` collects the leader, our child),
    then SIGKILL whatever still runs: no member outlives the call."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + (STOP_GRACE_S if grace_s is None else grace_s)
    while time.monotonic() < deadline:
        if reap is not None:
            reap()
        if not group_members(pgid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    for _ in range(100):
        if reap is not None:
            reap()
        if not group_members(pgid):
            return
        time.sleep(0.1)


def stop_tree(proc: psutil.Process, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM a process and its descendants, SIGKILL those still running after `grace_s`."""
    with contextlib.suppress(psutil.Error):
        tree = [proc, *proc.children(recursive=True)]
        for p in tree:
            with contextlib.suppress(psutil.Error):
                p.terminate()
        _, alive = psutil.wait_procs(tree, timeout=grace_s)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(alive, timeout=10)

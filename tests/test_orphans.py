"""No process outlives twin: a local vLLM server is stopped with its whole process group (also on Ctrl-C during
its health wait), and an EngineCore left by a SIGKILLed `twin serve` is stopped by the next start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from core.process import group_members
from core.settings import Settings
from engine import remote

# Stands in for `python -m vllm.entrypoints.openai.api_server`: it starts an engine process of its own (which
# ignores SIGTERM, as a busy engine core may), writes both pids, and never answers /health.
STAND_IN = textwrap.dedent(
    """
    import json, signal, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
    open(sys.argv[1], "w").write(json.dumps({"server": __import__("os").getpid(), "core": child.pid}))
    time.sleep(600)
    """
)


def stand_in_command(pids: Path):
    return lambda *_args, **_kw: [sys.executable, "-c", STAND_IN, str(pids)]


def wait_for(path: Path, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return json.loads(path.read_text())
        time.sleep(0.05)
    raise AssertionError(f"{path} never written")


def assert_gone(pids: dict) -> None:
    pgid = pids["server"]
    left = [p.pid for p in group_members(pgid)]
    try:
        assert left == [], f"processes of the server's group still running: {left}"
        for pid in pids.values():
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    finally:
        for pid in pids.values():  # never leave them running, whatever the outcome
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_stopped_local_server_leaves_no_process_of_its_group(tmp_path, monkeypatch):
    monkeypatch.setattr(remote, "server_command", stand_in_command(tmp_path / "pids.json"))
    monkeypatch.setattr("core.process.STOP_GRACE_S", 2)
    with pytest.raises(remote.RemoteError, match="did not answer"):
        remote.start_local_server(Settings(_env_file=None), max_lora_rank=16, timeout_s=3)
    assert_gone(wait_for(tmp_path / "pids.json"))


def test_ctrl_c_during_the_health_wait_stops_the_server_and_its_engine(tmp_path):
    """A real Ctrl-C (SIGINT) to a process waiting for the server to come up."""
    pids = tmp_path / "pids.json"
    script = textwrap.dedent(
        f"""
        import signal, sys
        # A terminal's Ctrl-C, also where this test runs in the background (which starts children with SIGINT ignored).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from core.settings import Settings
        from engine import remote
        import core.process
        import tests.test_orphans as t
        core.process.STOP_GRACE_S = 2
        remote.server_command = t.stand_in_command(__import__("pathlib").Path({str(pids)!r}))
        remote.start_local_server(Settings(_env_file=None), max_lora_rank=16, timeout_s=300)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parent.parent)
    found = wait_for(pids)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) != 0
    assert_gone(found)

"""No process outlives twin: a local vLLM server is stopped with its whole process group (also on Ctrl-C during
its health wait), and an EngineCore left by a SIGKILLed `twin serve` is stopped by the next start."""

from __future__ import annotations

import asyncio
import json
import logging
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
from engine.vllm_engine import VLLMEngine
from tests.bot_api_stub import BotApiStub

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


# -- an in-process vLLM engine's EngineCore, left running by a killed twin ----------------------------------------

ROOT = Path(__file__).parent.parent
# Stands in for vLLM's engine core process: it sleeps, and its command line says EngineCore as vLLM's title does.
CORE_STAND_IN = [sys.executable, "-c", "import time; time.sleep(600)", "EngineCore"]
# A twin whose engine is up (its AsyncLLM a stand-in) and who then waits to be killed.
TWIN_STAND_IN = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    import tests.test_orphans as t
    from core.settings import Settings
    from engine.vllm_engine import VLLMEngine
    VLLMEngine._build = t.stand_in_build
    asyncio.run(VLLMEngine(Settings(_env_file=None, data_dir=Path(sys.argv[1]))).start())
    time.sleep(600)
    """
)
CLEANUP_LINE = "stopped a vLLM EngineCore (pid {cores}) left running by twin process {twin}, which was killed"


class StandInLLM:
    """AsyncLLM's place: it starts an engine core process (the stand-in) and stops it at shutdown."""

    model_config = None

    def __init__(self):
        self.core = subprocess.Popen(CORE_STAND_IN)

    def shutdown(self) -> None:
        self.core.terminate()
        self.core.wait()


def stand_in_build(engine: VLLMEngine):
    """VLLMEngine._build without vLLM: the AsyncLLM it spawns (and records) is a StandInLLM."""
    engine._new_llm = StandInLLM
    return engine._spawn()


def alive(proc: psutil.Process) -> bool:
    """Running, and not a zombie (an orphan is reaped by whoever adopted it, maybe never in a container)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_all(procs: list[psutil.Process]) -> None:
    """Never leave them running, whatever a test's outcome."""
    for proc in procs:
        if alive(proc):
            proc.kill()


def wait_for_record(record: Path, twin: subprocess.Popen, timeout: float, log: Path | None = None) -> None:
    """Until the twin's engine is up (it has recorded its core); failing at once if the twin exits first."""
    deadline = time.monotonic() + timeout
    while not record.exists():
        if twin.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{record} never written (exit code {twin.returncode}):\n{log and log.read_text()}")
        time.sleep(0.1)


def private_data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    return data


async def start_and_close_an_engine(data: Path, monkeypatch) -> None:
    """The next start of a twin's engine, up to its clean-up of what a killed one left (vLLM itself is not
    needed for that: a stand-in takes its place), then its close; the records seen while it ran are checked."""
    monkeypatch.setattr(VLLMEngine, "_build", stand_in_build)
    engine = VLLMEngine(Settings(_env_file=None, data_dir=data))
    await engine.start()
    try:
        own = data / "run" / f"vllm-core-{os.getpid()}.json"
        assert [p.name for p in (data / "run").iterdir()] == [own.name]  # the killed twin's record is gone
        assert json.loads(own.read_text())["cores"][0]["pid"] == engine._llm.core.pid
        assert own.stat().st_mode & 0o777 == 0o600 and own.parent.stat().st_mode & 0o777 == 0o700
        core = psutil.Process(engine._llm.core.pid)
    finally:
        await engine.close()
    assert not own.exists() and not alive(core)


async def test_an_engine_core_left_by_a_killed_twin_is_stopped_by_the_next_start(tmp_path, monkeypatch, caplog):
    data = private_data_dir(tmp_path)
    twin = subprocess.Popen([sys.executable, "-c", TWIN_STAND_IN, str(data)], cwd=ROOT)
    wait_for_record(data / "run" / f"vllm-core-{twin.pid}.json", twin, 60)
    cores = psutil.Process(twin.pid).children()
    twin.kill()
    twin.wait()
    try:
        assert cores and all(alive(core) for core in cores)  # orphans now: nobody would ever stop them
        with caplog.at_level(logging.INFO):
            await start_and_close_an_engine(data, monkeypatch)
        assert not any(alive(core) for core in cores)
        line = CLEANUP_LINE.format(cores=", ".join(str(core.pid) for core in cores), twin=twin.pid)
        assert [r.getMessage() for r in caplog.records if "EngineCore" in r.getMessage()] == [line]
    finally:
        kill_all(cores)


async def test_the_record_of_a_running_twin_is_left_alone_and_a_corrupt_one_is_deleted(tmp_path, caplog):
    data = private_data_dir(tmp_path)
    twin = subprocess.Popen([sys.executable, "-c", TWIN_STAND_IN, str(data)], cwd=ROOT)
    record, cores = data / "run" / f"vllm-core-{twin.pid}.json", []
    try:
        wait_for_record(record, twin, 60)
        cores = psutil.Process(twin.pid).children()
        corrupt = data / "run" / "vllm-core-1.json"
        corrupt.write_text('{"parent": {"pid": 1')
        from engine import engine_cores

        with caplog.at_level(logging.WARNING):
            await asyncio.to_thread(engine_cores.stop_orphans, data / "run")
        assert record.exists() and all(alive(core) for core in cores)  # another twin's engine, still serving
        assert not corrupt.exists()
        (warning,) = caplog.records
        assert warning.getMessage().startswith(f"deleted {corrupt}: not a readable") and not warning.exc_info
    finally:
        twin.kill()
        twin.wait()
        kill_all(cores)


@pytest.mark.slow
async def test_a_sigkilled_twin_serve_leaves_no_engine_core_after_the_next_start(
    tmp_path, tiny_model_dir, monkeypatch, caplog
):
    """The real thing: `twin serve` with vLLM in-process on the tiny model, SIGKILLed once its engine is up."""
    data = private_data_dir(tmp_path)
    stub = BotApiStub("4242:orphans-secret-part")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWIN_")} | {
        "TWIN_DATA_DIR": str(data),
        "TWIN_OWNER_ID": "1",
        "TWIN_BOT_TOKEN": stub.token,
        "TWIN_BOT_API_URL": await stub.start(),
        "TWIN_BASE_MODEL": str(tiny_model_dir),
        "TWIN_ENGINE": "vllm",
        "TWIN_VLLM_MAX_MODEL_LEN": "256",
        "TWIN_SYNC_INTERVAL_MINUTES": "0",
        "TWIN_TRAIN_INTERVAL_HOURS": "0",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "HF_HUB_OFFLINE": "1",
    }
    log = tmp_path / "serve.log"
    with log.open("w") as err:
        serve = subprocess.Popen([Path(sys.executable).with_name("twin"), "serve"], cwd=tmp_path, env=env, stderr=err)
    tree: list[psutil.Process] = []
    try:
        record = data / "run" / f"vllm-core-{serve.pid}.json"
        await asyncio.to_thread(wait_for_record, record, serve, 300, log)  # a vLLM start on 2 busy cores
        tree = psutil.Process(serve.pid).children(recursive=True)
        cores = [psutil.Process(core["pid"]) for core in json.loads(record.read_text())["cores"]]
        assert cores and all("EngineCore" in " ".join(core.cmdline()) for core in cores)  # vLLM's, found by title
        serve.kill()
        serve.wait()
        assert all(alive(core) for core in cores)  # vLLM's core outlives its twin: an orphan
        with caplog.at_level(logging.INFO):
            await start_and_close_an_engine(data, monkeypatch)
        line = CLEANUP_LINE.format(cores=", ".join(str(core.pid) for core in cores), twin=serve.pid)
        assert [r.getMessage() for r in caplog.records if "EngineCore" in r.getMessage()] == [line]
        assert [p.pid for p in tree if alive(p)] == []  # nothing of the killed twin runs
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
        kill_all(tree)
        await stub.stop()

"""The vLLM EngineCore processes of an in-process engine, recorded under `data_dir/run/` so that the next start
stops those a killed twin (SIGKILL, the OOM killer) left running: they keep the model's memory, and nothing
else would ever stop them.

One record per twin process, `vllm-core-<pid>.json` (`twin serve` and `twin chat` may run at once on one data
dir). Each pid is kept with its process's create_time: a pid reused by an unrelated process is never stopped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

import psutil

from core.process import stop_tree

log = logging.getLogger(__name__)

# vLLM titles its engine core process so (`VLLM::EngineCore`; `EngineCore_DP0` with data parallelism).
CORE_NAME = "EngineCore"
# create_time comes from /proc in clock ticks (1/100 s): two readings closer than this are the same process.
SAME_START_S = 0.05


def record_path(run_dir: Path) -> Path:
    """The record of this process's engine cores."""
    return run_dir / f"vllm-core-{os.getpid()}.json"


def child_pids() -> set[int]:
    """This process's children now: what a build adds to them is the engine's."""
    return {p.pid for p in psutil.Process().children()}


def new_engine_cores(before: set[int]) -> list[psutil.Process]:
    """The children started since `before` that vLLM titled as its engine core; all of them when none is (a vLLM
    that names its core otherwise still has it recorded)."""
    new = [p for p in psutil.Process().children() if p.pid not in before]
    return [p for p in new if _is_engine_core(p)] or new


def record(path: Path, cores: list[psutil.Process]) -> None:
    """Write this process's record (its pid and create_time, and its cores'): atomically, private to the owner
    (0600 in a 0700 folder, as the data dir). A record that cannot be written only costs the clean-up after a
    kill: warned, not raised."""
    entry = {"parent": _identity(psutil.Process()), "cores": [i for i in map(_identity, cores) if i]}
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        os.chmod(path.parent, 0o700)
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
            json.dump(entry, out)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning(
            "cannot record the vLLM engine core in %s (%s): a kill of this twin would leave it running", path, exc
        )


def forget(path: Path) -> None:
    """Delete this process's record: its engine was shut down."""
    path.unlink(missing_ok=True)


def stop_orphans(run_dir: Path) -> None:
    """Stop the engine cores of every record whose twin process is gone, in one line each, and delete the record.
    The record of a twin that still runs is left alone; an unreadable one is deleted with a warning."""
    for path in sorted(run_dir.glob("vllm-core-*.json")):
        try:
            entry = json.loads(path.read_text())
            parent = _pid_and_start(entry["parent"])
            cores = [_pid_and_start(core) for core in entry["cores"]]
        except FileNotFoundError:  # its twin closed its engine meanwhile
            continue
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("deleted %s: not a readable engine core record (%s)", path, exc)
            forget(path)
            continue
        if _running(*parent):
            continue
        left = [proc for proc in (_running(*core) for core in cores) if proc is not None]
        for proc in left:
            stop_tree(proc)
        if left:
            log.warning(
                "stopped a vLLM EngineCore (pid %s) left running by twin process %d, which was killed",
                ", ".join(str(proc.pid) for proc in left),
                parent[0],
            )
        forget(path)


def _is_engine_core(proc: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return CORE_NAME in proc.name() or any(CORE_NAME in part for part in proc.cmdline())
    return False


def _identity(proc: psutil.Process) -> dict | None:
    """pid and create_time; None for a process that is already gone."""
    try:
        return {"pid": proc.pid, "create_time": proc.create_time()}
    except psutil.Error:
        return None


def _pid_and_start(identity: dict) -> tuple[int, float]:
    pid = int(identity["pid"])
    if pid <= 0:  # psutil would raise on these, and kill() would reach a whole process group
        raise ValueError(f"pid {pid}")
    return pid, float(identity["create_time"])


def _running(pid: int, create_time: float) -> psutil.Process | None:
    """The process recorded as (pid, create_time) if it still runs: not one that reused its pid, not a zombie."""
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) < SAME_START_S and proc.status() != psutil.STATUS_ZOMBIE:
            return proc
    except psutil.Error:
        pass
    return None

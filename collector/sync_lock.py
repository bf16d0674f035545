"""One sync at a time: an asyncio lock within a process and a flock on data_dir/sync.lock across processes.

A second sync fails fast with SyncBusy instead of waiting: whatever it would fetch, the running one is
fetching already, and a scheduler or a terminal should get an answer at once rather than hang.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path

from core.errors import UserError

LOCK_FILE = "sync.lock"


class SyncBusy(UserError):
    """Another sync (`twin collect` or the bot's scheduled `/sync`) holds the lock."""


class SyncGuard:
    """Held for the whole of a sync. The bot builds one and passes it to every sync it starts.

    flock locks belong to an open file, so two guards on one file exclude each other even within one
    process; the asyncio lock makes the in-process case explicit and cheap.
    """

    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / LOCK_FILE
        self._lock = asyncio.Lock()
        self._fd: int | None = None

    async def __aenter__(self) -> SyncGuard:
        if self._lock.locked():
            raise SyncBusy("a sync is already running in this process: wait for it to finish")
        await self._lock.acquire()
        try:
            self._fd = _lock_file(self.path)
        except BaseException:
            self._lock.release()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        self._lock.release()


def _lock_file(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise SyncBusy(
            f"another sync is running (pid {holder}: `twin collect` or the bot's scheduled sync): "
            "wait for it to finish, then retry"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd

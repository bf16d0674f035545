"""Where the files a database row names are: one rule for every writer and reader of a stored path.

Adapter folders and evaluation reports are recorded relative to the data dir when they lie inside it (so
`twin train` run in-process with `TWIN_DATA_DIR=data`, a bot's training child given absolute folders, and a
data dir moved elsewhere all name the same folder), else absolute. Every reader turns the stored text back
into a path with `artifact_path`, never with `Path(row["path"])` or `data_dir / row["path"]` of its own.
"""

from __future__ import annotations

from pathlib import Path


def stored_path(path: Path | str, data_dir: Path | str) -> str:
    """How `path` is written into the database: relative to `data_dir` (POSIX) when inside it, else absolute."""
    full, root = Path(path).resolve(), Path(data_dir).resolve()
    return full.relative_to(root).as_posix() if full.is_relative_to(root) else str(full)


def artifact_path(stored: str, data_dir: Path | str) -> Path:
    """The real (absolute) path of a stored one: absolute as it is, relative under `data_dir`."""
    return Path(data_dir).absolute() / stored

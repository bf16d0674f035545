"""Forgetting a person everywhere: storage drops their rows (one transaction, and no trace left in the
database's files), then the folders of adapters trained on them, the evaluation reports that quoted them and
the reports' reply cache are deleted, and the kept adapters' meta.json lose that persona's figures. It holds
the training lock, so no round reads their data meanwhile. What could not be deleted is an error that names
it, never ignored."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from core.errors import UserError
from core.paths import artifact_path
from core.settings import Settings
from storage import Storage
from storage.forget import ForgetReport, without_key
from trainer.artifacts import remove_folder
from trainer.registry import LOCK

log = logging.getLogger(__name__)


class ForgetIncomplete(UserError):
    """Their rows are gone, but files that hold their data are not: `left` says which and what to do."""

    def __init__(self, report: ForgetReport, left: list[str]):
        super().__init__(f"forgot {report.slug} in the database, but not everywhere: " + "; ".join(left))
        self.report, self.left = report, left


def forget_person(store: Storage, settings: Settings, who: int | str) -> ForgetReport:
    """Delete everything of `who` (slug or id); raises LockHeld while a training round runs, and
    ForgetIncomplete (after doing all it can) when a folder of theirs could not be deleted."""
    with store.holding_lock(LOCK):
        report = store.forget_person(who, settings.session_gap_seconds)
        folders = [artifact_path(p, settings.data_dir) for p in [*report.adapter_paths, *report.report_paths]]
        # Replies kept for reports answer contexts that may quote them: all of them go (regenerated on demand).
        folders.append(settings.report_cache_dir)
        left = [why for folder in folders if (why := remove_folder(folder))]
        for adapter in store.adapters():
            if adapter["status"] != "deleted" and adapter["path"]:
                drop_persona_from_meta(artifact_path(adapter["path"], settings.data_dir) / "meta.json", report.slug)
    if not report.wal_emptied:
        left.append(
            f"{settings.db_path}-wal still holds deleted pages (another process was reading): it is emptied when "
            "every twin process has stopped, so restart `twin serve` if it runs"
        )
    log.info(
        "forgot a person: %d messages, %d sessions, adapters %s deleted",
        report.messages,
        report.sessions,
        report.trained_on or "none",
    )
    if left:
        raise ForgetIncomplete(report, left)
    return report


def drop_persona_from_meta(meta_file: Path, slug: str) -> None:
    """Rewrite an adapter's meta.json without the persona's figures (atomically, keeping its mode)."""
    if not meta_file.is_file():
        return
    meta = json.loads(meta_file.read_text())
    kept = without_key(meta, slug)
    if kept == meta:
        return
    tmp = meta_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(kept, indent=2, default=str))
    tmp.chmod(0o600)
    tmp.replace(meta_file)

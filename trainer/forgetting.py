"""Forgetting a person everywhere: storage drops their rows (one transaction), then the folders of adapters
trained on them, the evaluation reports that quoted them and the reports' reply cache are deleted, and the
kept adapters' meta.json lose that persona's figures. It holds the training lock, so no round reads their
data meanwhile."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from core.settings import Settings
from storage import Storage
from storage.forget import ForgetReport, without_key
from trainer.registry import LOCK

log = logging.getLogger(__name__)


def forget_person(store: Storage, settings: Settings, who: int | str) -> ForgetReport:
    """Delete everything of `who` (slug or id); raises LockHeld while a training round runs."""
    with store.holding_lock(LOCK):
        report = store.forget_person(who, settings.session_gap_seconds)
        for folder in [*report.adapter_paths, *report.report_paths]:  # relative ones are under the data dir
            shutil.rmtree(settings.data_dir / folder, ignore_errors=True)
        # Replies kept for reports answer contexts that may quote them: all of them go (regenerated on demand).
        shutil.rmtree(settings.report_cache_dir, ignore_errors=True)
        for adapter in store.adapters():
            if adapter["status"] != "deleted" and adapter["path"]:
                drop_persona_from_meta(settings.data_dir / adapter["path"] / "meta.json", report.slug)
    log.info(
        "forgot a person: %d messages, %d sessions, adapters %s deleted",
        report.messages,
        report.sessions,
        report.trained_on or "none",
    )
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

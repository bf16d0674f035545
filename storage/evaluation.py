"""Storage of evaluation reports: the headline figures of each adapter's report (mixed into Storage)."""

from __future__ import annotations

import json
import time
from typing import Any

from .db import Database


class EvalStore(Database):
    def save_eval_report(self, version: int, status: str, path: str, figures: dict[str, Any]) -> None:
        """Record (or replace) adapter `version`'s report: its status, folder and headline figures."""
        with self.transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO eval_reports (version, created_at, status, path, figures)"
                " VALUES (?, ?, ?, ?, ?)",
                (version, int(time.time()), status, path, json.dumps(figures)),
            )

    def eval_report(self, version: int) -> dict[str, Any] | None:
        """Adapter `version`'s latest report row, `figures` decoded; None if it has none."""
        rows = self.query("SELECT * FROM eval_reports WHERE version = ?", (version,))
        if not rows:
            return None
        row = dict(rows[0])
        row["figures"] = json.loads(row["figures"] or "{}")
        return row

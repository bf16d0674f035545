"""A bench-only eval share: more of the bench's own corpus held out, so the discriminator has enough replies.

The product holds out a stable ~5% of sessions (core.sessions.split_of), too few contexts on a small corpus
for a narrow interval. The bench marks more of ITS OWN database's sessions as eval before its round trains
(never trained on: a round plans from train sessions only); the product's split rule is not touched, and
every session it holds out stays held out.
"""

from __future__ import annotations

import hashlib

from storage import Storage

# A salt of its own: the bench's extra share is independent of the product's 5% buckets.
SALT = "bench-eval:"


def bench_holds_out(session_id: str, share: float) -> bool:
    """Whether the bench's extra share takes this session (stable by id)."""
    bucket = int.from_bytes(hashlib.sha256((SALT + session_id).encode()).digest()[:4], "big") % 10_000
    return bucket < share * 10_000


def hold_out(store: Storage, share: float) -> list[str]:
    """Mark a further `share` of the train sessions in `store` as eval; returns their ids (sessions are
    rebuilt from messages by an import or a sync, which restores the product's split: run this after them)."""
    by_dialog: dict[int, list[dict]] = {}
    for row in store.sessions():
        by_dialog.setdefault(row["dialog_id"], []).append(row)
    held = []
    for dialog_id, rows in by_dialog.items():
        moved = [r["id"] for r in rows if r["split"] == "train" and bench_holds_out(r["id"], share)]
        if moved:
            store.replace_sessions(dialog_id, [{**r, "split": "eval"} if r["id"] in moved else r for r in rows])
            held += moved
    return held

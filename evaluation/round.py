"""`python -m evaluation.round`: a training round with the report on its new adapter.

The trainer's child process (`python -m trainer`: options from the parent, JSON lines) given evaluation's report as
its `after_round`: what `twin train` and the bot's scheduled rounds start, so `trainer` never imports
`evaluation`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from core.settings import Settings

MODULE = "evaluation.round"  # the child `run_training_subprocess` starts for a round with its report


def report_after_round(settings: Settings, version: int, on_event: Callable[[dict], None] | None = None) -> list[str]:
    """evaluation.after_round's report, imported only once a round made an adapter (it loads torch)."""
    from evaluation.after_round import report_after_round as report

    return report(settings, version, on_event)


if __name__ == "__main__":
    from trainer.__main__ import main

    sys.exit(main(after_round=report_after_round, module=MODULE))

"""`python -m trainer train [--full] [--max-steps N] [--if-needed] [--dry-run] [--num-processes N]`

The trainer as a child process of the bot: an out-of-memory or a crash ends this process, never the bot,
and GPU memory is returned when it exits. Progress is written to stdout as JSON lines
(`{"event": "step", ...}`, then `{"event": "done", "version": N, "promoted": true, "eval_loss": x}`, or
`skipped` / `error`); logs go to stderr. SIGTERM stops the round cleanly (recorded failed, lock released).
With --num-processes N > 1 this re-executes itself under torchrun, one process per rank (gloo on CPU).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import traceback
from typing import TYPE_CHECKING

from core.errors import UserError

if TYPE_CHECKING:
    from trainer.rounds import AfterRound


class Terminated(BaseException):
    """SIGTERM arrived: unwind so the round is recorded failed and its lock released."""


def _on_sigterm(signum, frame):
    raise Terminated(f"terminated by signal {signum}")


def distributed_command(opts, module: str = "trainer") -> list[str]:
    """torchrun (standalone: rendezvous on a free local port) running `module` once per process."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={opts.num_processes}",
        "-m",
        module,
        *opts.to_args(),
    ]


def main(argv: list[str] | None = None, after_round: AfterRound | None = None, module: str = "trainer") -> int:
    """One round as a child process. `after_round` reports on the new adapter; `module` is the one
    torchrun re-runs per rank (`evaluation.round` passes both: the round with its report)."""
    from dataclasses import replace

    from trainer.rounds import RoundOptions, round_once, training_needed
    from trainer.runner import trainer_settings

    opts = RoundOptions.parse(sys.argv[1:] if argv is None else argv)
    if opts.num_processes > 1 and "LOCAL_RANK" not in os.environ and not opts.dry_run:
        # Decide --if-needed here, once, then hand the round to one process per rank.
        needed, n, threshold = training_needed(trainer_settings()) if opts.if_needed else (True, 0, 0)
        if not needed:
            print(json.dumps({"event": "skipped", "reason": f"{n} new closed sessions, fewer than {threshold}"}))
            return 0
        sys.stdout.flush()
        os.execv(sys.executable, distributed_command(replace(opts, if_needed=False), module))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _on_sigterm)
    out = sys.stdout

    def emit(event: dict) -> None:
        out.write(json.dumps(event, default=str) + "\n")
        out.flush()

    try:
        # Libraries that print would corrupt the JSON stream: their stdout goes to stderr.
        with contextlib.redirect_stdout(sys.stderr):
            final = round_once(trainer_settings(), opts, emit, after_round)
    except UserError as exc:
        emit({"event": "error", "error": str(exc), "kind": "user"})
        return 1
    except (Exception, Terminated) as exc:
        traceback.print_exc()
        emit({"event": "error", "error": f"{type(exc).__name__}: {exc}", "kind": "crash"})
        return 2
    if final is not None:
        emit(final)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m trainer`: one training round as a child process of the bot or of `twin train`.

An out-of-memory or a crash ends this process, never the bot, and GPU memory is returned when it exits. The
round's options and the settings come from the parent, as JSON in the environment (trainer.runner): the
child runs the very RoundOptions its parent built from `twin train`'s flags, which are declared only there.
Progress is written to stdout as JSON lines (`{"event": "step", ...}`, then `{"event": "done", "version": N,
"promoted": true, "eval_loss": x}`, or `skipped` / `error`); logs go to stderr. SIGTERM stops the round
cleanly (recorded failed, lock released). With num_processes > 1 this re-executes itself under torchrun,
one process per rank (gloo on CPU), each reading the same options.
"""

from __future__ import annotations

import argparse
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


def distributed_command(num_processes: int, module: str = "trainer") -> list[str]:
    """torchrun (standalone: rendezvous on a free local port) running `module` once per process."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={num_processes}",
        "-m",
        module,
    ]


def _check_no_arguments(argv: list[str], module: str) -> None:
    """`--help` says where the options come from; any other argument is an error, not a silently ignored flag."""
    from trainer.runner import OPTIONS_VARIABLE

    argparse.ArgumentParser(
        prog=f"python -m {module}",
        description="One training round as a child process (progress as JSON lines on stdout). Its options "
        f"come from the parent (`twin train`, the bot) as JSON in ${OPTIONS_VARIABLE}; run by hand, a default "
        "round. To choose a round's options, use `twin train` (twin train --help).",
    ).parse_args(argv)


def main(argv: list[str] | None = None, after_round: AfterRound | None = None, module: str = "trainer") -> int:
    """One round as a child process. `after_round` reports on the new adapter; `module` is the one
    torchrun re-runs per rank (`evaluation.round` passes both: the round with its report)."""
    from dataclasses import replace

    from trainer.rounds import round_once, training_needed
    from trainer.runner import OPTIONS_VARIABLE, trainer_options, trainer_settings

    _check_no_arguments(sys.argv[1:] if argv is None else argv, module)
    opts = trainer_options()
    if opts.num_processes > 1 and "LOCAL_RANK" not in os.environ and not opts.dry_run:
        # Decide --if-needed here, once, then hand the round to one process per rank.
        needed, n, threshold = training_needed(trainer_settings()) if opts.if_needed else (True, 0, 0)
        if not needed:
            print(json.dumps({"event": "skipped", "reason": f"{n} new closed sessions, fewer than {threshold}"}))
            return 0
        from engine.base_model import base_model_path

        base_model_path(trainer_settings())  # converted here, once: the ranks find the folder and reuse it
        sys.stdout.flush()
        os.environ[OPTIONS_VARIABLE] = replace(opts, if_needed=False).to_json()  # what every rank reads
        os.execv(sys.executable, distributed_command(opts.num_processes, module))
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

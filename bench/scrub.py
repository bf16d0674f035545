"""How much of ordinary chat the privacy scrub changes, and how fast: every message of chitchat-dataset.

The corpus is real English small talk (258k messages) with next to no secrets in it, so nearly every change
is a false positive: read the sample printed at the end. The scrub of `main` (read with `git show
main:core/scrub.py` into a temporary module) runs over the same messages for the speed side by side.

    python bench/scrub.py                  # all messages, 40 changed ones shown
    python bench/scrub.py --limit 50000 --sample 200 --no-baseline
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.scrub import Scrubber  # noqa: E402
from tests.chitchat import load_corpus  # noqa: E402


def messages(limit: int | None) -> list[str]:
    corpus = load_corpus()
    texts = [m["text"] for conv in corpus.values() for burst in conv["messages"] for m in burst]
    return texts[:limit] if limit else texts


def baseline_scrub(ref: str) -> Callable[[str], str] | None:
    """The scrub as it is on `ref`, imported from a temporary file; None where git cannot show it."""
    try:
        source = subprocess.run(
            ["git", "show", f"{ref}:core/scrub.py"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None
    path = Path(tempfile.mkdtemp()) / "scrub_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("scrub_baseline", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module.Scrubber().scrub


def timed(scrub: Callable[[str], str], texts: list[str]) -> tuple[list[str], float]:
    scrub("warm up: password: x1")  # lazy parts (wordlists, detect-secrets) load outside the clock
    start = time.perf_counter()
    out = [scrub(t) for t in texts]
    return out, len(texts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="only the first N messages")
    parser.add_argument("--sample", type=int, default=40, help="changed messages to print")
    parser.add_argument("--baseline", default="main", help="git ref whose core/scrub.py is the baseline")
    parser.add_argument("--no-baseline", action="store_true", help="skip the baseline run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    texts = messages(args.limit)
    out, rate = timed(Scrubber().scrub, texts)
    changed = [(a, b) for a, b in zip(texts, out, strict=True) if a != b]
    print(f"messages      {len(texts)}")
    print(f"changed       {len(changed)} ({len(changed) / len(texts):.3%})")
    line = f"messages/s    {rate:,.0f} (this scrub)"
    old = None if args.no_baseline else baseline_scrub(args.baseline)
    if old is not None:
        old_out, old_rate = timed(old, texts)
        old_changed = sum(a != b for a, b in zip(texts, old_out, strict=True))
        line += (
            f" vs {old_rate:,.0f} ({args.baseline}), ratio {rate / old_rate:.2f}; {args.baseline} changed {old_changed}"
        )
    print(line)
    shown = random.Random(args.seed).sample(changed, min(args.sample, len(changed)))
    print(f"\n{len(shown)} changed messages (original -> scrubbed):")
    for before, after in shown:
        print(f"  {before!r}\n    -> {after!r}")


if __name__ == "__main__":
    main()

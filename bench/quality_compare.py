"""`bench/quality.py --compare A B`: two saved runs side by side, and which differences lie outside the noise.

A discriminator accuracy comes with its 95% interval (evaluation/discriminator.py); two runs differ in it
only where the intervals do not overlap. Other figures are printed beside each other without a verdict.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

from core.settings import Settings

# A tag names a folder and a JSON file under --out: letters, digits and a few marks, nothing that climbs out
# of --out or names --out itself ("", ".", "..", "a/b" would make the run delete other runs' results).
OWNER_ID = 1000  # the owner id bench/quality.py gives its corpus's owner
TAG_CHARS = set(string.ascii_letters + string.digits + "-_.=+,")


def check_tag(tag: str) -> str:
    """`tag` when it names one run of its own under --out, else ValueError saying what to pass."""
    if not tag or tag in (".", "..") or not set(tag) <= TAG_CHARS:
        raise ValueError(f"--tag {tag!r} does not name a run: use letters, digits and - _ . = + , (e.g. --tag greedy)")
    return tag


def load_run(out: Path, tag: str) -> dict:
    path = out / f"{check_tag(tag)}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no saved run {path}: run `python bench/quality.py --tag {tag}` first")
    return json.loads(path.read_text())


def run_settings(out: Path, tag: str, engine: str = "vllm") -> Settings:
    """The settings a saved run's data dir was made with (as bench/quality.py made them), to read it again."""
    data_dir = out / check_tag(tag) / "data"
    meta = json.loads((data_dir / "adapters" / "0001" / "meta.json").read_text())
    marks = meta.get("time_marks")  # how the adapter was trained: {"zone": ...} or None
    # The base model the adapter was trained on, where it still is (else the default, converted again).
    base = meta.get("base_model")
    trained_on = {"base_model": base} if base and Path(base).is_dir() else {}
    return Settings(
        _env_file=None,
        data_dir=data_dir,
        **trained_on,
        models_dir=Path("bench/out/models").absolute(),
        owner_id=OWNER_ID,
        engine=engine,
        vllm_dtype="float32",
        vllm_max_model_len=2048,
        time_marks=bool(marks),
        time_zone=(marks or {}).get("zone", ""),
    )


def discriminators(run: dict) -> dict[tuple[str, str], dict]:
    """(persona or "all", model) → {"value", "ci"} of a saved run's discriminator accuracies."""
    found = {}
    for persona, entry in (run.get("style") or {}).items():
        for model, figures in (entry.get("models") or {}).items():
            found[(persona, model)] = {"value": figures.get("discriminator"), "ci": figures.get("discriminator_ci")}
    for model, figures in (run.get("style_overall") or {}).items():
        if isinstance(figures, dict) and "discriminator" in figures:
            found[("all", model)] = {"value": figures.get("discriminator"), "ci": figures.get("discriminator_ci")}
    return found


def verdict(a: dict | None, b: dict | None) -> str:
    """ "differs" when both figures have intervals that do not overlap; "same" when they overlap; "?" else."""
    if not a or not b or not a.get("ci") or not b.get("ci"):
        return "?"
    (a_low, a_high), (b_low, b_high) = a["ci"], b["ci"]
    return "differs" if a_high < b_low or b_high < a_low else "same"


def cell(figure: dict | None) -> str:
    if not figure or figure.get("value") is None:
        return "-"
    ci = figure.get("ci")
    return f"{figure['value']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{figure['value']:.2f}"


def compare(a: dict, b: dict) -> list[dict]:
    """A row per (persona, model) either run has: both figures and the verdict."""
    da, db = discriminators(a), discriminators(b)
    keys = list(dict.fromkeys([*da, *db]))
    return [
        {
            "persona": p,
            "model": m,
            "a": da.get((p, m)),
            "b": db.get((p, m)),
            "verdict": verdict(da.get((p, m)), db.get((p, m))),
        }
        for p, m in keys
    ]


def compare_table(a: dict, b: dict) -> str:
    rows = compare(a, b)
    header = f"{'persona':14} {'model':8} │ {a.get('tag', 'A'):>20} │ {b.get('tag', 'B'):>20} │ verdict"
    lines = ["discriminator accuracy, 95% interval (0.5 = passes for real)", header, "─" * len(header)]
    for r in rows:
        mark = "  ← outside the noise" if r["verdict"] == "differs" else ""
        lines.append(
            f"{r['persona']:14} {r['model']:8} │ {cell(r['a']):>20} │ {cell(r['b']):>20} │ {r['verdict']}{mark}"
        )
    lines.append("differs: the intervals do not overlap; same: they do (the runs are not told apart); ?: no interval")
    return "\n".join(lines)

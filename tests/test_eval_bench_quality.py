"""bench/quality.py's own parts: a tag never names --out itself, and --compare says which differences of two
saved runs lie outside the noise (made-up saved results; nothing is trained)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def bench_module(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_bench(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "quality.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def saved_run(tag: str, current: tuple[float, float, float], owner: str = "casey") -> dict:
    value, low, high = current
    figures = {"discriminator": value, "discriminator_ci": [low, high]}
    base = {"discriminator": 0.97, "discriminator_ci": [0.93, 0.99]}
    return {
        "tag": tag,
        "owner": owner,
        "style": {owner: {"models": {"base": base, "current": figures}}},
        "style_overall": {"real": {"question": 0.2}, "base": base, "current": figures},
    }


@pytest.mark.parametrize("tag", ["", ".", "..", "../other", "a/b"])
def test_a_tag_that_names_no_run_of_its_own_is_refused_and_deletes_no_saved_result(tmp_path, tag):
    out = tmp_path / "quality"
    (out / "greedy").mkdir(parents=True)
    (out / "greedy.json").write_text(json.dumps(saved_run("greedy", (0.8, 0.74, 0.85))))
    run = run_bench("--tag", tag, "--out", str(out), "--model", str(tmp_path / "no-such-model"))
    assert run.returncode != 0
    assert "does not name a run" in run.stderr
    assert (out / "greedy.json").is_file() and (out / "greedy").is_dir()


def test_compare_marks_only_the_differences_whose_intervals_do_not_overlap(tmp_path):
    compare = bench_module("quality_compare")
    a = saved_run("лора-a", (0.90, 0.84, 0.94))
    far = saved_run("b", (0.70, 0.62, 0.77))
    near = saved_run("c", (0.86, 0.80, 0.91))
    rows = {(r["persona"], r["model"]): r["verdict"] for r in compare.compare(a, far)}
    assert rows == {
        ("casey", "base"): "same",
        ("casey", "current"): "differs",
        ("all", "base"): "same",
        ("all", "current"): "differs",
    }
    assert {r["verdict"] for r in compare.compare(a, near)} == {"same"}
    no_interval = saved_run("d", (0.5, 0.0, 0.0))
    no_interval["style"]["casey"]["models"]["current"]["discriminator_ci"] = None
    assert {r["verdict"] for r in compare.compare(a, no_interval) if r["model"] == "current"} == {"?"}


def test_compare_prints_two_saved_runs_side_by_side(tmp_path):
    out = tmp_path / "quality"
    out.mkdir()
    (out / "a.json").write_text(json.dumps(saved_run("a", (0.90, 0.84, 0.94)), ensure_ascii=False))
    (out / "b.json").write_text(json.dumps(saved_run("b", (0.70, 0.62, 0.77))))
    run = run_bench("--compare", "a", "b", "--out", str(out))
    assert run.returncode == 0, run.stderr
    row = next(line for line in run.stdout.splitlines() if line.startswith("all") and "current" in line)
    assert "0.90 [0.84, 0.94]" in row and "0.70 [0.62, 0.77]" in row and "outside the noise" in row
    missing = run_bench("--compare", "a", "nope", "--out", str(out))
    assert missing.returncode != 0 and "python bench/quality.py --tag nope" in missing.stderr


def test_the_bench_holds_out_more_sessions_without_touching_the_products_split(tmp_path):
    from core.sessions import split_of
    from core.settings import Settings
    from storage import Storage
    from tests.train_corpus import Corpus
    from trainer.dataset import session_refs

    settings = Settings(_env_file=None, data_dir=tmp_path, owner_id=1)
    store = Storage(settings.db_path)
    corpus = Corpus(store)
    corpus.add(60, 4)
    before = {r["id"]: r["split"] for r in store.sessions()}
    held = bench_module("quality_holdout").hold_out(store, 0.3)
    after = {r["id"]: r["split"] for r in store.sessions()}
    assert 5 <= len(held) <= 35 and all(before[i] == "train" and after[i] == "eval" for i in held)
    assert all(after[i] == "eval" for i in before if split_of(i) == "eval")  # the product's eval stays eval
    assert {i for i in before if before[i] == "eval"} == {i for i in before if split_of(i) == "eval"}
    trained_on = {r.id for r in session_refs(store, settings, "train")}
    assert trained_on and trained_on.isdisjoint(held) and trained_on.isdisjoint(i for i in after if after[i] == "eval")
    store.close()


def test_a_run_whose_report_was_cut_off_is_reused_from_its_saved_round(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))  # quality.py imports its neighbours as a script does
    quality = bench_module("quality")
    out = tmp_path / "quality"
    args = quality.parse_args(["--tag", "sft-sp", "--out", str(out), "--set", "selfplay_pairs=100"])
    settings = quality.settings_for(args, tmp_path / "data")
    round_ = {"steps": 12, "corpus": {}, "counts": {"examples": 3}, "trained_tokens": 96_000, "train_seconds": 9}
    assert quality.trained(args, round_, settings) == round_
    saved = quality.load_round(out, "sft-sp")  # killed during its report: no sft-sp.json
    assert saved["knobs"] == {"selfplay_pairs": 100} and saved["trained_tokens"] == 96_000
    (out / "sft-sp.json").write_text(json.dumps({**saved, "report": "report.md"}))
    assert quality.load_round(out, "sft-sp")["report"] == "report.md"  # the finished run, once there is one
    with pytest.raises(FileNotFoundError, match="no saved run"):
        quality.load_round(out, "other")

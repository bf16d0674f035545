"""End to end on real engines: the persona conditioning check, `twin eval` and the report after a round.

One tiny model is trained once (the real trainer, a few hundred steps on CPU) on a corpus where every persona
has its own signature; each engine (transformers, vLLM) starts once for the module and answers as the bot
would. The same trained adapter serves the report tests.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import pytest_asyncio
from rich.console import Console
from typer.testing import CliRunner

from core.progress import ProgressDisplay, show_report_progress
from core.settings import Settings
from engine import build_engine, stored_adapters
from engine.base import AdapterRef
from evaluation.config import EvalConfig
from evaluation.report import evaluate_adapter
from evaluation.round import report_after_round
from storage import Storage
from tests.conditioning import SIGNATURES, build_signature_corpus, conditioning_check
from tests.train_corpus import Corpus
from trainer.config import TrainConfig
from trainer.rounds import RoundOptions, round_once
from trainer.train import run_round
from twin.cli import app

pytestmark = pytest.mark.slow
in_module_loop = pytest.mark.asyncio(loop_scope="module")  # the async tests share the module's engine

# A few hundred steps: the signatures show by ~100; by 400 they hold under sampling (240 steps: ~90%).
SIGNATURE_ROUND = TrainConfig(
    lora_r=16,
    lora_alpha=32,
    learning_rate=3e-3,
    epochs=10,
    pack_tokens=512,
    grad_accum=1,
    max_steps=400,
    eval_pack_tokens=4096,
)
SMALL = EvalConfig(replies_per_persona=8, opener_turns=2)
MIN_SHARE = 0.9


@contextlib.contextmanager
def one_torch_thread():
    """A tiny model's matmuls are slower split over threads on a busy 2-core box (as in tests/adapters.py)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def confident_tiny_model(tiny_model_dir: Path, out: Path) -> Path:
    """The shared tiny model with its final norm scaled ×8. Its random tied embeddings cap every logit near
    ±2.5, so even a perfectly trained tiny model samples almost uniformly; ×8 lifts the cap (nothing else
    changes), so sampling at the bot's temperature can show what it learned."""
    import torch
    from transformers import AutoModelForCausalLM

    shutil.copytree(tiny_model_dir, out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    with torch.no_grad():
        model.model.norm.weight.mul_(8.0)
    model.save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def signature_data(tmp_path_factory, tiny_model_dir):
    """A data dir with the signature corpus (120 train, 12 eval sessions) and adapter 1 trained on it."""
    root = tmp_path_factory.mktemp("signatures")
    model = confident_tiny_model(tiny_model_dir, root / "model")
    settings = Settings(
        _env_file=None, data_dir=root / "data", base_model=str(model), vllm_dtype="float32", vllm_max_model_len=512
    )
    settings.ensure_data_dir()
    store = Storage(settings.db_path)
    build_signature_corpus(store, n_train=120, n_eval=12)
    with one_torch_thread():
        result = run_round(settings, SIGNATURE_ROUND)
    assert result.version == 1 and result.promoted
    return settings, store, result


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["transformers", "vllm"])
async def engine(request, signature_data):
    """The engine the bot would build from settings (its sampling: temperature 0.7, top-p 0.9), once each."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings, store, _ = signature_data
    eng = build_engine(settings.model_copy(update={"engine": request.param}), stored_adapters(store, settings))
    with one_torch_thread():
        await eng.start()
        yield eng
        await eng.close()


def test_the_signature_round_learned_the_corpus(signature_data):
    _, _, result = signature_data
    assert result.eval_loss < 1.0 < result.base_eval_loss


@in_module_loop
async def test_asking_for_a_persona_gets_its_signature_in_nine_of_ten_replies(engine, signature_data):
    settings, store, _ = signature_data
    adapter = AdapterRef.from_row(store.active_adapter(), settings.data_dir)
    result = await conditioning_check(engine, adapter, per_persona=16)
    print(f"\nconditioning on {engine.name}: {result.describe()}")
    assert result.share >= MIN_SHARE, result.samples
    assert all(share >= 0.75 for share in result.per_persona.values()), result.per_persona
    assert set(result.per_persona) == set(SIGNATURES)


def sent_replies(figures: dict) -> int:
    """Replies a model sent (not dropped as degenerate), from its style statistics."""
    stats = figures["stats"]
    return round(stats["n_replies"] * (1 - (stats["empty_share"] or 0)))


def assert_discriminator(figure: float | None, sent: int, real: int) -> None:
    """In [0, 1], or None because either side has fewer replies than the classifier's 5 folds (dropped ones
    are left out)."""
    if figure is None:
        assert min(sent, real) < 5, (sent, real)
    else:
        assert 0.0 <= figure <= 1.0, figure


def assert_progress_of(events: list[dict], data: dict) -> None:
    """Every model that replied and every persona it answered as is named; each count reaches its total."""
    json.dumps(events)  # a round's child process writes each event as a JSON line
    progress = [e for e in events if e["event"] == "report_progress"]
    replied = {m for entry in data["style"].values() for m in entry["models"]}
    replies = [e for e in progress if e["stage"] == "replies"]
    assert {e["model"] for e in replies} == replied and {e["persona"] for e in replies} == set(data["style"])
    assert {e["model"] for e in progress if e["stage"] == "openers"} == {d["model"] for d in data["openers"]}
    counts: dict[tuple, list[tuple[int, int]]] = {}
    for e in progress:
        counts.setdefault((e["stage"], e["model"], e["persona"]), []).append((e["done"], e["of"]))
    for (stage, _, persona), seen in counts.items():
        of = data["style"][persona]["n"] if stage == "replies" else seen[0][1]
        assert seen == [(done, of) for done in range(of + 1)] and of > 0, (stage, persona, seen)


@in_module_loop
async def test_the_report_replies_through_the_engine_and_the_twin_is_closer_in_style(engine, signature_data, tmp_path):
    settings, store, _ = signature_data
    events: list[dict] = []
    report = await evaluate_adapter(settings, store, out_dir=tmp_path, cfg=SMALL, engine=engine, on_event=events.append)
    data = report.data
    assert_progress_of(events, data)
    assert data["engine"] == engine.name and data["status"] == "ok"
    assert data["personas"][0] == "alice" and set(data["personas"]) == set(SIGNATURES)
    for persona, entry in data["style"].items():
        current, base = entry["models"]["current"], entry["models"]["base"]
        assert current["distance"] < base["distance"], persona
        assert entry["examples"] and "current" in entry["examples"][0]
    assert {d["model"] for d in data["openers"]} == {"base", "current"}
    assert {(d["first"], d["second"]) for d in data["openers"]} >= {("bob", "alice"), ("alice", "bob")}
    assert report.headline["style_distance"] < report.headline["base_style_distance"]
    assert (tmp_path / "summary.png").stat().st_size > 1000
    for entry in data["style"].values():
        for figures in entry["models"].values():
            assert_discriminator(figures["discriminator"], sent_replies(figures), entry["n"])
    real = sum(entry["n"] for entry in data["style"].values())
    pooled = {m: data["style_overall"][m]["discriminator"] for m in ("base", "current")}
    print(f"\ndiscriminator on {engine.name}: {pooled}")
    for model, figure in pooled.items():
        assert_discriminator(figure, sum(sent_replies(e["models"][model]) for e in data["style"].values()), real)
    assert pooled["current"] <= 0.75  # the twin's replies to the signature corpus pass for real ones
    assert report.headline["discriminator"] == data["style_overall"]["current"]["discriminator"]
    assert "| **discriminator accuracy** | 0.5 |" in (tmp_path / "report.md").read_text()


def test_twin_eval_writes_the_report_and_its_page_opens_with_the_comparison_table(signature_data):
    settings, store, result = signature_data
    env = {
        "TWIN_DATA_DIR": str(settings.data_dir),
        "TWIN_BASE_MODEL": settings.base_model,
        "TWIN_ENGINE": "transformers",
        "COLUMNS": "200",
    }
    with one_torch_thread():
        run = CliRunner().invoke(app, ["eval"], env=env)
    assert run.exit_code == 0, run.output
    folder = settings.data_dir / "adapters" / "0001" / "report"
    assert f"report: {folder / 'report.md'}" in run.stdout and "adapter 1: eval loss" in run.stdout
    assert re.search(r"^replies current/alice: (\d+)/\1 done in \d+", run.stderr, re.MULTILINE), run.stderr
    assert re.search(r"^replies base/bob: 1/\d+, eta \d+", run.stderr, re.MULTILINE), run.stderr
    lines = (folder / "report.md").read_text().splitlines()
    assert lines[0] == "# Evaluation of adapter 0001"
    assert lines[2] == "| persona | eval tokens | base | previous (none) | current (0001) |"
    assert lines[4].startswith("| **all** |") and lines[5].startswith("| alice (owner) |")
    assert {line.split(" |")[0][2:] for line in lines[6:9]} == {"bob", "carol", "dave"}
    data = json.loads((folder / "report.json").read_text())
    assert data["loss"]["measured"] == []  # the round's own figures: the same eval set
    assert data["loss"]["models"]["current"]["loss"] == result.eval_loss
    assert {"summary.png", "lengths.png"} <= {p.name for p in folder.iterdir()}
    stored = store.eval_report(1)
    assert stored["status"] == "ok" and stored["figures"]["eval_loss"] == result.eval_loss
    assert stored["figures"]["style_distance"] < stored["figures"]["base_style_distance"]


def test_every_round_ends_with_a_report_of_base_previous_and_current(tmp_path, tiny_model_dir):
    """Through round_once, as `twin train`, the bot's trainer subprocess and cron start rounds."""
    settings = Settings(
        _env_file=None, data_dir=tmp_path, owner_id=1, base_model=str(tiny_model_dir), reply_max_new_tokens=16
    )
    settings.ensure_data_dir()
    corpus = Corpus(Storage(settings.db_path))
    corpus.add(6, 2)
    events: list[dict] = []
    options = RoundOptions(max_steps=2)
    with one_torch_thread():
        first = round_once(settings, options, events.append, report_after_round)
        corpus.add(3)
        second = round_once(settings, options, events.append, report_after_round)
    assert first["version"] == 1 and second["version"] == 2 and not second["warnings"]
    reports = [e for e in events if e["event"] == "report"]
    assert [r["version"] for r in reports] == [1, 2] and Path(reports[1]["path"]).is_file()
    data = json.loads((tmp_path / "adapters" / "0002" / "report" / "report.json").read_text())
    assert_progress_of(events[events.index(reports[0]) + 1 :], data)  # the second round's report
    assert data["previous_version"] == 1 and data["loss"]["measured"] == []
    models = data["loss"]["models"]
    assert models["previous"]["loss"] == second["active_eval_loss"] and models["base"]["loss"] is not None
    assert {d["model"] for d in data["openers"]} == {"base", "previous", "current"}
    assert corpus.store.eval_report(2)["figures"]["previous_eval_loss"] == second["active_eval_loss"]

    corpus.add(0, 1)  # a new eval session: the stored figures no longer describe this eval set
    with one_torch_thread():
        again = CliRunner().invoke(
            app,
            ["eval", "--adapter", "2", "--out", str(tmp_path / "again")],
            env={
                "TWIN_DATA_DIR": str(tmp_path),
                "TWIN_BASE_MODEL": str(tiny_model_dir),
                "TWIN_ENGINE": "transformers",
                "TWIN_REPLY_MAX_NEW_TOKENS": "16",
            },
        )
    assert again.exit_code == 0, again.output
    assert all(f"losses {m}: 1/1 done in" in again.stderr for m in ("base", "previous", "current")), again.stderr
    measured = json.loads((tmp_path / "again" / "report.json").read_text())["loss"]
    assert measured["measured"] == ["base", "current", "previous"]
    assert all(measured["models"][m]["loss"] is not None for m in ("base", "previous", "current"))


def test_report_progress_is_drawn_as_bars_on_a_terminal_with_log_lines_above_them():
    screen, root = io.StringIO(), logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)  # as the CLI's logging.basicConfig, before the bars start
    root.addHandler(handler)
    try:
        with ProgressDisplay(Console(file=screen, force_terminal=True, width=120, color_system=None)) as progress:
            for done in range(9):
                event = {"stage": "replies", "model": "current", "persona": "alice", "done": done, "of": 8}
                assert show_report_progress(progress, {"event": "report_progress", **event})
                if done == 4:
                    root.warning("halfway")
            assert not show_report_progress(progress, {"event": "step", "step": 1, "of": 10})
    finally:
        root.removeHandler(handler)
    drawn = screen.getvalue()
    assert "replies current/alice" in drawn and "8/8" in drawn and "halfway" in drawn

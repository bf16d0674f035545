"""The leak guard (storage's trained sessions by id and by content hash, over an adapter's lineage), the stored
headline figures, and /status showing them. No model is loaded: a leak stops the report before any."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.settings import Settings
from evaluation.leaks import check_leaks
from storage import SCHEMA_VERSION, Storage
from tests.bot_fakes import OWNER, TwinUnderTest
from tests.train_corpus import Corpus
from trainer.dataset import iter_sessions
from twin.cli import app


def fake_adapter(data: Path, store: Storage, version: int, parent: int | None, trained: list[tuple[str, str]]) -> None:
    """An adapter row and folder (a config only: the guard never loads weights) trained on `trained`."""
    folder = data / "adapters" / f"{version:04d}"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": 8}))
    store.add_adapter(
        {"version": version, "path": str(folder), "base_model": "never-loaded", "parent_version": parent}, trained
    )


@pytest.fixture
def leaky(tmp_path):
    """Adapter 1 trained on train sessions only; 2 continued from it and saw eval session A by id; 3 continued
    from 2 and saw eval session B's conversation under another id (imported twice)."""
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", owner_id=1, base_model="never-loaded")
    settings.ensure_data_dir()
    store = Storage(settings.db_path)
    Corpus(store).add(6, 3)
    train = [s for s in store.sessions(split="train")]
    evals = list(iter_sessions(store, settings, "eval"))
    a, b = evals[0], evals[1]
    fake_adapter(settings.data_dir, store, 1, None, [(s["id"], s["content_hash"]) for s in train])
    fake_adapter(settings.data_dir, store, 2, 1, [(a.id, a.content_hash)])
    fake_adapter(settings.data_dir, store, 3, 2, [("99-1", b.content_hash)])
    return settings, store, evals, a, b


def test_a_clean_adapter_passes_and_a_leak_is_found_by_id_and_by_content_through_the_lineage(leaky):
    _, store, evals, a, b = leaky
    clean = check_leaks(store, 1, evals)
    assert clean.ok and clean.checked == 3 and clean.lineage == [1]
    by_id = check_leaks(store, 2, evals)
    assert not by_id.ok and by_id.by_id == [a.id] and by_id.lineage == [2, 1]
    inherited = check_leaks(store, 3, evals)
    assert inherited.by_id == [a.id] and inherited.by_hash == sorted([a.id, b.id])
    assert "2 of 3 eval sessions" in inherited.message() and "twin train --full" in inherited.message()


def test_twin_eval_of_a_leaky_adapter_fails_loudly_and_records_it(leaky):
    settings, store, _, a, b = leaky
    env = {"TWIN_DATA_DIR": str(settings.data_dir), "TWIN_BASE_MODEL": "never-loaded", "TWIN_OWNER_ID": "1"}
    result = CliRunner().invoke(app, ["eval", "--adapter", "3"], env=env)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "eval data leaked into adapter 3's training data" in result.output
    page = (settings.data_dir / "adapters" / "0003" / "report" / "report.md").read_text()
    assert page.startswith("# Evaluation of adapter 0003\n\n**FAILED: eval data leaked into training.**")
    assert a.id in page and b.id in page
    row = store.eval_report(3)
    assert row["status"] == "leak" and row["figures"]["status"] == "leak"


def test_twin_eval_names_what_exists_when_there_is_nothing_to_evaluate(tmp_path):
    env = {"TWIN_DATA_DIR": str(tmp_path / "d"), "TWIN_BASE_MODEL": "never-loaded"}
    none = CliRunner().invoke(app, ["eval"], env=env)
    assert none.exit_code == 1 and "twin train" in none.output
    missing = CliRunner().invoke(app, ["eval", "--adapter", "7"], env=env)
    assert missing.exit_code == 1 and "twin adapters" in missing.output and "Traceback" not in missing.output


def test_headline_figures_are_stored_per_adapter_and_replaced_by_a_newer_report(tmp_path):
    store = Storage(tmp_path / "twin.db")
    assert store.schema_version == SCHEMA_VERSION and store.eval_report(1) is None
    store.save_eval_report(1, "ok", "/r/1", {"eval_loss": 2.0})
    store.save_eval_report(1, "ok", "/r/1b", {"eval_loss": 1.5})
    assert store.eval_report(1)["figures"] == {"eval_loss": 1.5} and store.eval_report(1)["path"] == "/r/1b"


async def test_status_shows_the_active_adapters_headline_figures_and_sends_the_report_plot(tmp_path):
    twin = TwinUnderTest(tmp_path / "data", base_model="m")  # the adapter below was trained on "m"
    try:
        folder = tmp_path / "data" / "adapters" / "0001"
        (folder / "report").mkdir(parents=True)
        (folder / "report" / "summary.png").write_bytes(b"\x89PNG\r\n")
        twin.store.add_adapter({"version": 1, "path": str(folder), "base_model": "m", "eval_loss": 1.2}, [])
        twin.store.activate_adapter(1)
        figures = {
            "status": "ok",
            "eval_loss": 1.2,
            "eval_ppl": 3.32,
            "base_eval_loss": 2.5,
            "style_distance": 0.12,
            "base_style_distance": 0.45,
            "question_share": 0.1,
            "real_question_share": 0.08,
            "base_question_share": 0.9,
        }
        twin.store.save_eval_report(1, "ok", str(folder / "report"), figures)
        await twin.say(OWNER, "/status")
        text = twin.session.texts(OWNER)[-1]
        assert "Evaluation: eval loss 1.2000 (ppl 3.3; base 2.5000, previous -); style distance 0.12 (base 0.45" in text
        assert "ending in a question 10% (real 8%, base 90%)" in text
        photos = twin.session.calls("sendPhoto", OWNER)
        assert [p.data["caption"] for p in photos] == ["Evaluation: base model / previous / active adapter"]
        twin.store.save_eval_report(1, "leak", str(folder / "report"), {"status": "leak"})
        await twin.say(OWNER, "/status")
        assert "Evaluation: FAILED: eval sessions are in its training data" in twin.session.texts(OWNER)[-1]
    finally:
        twin.close()

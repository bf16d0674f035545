"""The round stays a recipe: building one does no I/O, and its data setup lives in its own module."""

from __future__ import annotations

from pathlib import Path

from core.settings import Settings
from trainer.config import TrainConfig
from trainer.train import TrainingRound

ROOT = Path(__file__).resolve().parents[1]


def test_building_a_round_opens_no_database_and_converts_no_model(tmp_path):
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", base_model=str(tmp_path / "model.gguf"))
    round_ = TrainingRound(settings, TrainConfig())  # a .gguf that is not there: resolved only on use
    round_.cleanup()
    assert not (tmp_path / "data").exists() and not (tmp_path / "models").exists()


def test_the_round_recipe_stays_a_page():
    lines = (ROOT / "trainer" / "train.py").read_text().count("\n")
    assert lines <= 360, f"trainer/train.py has {lines} lines: move a stage into its own module"
    assert "def setup_data" in (ROOT / "trainer" / "round_data.py").read_text()

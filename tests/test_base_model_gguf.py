"""A `.gguf` file as TWIN_BASE_MODEL, end to end, on a tiny random llama GGUF written here (tests/tiny.py):
converted once into TWIN_MODELS_DIR and reused, never left half-written, trained on by `twin train`, and served
with the adapter through the transformers engine and vLLM."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.format import ChatFormat, ChatTurn
from core.settings import Settings
from engine import base_model as bm
from tests.tiny import build_tiny_gguf
from twin.cli import app


@pytest.fixture(autouse=True)
def _fresh_resolution():
    """Each test resolves as a new process would (the in-process cache would hide a second conversion)."""
    bm._resolve.cache_clear()
    yield
    bm._resolve.cache_clear()


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    """A random 2-layer llama with the tiny ChatML tokenizer, as llama.cpp would ship it: one .gguf, no config."""
    return build_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.F32.gguf")


def gguf_settings(monkeypatch, gguf: Path, models_dir: Path) -> Settings:
    """Settings read from the environment, as `twin` builds them."""
    monkeypatch.setenv("TWIN_BASE_MODEL", str(gguf))
    monkeypatch.setenv("TWIN_MODELS_DIR", str(models_dir))
    return Settings()


def test_a_gguf_path_converts_into_a_loadable_folder_in_the_models_dir(tiny_gguf, tmp_path, monkeypatch):
    import gguf
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    settings = gguf_settings(monkeypatch, tiny_gguf, tmp_path / "models")
    folder = Path(bm.base_model_path(settings))
    assert folder == tmp_path / "models" / Settings.gguf_folder_name(tiny_gguf)
    assert str(folder) == settings.base_model_name  # what adapters will record
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", bm.DONE_MARKER} <= names
    assert [p.name for p in folder.parent.iterdir() if p.suffix != ".lock"] == [folder.name]  # no temporary folder left

    config = AutoConfig.from_pretrained(folder)
    assert config.model_type == "llama" and config.num_hidden_layers == 2 and config.tie_word_embeddings
    assert getattr(config, "quantization_config", None) is None  # a plain folder: no loader looks for the GGUF
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    stored = {t.name: t for t in gguf.GGUFReader(tiny_gguf).tensors}
    assert torch.equal(model.model.embed_tokens.weight, torch.from_numpy(stored["token_embd.weight"].data.copy()))

    tokenizer = AutoTokenizer.from_pretrained(folder)
    fmt = ChatFormat(tokenizer)
    assert fmt.style == "chatml" and fmt.eot_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids = fmt.render([ChatTurn("bob", ("are you coming?",))]).ids
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>") and ids[-1] == fmt.eot_id
    assert tokenizer.decode(ids) == "<|im_start|>bob\nare you coming?<|im_end|>"


def test_a_second_resolution_reuses_the_converted_folder(tiny_gguf, tmp_path, monkeypatch):
    settings = gguf_settings(monkeypatch, tiny_gguf, tmp_path / "models")
    folder = Path(bm.base_model_path(settings))
    weights = (folder / "model.safetensors").stat()

    def convert_again(*_):
        raise AssertionError("converted a second time")

    monkeypatch.setattr(bm, "_write_converted", convert_again)
    bm._resolve.cache_clear()  # a new process
    assert bm.base_model_path(gguf_settings(monkeypatch, tiny_gguf, tmp_path / "models")) == str(folder)
    again = (folder / "model.safetensors").stat()
    assert (again.st_ino, again.st_mtime_ns) == (weights.st_ino, weights.st_mtime_ns)


def test_a_conversion_that_fails_midway_leaves_nothing_and_the_next_one_converts(tiny_gguf, tmp_path, monkeypatch):
    settings = gguf_settings(monkeypatch, tiny_gguf, tmp_path / "models")
    real = bm._write_converted

    def crash_after_config(source: Path, out: Path) -> None:
        out.mkdir(parents=True)
        (out / "config.json").write_text('{"model_type": "llama"}')
        (out / "model.safetensors").write_bytes(b"\0" * 64)
        raise OSError("disk full")

    monkeypatch.setattr(bm, "_write_converted", crash_after_config)
    with pytest.raises(OSError, match="disk full"):
        bm.base_model_path(settings)
    assert [
        p for p in (tmp_path / "models").iterdir() if p.suffix != ".lock"
    ] == []  # neither the folder nor its temporary

    monkeypatch.setattr(bm, "_write_converted", real)
    bm._resolve.cache_clear()
    folder = Path(bm.base_model_path(settings))
    assert bm.is_converted(folder) and (folder / "model.safetensors").stat().st_size > 1e5
    assert [p.name for p in (tmp_path / "models").iterdir() if p.suffix != ".lock"] == [folder.name]


# -- end to end: import, train, serve -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_on_gguf(tiny_gguf, tmp_path_factory) -> dict:
    """`twin import` a small export, then `twin train --max-steps 2` with TWIN_BASE_MODEL=the .gguf."""
    from tests.chitchat import chitchat_export

    root = tmp_path_factory.mktemp("gguf-e2e")
    export = chitchat_export(root / "result.json", partners=3, conversations=30)
    env = {
        "TWIN_DATA_DIR": str(root / "data"),
        "TWIN_BASE_MODEL": str(tiny_gguf),
        "TWIN_MODELS_DIR": str(root / "models"),
        "COLUMNS": "200",
    }
    with pytest.MonkeyPatch.context() as mp:  # module scope: the same isolation conftest gives each test
        mp.setitem(Settings.model_config, "env_file", None)
        for key in [k for k in os.environ if k.startswith("TWIN_")]:
            mp.delenv(key)
        bm._resolve.cache_clear()
        cli = CliRunner()
        imported = cli.invoke(app, ["import", str(export.path)], env=env)
        assert imported.exit_code == 0, imported.output
        trained = cli.invoke(app, ["train", "--max-steps", "2"], env=env)
        assert trained.exit_code == 0, trained.output
    return {"root": root, "export": export, "env": env, "output": trained.output}


def e2e_settings(trained: dict, **overrides) -> Settings:
    root = trained["root"]
    return Settings(
        _env_file=None,
        data_dir=root / "data",
        base_model=trained["env"]["TWIN_BASE_MODEL"],
        models_dir=root / "models",
        reply_temperature=0,
        vllm_dtype="float32",
        vllm_max_model_len=512,
        **overrides,
    )


def first_adapter(settings: Settings):
    from engine.base import AdapterRef
    from storage import Storage

    row = Storage(settings.db_path).adapter(1)
    assert row is not None
    return row, AdapterRef.from_row(row, settings.data_dir)


@pytest.mark.slow
def test_twin_train_on_a_gguf_records_the_converted_folder_as_base_model(trained_on_gguf):
    settings = e2e_settings(trained_on_gguf)
    converted = settings.converted_models_dir / Settings.gguf_folder_name(Path(settings.base_model))
    assert bm.is_converted(converted)
    row, ref = first_adapter(settings)
    assert row["base_model"] == str(converted) == settings.base_model_name
    assert json.loads((ref.path / "meta.json").read_text())["base_model"] == str(converted)
    peft = json.loads((ref.path / "adapter_config.json").read_text())
    assert peft["base_model_name_or_path"] == str(converted)


async def reply_with_adapter(settings: Settings, trained: dict) -> list[str]:
    """Start the engine settings ask for, check that it takes adapter 1, and reply to a chat with it."""
    from engine.build import build_engine, stored_adapters
    from storage import Storage

    _, ref = first_adapter(settings)
    engine = build_engine(settings, stored_adapters(Storage(settings.db_path), settings))
    await engine.start()
    try:
        assert engine.base_model == settings.base_model_name
        assert engine.format.style == "chatml"
        assert await engine.load(ref), engine.rejected  # the adapter changes the model's output: it is applied
        partner = next(iter(trained["export"].partners)).lower()
        turns = [ChatTurn(partner, ("hey how are you?", "what are you up to tonight?"))]
        reply = await engine.reply(turns, trained["export"].owner_slug, partner, ref)
        gen = await engine.generate(engine.prompt_ids(turns, trained["export"].owner_slug), ref, engine.sampling)
    finally:
        await engine.close()
    assert isinstance(reply, list) and all(isinstance(m, str) and m for m in reply)
    assert gen.token_ids  # the model generated with the adapter (a random model may still say nothing useful)
    return reply


@pytest.mark.slow
async def test_the_transformers_engine_replies_with_the_adapter_on_the_converted_gguf(trained_on_gguf):
    await reply_with_adapter(e2e_settings(trained_on_gguf, engine="transformers"), trained_on_gguf)


@pytest.mark.slow
async def test_vllm_replies_with_the_adapter_on_the_converted_gguf(trained_on_gguf, monkeypatch):
    pytest.importorskip("vllm")
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    await reply_with_adapter(e2e_settings(trained_on_gguf, engine="vllm"), trained_on_gguf)


# -- the conversion runs once, safely --------------------------------------------------------------------------


def test_two_processes_converting_at_once_convert_once(tiny_gguf, tmp_path, monkeypatch):
    """Two processes (as torchrun ranks would) resolve the same GGUF at once: one converts, the other reuses."""
    import subprocess
    import sys
    import textwrap

    models = tmp_path / "models"
    script = textwrap.dedent(
        f"""
        import logging, sys
        logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")
        from core.settings import Settings
        from engine.base_model import base_model_path
        print(base_model_path(Settings(_env_file=None, base_model={str(tiny_gguf)!r}, models_dir={str(models)!r})))
        """
    )
    root = Path(__file__).parent.parent
    procs = [subprocess.Popen([sys.executable, "-c", script], cwd=root, stdout=subprocess.PIPE, text=True)]
    procs.append(subprocess.Popen([sys.executable, "-c", script], cwd=root, stdout=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sum(o.count("converting ") for o in outs) == 1, outs


def test_too_little_free_space_is_refused_up_front_naming_the_folder(tiny_gguf, tmp_path, monkeypatch):
    import shutil

    settings = gguf_settings(monkeypatch, tiny_gguf, tmp_path / "models")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**12, 10**12 - 1024, 1024))
    with pytest.raises(bm.BaseModelError) as error:
        bm.base_model_path(settings)
    message = str(error.value)
    assert str(tmp_path / "models") in message and "GiB" in message and "TWIN_MODELS_DIR" in message
    assert not any(p.is_dir() for p in (tmp_path / "models").iterdir())  # nothing half-written


def test_a_gguf_of_an_architecture_transformers_cannot_convert_says_so_in_one_line(tmp_path, monkeypatch):
    import gguf
    import numpy as np

    path = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(path, arch="rwkv7")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    env = {"TWIN_DATA_DIR": str(tmp_path / "data"), "TWIN_BASE_MODEL": str(path), "TWIN_OWNER_ID": "1"}
    result = CliRunner().invoke(app, ["train"], env=env | {"COLUMNS": "300"})
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "odd.gguf" in errors[0] and "Traceback" not in result.output, result.output


def test_stale_conversions_removed_by_two_processes_at_once_crash_neither(tmp_path):
    import threading

    folder = tmp_path / "models" / "m"
    for n in range(40):
        stale = folder.with_name(f"m.tmp-{999_999_000 + n}")  # pids of no living process
        (stale / "a" / "b").mkdir(parents=True)
        for k in range(20):
            (stale / "a" / "b" / f"{k}.bin").write_bytes(b"x")
    errors: list[BaseException] = []

    def clean() -> None:
        try:
            bm.remove_stale_conversions(folder)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=clean) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and [p for p in (tmp_path / "models").iterdir() if p.suffix != ".lock"] == []

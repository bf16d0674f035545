"""Does an adapter fit the base model? Checked from file headers before any engine loads it.

vLLM takes a whole engine down (EngineDeadError, every chat stops) when a LoRA request names modules the
model does not have or has tensors of the wrong size, so an adapter trained for another base model must be
refused before it reaches vLLM. Only safetensors headers are read: no weights, no model.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

LORA_PREFIX = "base_model.model."


@lru_cache(maxsize=4)
def base_weight_shapes(base_model: str) -> dict[str, tuple[int, ...]] | None:
    """Weight name → shape of a base model in a local folder or the Hugging Face cache (None: not found)."""
    from safetensors import safe_open

    path = Path(base_model)
    if not path.is_dir():
        try:
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(base_model, local_files_only=True))
        except Exception:  # not downloaded here (a remote server's model): nothing to check against
            return None
    shapes: dict[str, tuple[int, ...]] = {}
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                shapes[name] = tuple(f.get_slice(name).get_shape())
    return shapes or None


def lora_shapes(adapter_dir: Path) -> dict[str, tuple[int, ...]] | None:
    """Adapter tensor name → shape, from adapter_model.safetensors (None: no such file)."""
    from safetensors import safe_open

    file = Path(adapter_dir) / "adapter_model.safetensors"
    if not file.exists():
        return None
    with safe_open(str(file), framework="pt") as f:
        return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118


def adapter_mismatch(adapter_dir: Path, base_model: str | None) -> str | None:
    """Why the adapter does not fit `base_model` (modules it lacks, sizes that differ), or None."""
    base = base_weight_shapes(base_model) if base_model else None
    lora = lora_shapes(adapter_dir)
    if base is None or lora is None:
        return None
    # Modules by their path from "layers." on, so a wrapper's prefix (language_model.…) does not matter;
    # a module counts as present with any parameter (quantized ones have qweight/scales, not weight).
    modules = {_key(name.rpartition(".")[0]) for name in base}
    weights = {_key(name.removesuffix(".weight")): shape for name, shape in base.items() if name.endswith(".weight")}
    missing, wrong_size = set(), set()
    for name, shape in lora.items():
        module, _, kind = name.removeprefix(LORA_PREFIX).rpartition(".lora_")
        if kind not in ("A.weight", "B.weight"):
            why = "vLLM serves only the LoRA A/B matrices of linear layers"
            return f"it trains {name!r} ({why}): retrain it without modules_to_save"
        key = _key(module)
        if key not in modules:
            missing.add(module)
            continue
        weight = weights.get(key)  # (out, in); packed quantized weights have other shapes: not compared
        if weight and len(weight) == 2 and min(weight) > 1:
            side = 1 if kind == "A.weight" else 0  # A is (rank, in), B is (out, rank)
            if shape[side] != weight[side]:
                wrong_size.add(module)
    if missing:
        return f"its modules are not in the base model {base_model} (e.g. {min(missing)}): retrain it for this model"
    if wrong_size:
        return f"its sizes do not match the base model {base_model} (e.g. {min(wrong_size)}): retrain it for this model"
    return None


def _key(module: str) -> str:
    at = module.find("layers.")
    return module[at:] if at >= 0 else module

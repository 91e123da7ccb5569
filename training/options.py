"""The options of `python -m training.train`: the flags, and the size presets per device that
fill in the model and optimiser flags left unset."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from model.paths import default_data_dir
from model.registry import TINY_STARCODER_DIR

# Defaults per device: what trains best in ~2 h on a 2-core CPU, and a larger model for a GPU
# that still fits the 30 MB budget when saved in fp16.
PRESETS = {
    "cpu": dict(n_embd=192, n_layer=4, n_head=4, n_positions=512, batch_size=16, lr=2.5e-3),
    "gpu": dict(n_embd=384, n_layer=6, n_head=6, n_positions=1024, batch_size=64, lr=1.5e-3),
}


def build_parser(description: str) -> argparse.ArgumentParser:
    """Every flag of `python -m training.train`; `description` is that module's doc."""
    p = argparse.ArgumentParser(
        prog="python -m training.train",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    io = p.add_argument_group("files")
    io.add_argument(
        "--work-dir",
        type=Path,
        default=default_data_dir() / "train_run",
        help="tokenizer, manifest, resumable state and best checkpoint (default: %(default)s)",
    )
    io.add_argument(
        "--export-dir",
        type=Path,
        default=TINY_STARCODER_DIR,
        help="where --export copies the best checkpoint (default: the repo's)",
    )
    io.add_argument(
        "--export",
        action="store_true",
        help="copy <work-dir>/best into --export-dir and exit (no training)",
    )
    io.add_argument(
        "--fresh",
        action="store_true",
        help="ignore an existing state.pt and start over (tokenizer is kept)",
    )
    data = p.add_argument_group("corpus")
    data.add_argument(
        "--packages",
        nargs="*",
        default=[],
        help="installed distributions to add to the stdlib corpus; only those "
        "whose metadata declares MIT/BSD/Apache-2.0 are used",
    )
    data.add_argument(
        "--heldout-percent",
        type=float,
        default=3.0,
        help="share of files held out, split by file hash (default: %(default)s)",
    )
    data.add_argument(
        "--max-docs",
        type=int,
        default=0,
        help="use only the first N training files (0 = all; for smoke tests)",
    )
    data.add_argument(
        "--vocab-size",
        type=int,
        default=8192,
        help="BPE vocabulary incl. the 19 special tokens (default: %(default)s)",
    )
    data.add_argument(
        "--fim-rate",
        type=float,
        default=0.5,
        help="share of documents turned into FIM examples (default: %(default)s)",
    )
    data.add_argument(
        "--fim-spm-rate",
        type=float,
        default=0.5,
        help="share of FIM examples in SPM order (default: %(default)s)",
    )
    data.add_argument(
        "--fim-min-piece-chars",
        type=int,
        default=64,
        help="files are cut into pieces (FIM documents) of a random length between this and "
        "3 x context characters; 0 = always 3 x context (default: %(default)s)",
    )
    m = p.add_argument_group("model (default: the preset of the device)")
    m.add_argument(
        "--preset",
        choices=["auto", *PRESETS],
        default="auto",
        help="size defaults: 'auto' picks 'gpu' on CUDA, else 'cpu'",
    )
    m.add_argument("--n-embd", type=int, help="width")
    m.add_argument("--n-layer", type=int, help="transformer blocks")
    m.add_argument("--n-head", type=int, help="query heads (one shared key/value head: MQA)")
    m.add_argument("--n-positions", type=int, help="context length in tokens")
    t = p.add_argument_group("optimisation")
    t.add_argument("--batch-size", type=int, help="windows per step")
    t.add_argument("--lr", type=float, help="peak AdamW learning rate")
    t.add_argument(
        "--min-lr-ratio",
        type=float,
        default=0.1,
        help="final lr as a share of the peak (default: %(default)s)",
    )
    t.add_argument("--warmup-steps", type=int, default=100, help="linear warmup (default: 100)")
    t.add_argument(
        "--max-steps",
        type=int,
        default=100_000,
        help="stop (end of cosine) after this many steps (default: %(default)s)",
    )
    t.add_argument(
        "--time-budget",
        type=float,
        default=0.0,
        help="minutes of training; if set, the cosine schedule follows elapsed "
        "time and training stops when it runs out (resumes count the time so far)",
    )
    t.add_argument("--weight-decay", type=float, default=0.1, help="AdamW (default: 0.1)")
    t.add_argument("--grad-clip", type=float, default=1.0, help="max grad norm (default: 1.0)")
    t.add_argument("--seed", type=int, default=1234, help="seed of everything (default: 1234)")
    r = p.add_argument_group("run")
    r.add_argument("--device", default="auto", help="auto | cpu | cuda | mps (default: auto)")
    r.add_argument(
        "--threads", type=int, default=0, help="CPU threads for torch (0 = torch's default)"
    )
    r.add_argument("--eval-every", type=int, default=100, help="steps between held-out evals")
    r.add_argument(
        "--eval-windows",
        type=int,
        default=48,
        help="held-out windows per eval (default: %(default)s)",
    )
    r.add_argument("--save-every", type=int, default=50, help="steps between state.pt saves")
    r.add_argument("--no-progress", action="store_true", help="log lines instead of a bar")
    return p


def resolve_device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def apply_preset(args: argparse.Namespace, device: torch.device) -> None:
    preset = args.preset if args.preset != "auto" else ("gpu" if device.type == "cuda" else "cpu")
    for key, value in PRESETS[preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.preset = preset

"""Checkpoints of a training run: the complete Hugging Face folder written atomically (`best/`),
its learning curve, and the export of the best one into the repo."""

from __future__ import annotations

import argparse
import csv
import logging
import os
import shutil
from pathlib import Path

import torch
from transformers import GenerationConfig

from corpus import MANIFEST_NAME

logger = logging.getLogger(__name__)

CURVE_NAME = "learning_curve.csv"


def generation_config() -> GenerationConfig:
    return GenerationConfig(
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        max_new_tokens=256,
        do_sample=True,
        temperature=0.2,
        top_p=0.9,
    )


def save_hf(model, tokenizer, folder: Path, work_dir: Path, dtype: torch.dtype | None) -> None:
    """Write a complete checkpoint into `folder` through a temp dir, file by file atomically."""
    tmp = folder.parent / f".{folder.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    to_save = model
    if dtype is not None and dtype != torch.float32:
        import copy

        to_save = copy.deepcopy(model).to(dtype)
    to_save.save_pretrained(str(tmp), safe_serialization=True)
    generation_config().save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    for name in (MANIFEST_NAME, CURVE_NAME):
        if (work_dir / name).exists():
            shutil.copy2(work_dir / name, tmp / name)
    folder.mkdir(parents=True, exist_ok=True)
    # Weights last: a reader never sees new weights with an old config.
    names = sorted(os.listdir(tmp), key=lambda n: n == "model.safetensors")
    for name in names:
        os.replace(tmp / name, folder / name)
    tmp.rmdir()


def export_best(args: argparse.Namespace) -> None:
    best = args.work_dir / "best"
    if not (best / "model.safetensors").exists():
        raise SystemExit(f"--export: no checkpoint in {best}; train first")
    args.export_dir.mkdir(parents=True, exist_ok=True)
    tmp = args.export_dir.parent / f".{args.export_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(best, tmp)
    if (args.work_dir / CURVE_NAME).exists():
        shutil.copy2(args.work_dir / CURVE_NAME, tmp / CURVE_NAME)
    names = sorted(os.listdir(tmp), key=lambda n: n == "model.safetensors")
    for name in names:
        os.replace(tmp / name, args.export_dir / name)
    tmp.rmdir()
    logger.info("exported %s -> %s", best, args.export_dir)


def append_curve(work_dir: Path, row: dict) -> None:
    path = work_dir / CURVE_NAME
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)

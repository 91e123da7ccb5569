"""Train tiny-starcoder: StarCoder's architecture, tokens and FIM objective, at CPU size.

    python -m training.train                      # corpus + tokenizer + training, resumable
    python -m training.train --time-budget 120    # cosine schedule fitted to 120 minutes
    python -m training.train --export             # copy the best checkpoint into the repo

The work dir (--work-dir, default DATA_DIR/train_run) holds the tokenizer, corpus manifest, `state.pt` (latest, for
resuming), `best/` (best held-out loss, in the final Hugging Face format) and
`learning_curve.csv`. Running the same command again resumes from `state.pt`.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from transformers import (
    GenerationConfig,
    GPTBigCodeConfig,
    GPTBigCodeForCausalLM,
    PreTrainedTokenizerFast,
)

from app.settings import Settings
from corpus import (
    MANIFEST_NAME,
    Document,
    build_corpus,
    iter_manifest_documents,
    write_manifest,
)
from model.registry import TINY_STARCODER_DIR
from training.data import StreamBuilder, token_byte_lengths, windows
from training.tokenizer import train_tokenizer

logger = logging.getLogger(__name__)

CURVE_NAME = "learning_curve.csv"
# Defaults per device: what trains best in ~2 h on a 2-core CPU, and a larger model for a GPU
# that still fits the 30 MB budget when saved in fp16.
PRESETS = {
    "cpu": dict(n_embd=192, n_layer=4, n_head=4, n_positions=512, batch_size=16, lr=2.5e-3),
    "gpu": dict(n_embd=384, n_layer=6, n_head=6, n_positions=1024, batch_size=64, lr=1.5e-3),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m training.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    io = p.add_argument_group("files")
    io.add_argument(
        "--work-dir",
        type=Path,
        default=Path(Settings.load([]).data_dir) / "train_run",
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
    args = p.parse_args(argv)
    return args


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


def make_config(args: argparse.Namespace, vocab_size: int) -> GPTBigCodeConfig:
    return GPTBigCodeConfig(
        vocab_size=vocab_size,
        n_positions=args.n_positions,
        n_embd=args.n_embd,
        n_layer=args.n_layer,
        n_head=args.n_head,
        n_inner=4 * args.n_embd,
        activation_function="gelu_pytorch_tanh",
        multi_query=True,
        # Dropout 0: a tiny model is not overfitting in 2 hours, and any dropout forces the
        # unfused attention path (2.5-3x slower on CPU).
        attn_pdrop=0.0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        tie_word_embeddings=True,
    )


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


@dataclass
class Corpus:
    train: list[Document]
    heldout: list[Document]


def prepare_corpus(args: argparse.Namespace) -> tuple[Corpus, PreTrainedTokenizerFast]:
    """Build (or reload from the work dir) the corpus manifest and the tokenizer."""
    work = args.work_dir
    manifest = work / MANIFEST_NAME
    tok_dir = work / "tokenizer"
    if manifest.exists():
        docs = list(iter_manifest_documents(manifest))
    else:
        repos, docs = build_corpus(args.packages, args.heldout_percent)
        write_manifest(manifest, repos, docs)
    train = [d for d in docs if d.split == "train"]
    heldout = [d for d in docs if d.split == "heldout"]
    if args.max_docs:
        train = train[: args.max_docs]
        heldout = heldout[: max(1, args.max_docs // 10)]
    if (tok_dir / "tokenizer.json").exists():
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(tok_dir))
    else:
        t0 = time.time()
        tokenizer = train_tokenizer((d.text for d in train), args.vocab_size, args.n_positions)
        tokenizer.save_pretrained(str(tok_dir))
        logger.info("tokenizer trained in %.0f s", time.time() - t0)
    logger.info("corpus: %d train files, %d held-out files", len(train), len(heldout))
    return Corpus(train, heldout), tokenizer


def lr_at(args: argparse.Namespace, step: int, elapsed: float) -> tuple[float, float]:
    """(learning rate, progress in [0, 1]): linear warmup, then cosine to min_lr_ratio."""
    progress = step / args.max_steps
    if args.time_budget:
        progress = max(progress, elapsed / (args.time_budget * 60))
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps, progress
    cos = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * cos), progress


@torch.no_grad()
def evaluate(model, eval_windows: torch.Tensor, byte_len: torch.Tensor, device) -> dict:
    """Held-out loss in nats/token and bits per byte (plain text, no FIM)."""
    model.eval()
    total_nats, total_tokens, total_bytes = 0.0, 0, 0
    for batch in eval_windows.split(8):
        batch = batch.to(device)
        x, y = batch[:, :-1], batch[:, 1:]
        logits = model(input_ids=x).logits.float()
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum")
        total_nats += nll.item()
        total_tokens += y.numel()
        total_bytes += int(byte_len[y.cpu()].sum())
    model.train()
    return {
        "eval_loss": total_nats / total_tokens,
        "eval_bpb": total_nats / max(total_bytes, 1) / math.log(2),
    }


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


def train(args: argparse.Namespace) -> dict:
    """Run (or resume) training; returns the final stats. Used by the CLI and the tests."""
    device = resolve_device(args.device)
    apply_preset(args, device)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    data, tokenizer = prepare_corpus(args)
    raw: Tokenizer = tokenizer.backend_tokenizer
    byte_len = torch.from_numpy(token_byte_lengths(raw))
    piece_chars = int(args.n_positions * 3)  # ~3.3 bytes/token: a piece fits one window
    builder = StreamBuilder(
        raw, piece_chars, args.fim_rate, args.fim_spm_rate, args.fim_min_piece_chars
    )
    plain = StreamBuilder(raw, piece_chars, fim_rate=0.0)
    eval_stream = plain.build(data.heldout, seed=0, shuffle=False)
    eval_w = torch.from_numpy(windows(eval_stream, args.n_positions)[: args.eval_windows]).long()

    config = make_config(args, len(tokenizer))
    model = GPTBigCodeForCausalLM(config).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("model: %.2fM params, %s on %s", n_params / 1e6, config.to_diff_dict(), device)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": args.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=args.lr,
        betas=(0.9, 0.95),
        fused=device.type == "cuda",
    )
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()  # never on CPU: 12x slower

    state_path = args.work_dir / "state.pt"
    st = {"step": 0, "epoch": 0, "pos": 0, "tokens": 0, "elapsed": 0.0, "best": float("inf")}
    if state_path.exists() and not args.fresh:
        saved = torch.load(state_path, map_location=device, weights_only=False)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        st = saved["st"]
        logger.info("resumed from %s at step %d", state_path, st["step"])

    def save_state() -> None:
        tmp = state_path.with_suffix(".tmp")
        torch.save(
            {
                "model": model.state_dict(),
                "opt": opt.state_dict(),
                "st": st,
                "args": {k: str(v) for k, v in vars(args).items()},
            },
            tmp,
        )
        os.replace(tmp, state_path)

    def epoch_windows(epoch: int) -> np.ndarray:
        stream = builder.build(data.train, seed=args.seed * 1000 + epoch)
        w = windows(stream, args.n_positions)
        return w[np.random.default_rng(args.seed + epoch).permutation(len(w))]

    wins = epoch_windows(st["epoch"])
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(initial=st["step"], total=args.max_steps, dynamic_ncols=True, mininterval=5)
    stats: dict = {}
    t_last, tok_last = time.time(), 0
    model.train()
    while True:
        lr, progress = lr_at(args, st["step"], st["elapsed"])
        if progress >= 1.0 or st["step"] >= args.max_steps:
            break
        if st["pos"] + args.batch_size > len(wins):
            st["epoch"] += 1
            st["pos"] = 0
            wins = epoch_windows(st["epoch"])
        t0 = time.time()
        batch = torch.from_numpy(wins[st["pos"] : st["pos"] + args.batch_size]).long().to(device)
        st["pos"] += args.batch_size
        for group in opt.param_groups:
            group["lr"] = lr
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            logits = model(input_ids=batch[:, :-1]).logits
        loss = F.cross_entropy(
            logits.float().reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        st["step"] += 1
        st["tokens"] += batch[:, 1:].numel()
        tok_last += batch[:, 1:].numel()
        st["elapsed"] += time.time() - t0
        now = time.time()
        tps = tok_last / max(now - t_last, 1e-9)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{tps:.0f}", lr=f"{lr:.2e}")
        elif st["step"] % 10 == 0:
            logger.info("step %d loss %.3f tok/s %.0f lr %.2e", st["step"], loss.item(), tps, lr)
        if st["step"] % 20 == 0:
            t_last, tok_last = now, 0
        last = st["step"] >= args.max_steps or lr_at(args, st["step"], st["elapsed"])[1] >= 1
        if st["step"] % args.eval_every == 0 or last:
            stats = evaluate(model, eval_w, byte_len, device)
            stats.update(
                step=st["step"],
                tokens=st["tokens"],
                elapsed_s=round(st["elapsed"], 1),
                train_loss=round(loss.item(), 4),
                lr=lr,
                tokens_per_s=round(tps),
            )
            stats["eval_loss"] = round(stats["eval_loss"], 4)
            stats["eval_bpb"] = round(stats["eval_bpb"], 4)
            append_curve(args.work_dir, stats)
            logger.info("eval %s", json.dumps(stats))
            if stats["eval_loss"] < st["best"]:
                st["best"] = stats["eval_loss"]
                save_hf(
                    model,
                    tokenizer,
                    args.work_dir / "best",
                    args.work_dir,
                    torch.float16 if args.preset == "gpu" else None,
                )
        if st["step"] % args.save_every == 0 or last:
            save_state()
    if bar is not None:
        bar.close()
    save_state()
    stats.setdefault("step", st["step"])
    stats["total_tokens"] = st["tokens"]
    stats["total_elapsed_s"] = round(st["elapsed"], 1)
    stats["n_params"] = n_params
    (args.work_dir / "train_stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    return stats


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    if args.export:
        export_best(args)
        return
    train(args)


if __name__ == "__main__":
    main()


__all__ = ["main", "parse_args", "train"]

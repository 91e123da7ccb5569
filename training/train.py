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
import json
import logging
import math
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from transformers import (
    GPTBigCodeConfig,
    GPTBigCodeForCausalLM,
    PreTrainedTokenizerFast,
)

from corpus import (
    MANIFEST_NAME,
    Document,
    build_corpus,
    iter_manifest_documents,
    write_manifest,
)
from training.checkpoint import append_curve, export_best, save_hf
from training.data import StreamBuilder, token_byte_lengths, windows
from training.options import apply_preset, build_parser, resolve_device
from training.tokenizer import train_tokenizer

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser(__doc__).parse_args(argv)


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

"""Measure tiny-starcoder: held-out bits/byte (beside gzip -9 and xz -9), FIM exact match,
parse rate of function completions, and the training cost, in one run (< 10 min on CPU).

    python -m training.evaluate [--checkpoint DIR] [--files 40] [--fim 100] [--parse 40]

Held-out files come from the checkpoint's corpus manifest (split "heldout": whole files the
model never saw). Results are printed as JSON and written to <checkpoint>/metrics.json, and the
model card (README.md) is rendered from them (training/card.py).
"""

from __future__ import annotations

import argparse
import ast
import csv
import gzip
import json
import logging
import lzma
import math
import random
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from corpus import MANIFEST_NAME, Document, iter_manifest_documents
from model.engines import loading
from model.prompts.families import STARCODER
from model.registry import TINY_STARCODER_DIR
from training.card import learning_curve_svg, render_card, render_results

logger = logging.getLogger(__name__)

EVERYDAY_PROMPTS = {
    "function header": 'def read_json(path):\n    """Read a JSON file and return its content."""\n',
    "import block": "import os\nimport sys\n",
    "class with a docstring": (
        'class Stack:\n    """A last-in, first-out stack of items."""\n\n    def __init__(self):\n'
    ),
}


def load(checkpoint: Path):
    """The checkpoint as the playground's CPU worker loads it (fp32), so we measure what it runs."""
    model, tokenizer, _ = loading.load(str(checkpoint), device="cpu")
    tokenizer.model_max_length = 10**9  # whole files are scored in windows; no length warning
    return model, tokenizer


def heldout_documents(checkpoint: Path, n: int, seed: int = 0) -> list[Document]:
    docs = list(iter_manifest_documents(checkpoint / MANIFEST_NAME, split="heldout"))
    docs.sort(key=lambda d: (d.repo, d.path))
    random.Random(seed).shuffle(docs)
    return docs[:n] if n else docs


@torch.no_grad()
def file_bits(model, tokenizer, text: str) -> float:
    """Total bits the model needs for `text` (+ the closing <|endoftext|>), from a fresh start.

    Windows of the context length with half-context stride: every token is scored once, with at
    least half a window of context after the first window.
    """
    eos = tokenizer.eos_token_id
    ids = [eos, *tokenizer.encode(text, add_special_tokens=False), eos]
    ctx = model.config.n_positions
    total = 0.0
    pos = 1  # next target to score; ids[0] is the given start token
    while pos < len(ids):
        start = 0 if pos == 1 else pos - ctx // 2
        end = min(start + ctx, len(ids))
        x = torch.tensor([ids[start:end]])
        logits = model(input_ids=x).logits[0, :-1].float()
        nll = F.cross_entropy(logits, x[0, 1:], reduction="none")
        total += nll[pos - start - 1 :].sum().item()
        pos = end
    return total / math.log(2)


def compression(docs: list[Document], model, tokenizer) -> dict:
    data = [d.text.encode("utf-8") for d in docs]
    n = sum(len(b) for b in data)
    joined = b"".join(data)

    def bpb(size_bytes: int) -> float:
        return round(8 * size_bytes / n, 4)

    t0 = time.time()
    model_bits = sum(file_bits(model, tokenizer, d.text) for d in docs)
    return {
        "files": len(docs),
        "bytes": n,
        "model_bpb": round(model_bits / n, 4),
        "gzip9_bpb_per_file": bpb(sum(len(gzip.compress(b, 9, mtime=0)) for b in data)),
        "gzip9_bpb_concatenated": bpb(len(gzip.compress(joined, 9, mtime=0))),
        "xz9_bpb_per_file": bpb(sum(len(lzma.compress(b, preset=9)) for b in data)),
        "xz9_bpb_concatenated": bpb(len(lzma.compress(joined, preset=9))),
        "model_seconds": round(time.time() - t0, 1),
    }


@dataclass
class FimExample:
    prefix: str
    middle: str
    suffix: str


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef)
    return [n for n in ast.walk(tree) if isinstance(n, kinds)]


def _parsed(docs: list[Document]) -> Iterator[tuple[ast.Module, list[str]]]:
    """Each document that parses: its syntax tree and its lines (line ends kept)."""
    for doc in docs:
        try:
            tree = ast.parse(doc.text)
        except SyntaxError:
            continue
        yield tree, doc.text.splitlines(keepends=True)


def fim_examples(docs: list[Document], n: int, seed: int = 0, max_chars: int = 900) -> list:
    """Mask one whole line in the middle of a held-out function (prefix/suffix trimmed so the
    prompt fits the context)."""
    rng = random.Random(seed)
    out: list[FimExample] = []
    for tree, lines in _parsed(docs):
        candidates = []
        for fn in _functions(tree):
            body_start = fn.body[0].lineno  # 1-based
            end = fn.end_lineno or body_start
            for ln in range(body_start + 1, end):  # not the first nor the last body line
                line = lines[ln - 1]
                if len(line.strip()) >= 8 and line.endswith("\n"):
                    candidates.append(ln)
        if not candidates:
            continue
        for ln in rng.sample(candidates, min(3, len(candidates))):
            prefix = "".join(lines[: ln - 1])[-max_chars:]
            suffix = "".join(lines[ln:])[: max_chars // 2]
            # Whole lines only at the cut ends.
            prefix = prefix[prefix.find("\n") + 1 :] if len(prefix) == max_chars else prefix
            suffix = suffix[: suffix.rfind("\n") + 1]
            out.append(FimExample(prefix, lines[ln - 1], suffix))
    rng.shuffle(out)
    return out[:n]


@torch.no_grad()
def greedy(model, tokenizer, prompt: str, max_new_tokens: int) -> tuple[str, bool]:
    """Greedy continuation (special tokens kept out of the text) and whether it ended at EOS."""
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    ctx = model.config.n_positions
    max_new_tokens = min(max_new_tokens, ctx // 2)
    ids = ids[:, -(ctx - max_new_tokens) :]  # keep the end of the prompt: the cursor
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )[0, ids.shape[1] :]
    ended = bool(len(out) and out[-1].item() == tokenizer.eos_token_id)
    return tokenizer.decode(out, skip_special_tokens=True), ended


def fim_exact_match(model, tokenizer, examples: list[FimExample], max_new_tokens: int = 48):
    exact = ended = 0
    for ex in examples:
        middle, eos = greedy(
            model, tokenizer, STARCODER.format(ex.prefix, ex.suffix), max_new_tokens
        )
        exact += middle == ex.middle
        ended += eos
    n = max(len(examples), 1)
    return {
        "examples": len(examples),
        "exact_match": round(exact / n, 4),
        "ended_at_eos": round(ended / n, 4),
    }


def header_prompts(docs: list[Document], n: int, seed: int = 0) -> list[str]:
    """Function headers with their docstrings, dedented to column 0."""
    rng = random.Random(seed)
    out = []
    for tree, lines in _parsed(docs):
        for fn in _functions(tree):
            first = fn.body[0]
            if (
                not (
                    isinstance(first, ast.Expr)
                    and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)
                )
                or len(fn.body) < 2
            ):
                continue
            start = min([fn.lineno, *(d.lineno for d in fn.decorator_list)])
            header = "".join(lines[start - 1 : first.end_lineno])
            out.append(textwrap.dedent(header))
    rng.shuffle(out)
    return out[:n]


def cut_at_function_end(completion: str) -> str:
    """Keep the completion up to the first non-blank line back at column 0 (the function's end);
    an unfinished last line is dropped."""
    kept = []
    for line in completion.splitlines(keepends=True):
        if line.strip() and not line[0].isspace():
            break
        kept.append(line)
    if kept and not kept[-1].endswith("\n"):
        kept.pop()
    return "".join(kept)


def parse_rate(model, tokenizer, prompts: list[str], max_new_tokens: int = 160) -> dict:
    ok = empty = 0
    for prompt in prompts:
        completion, _ = greedy(model, tokenizer, prompt, max_new_tokens)
        body = cut_at_function_end(completion)
        if not body.strip():  # the docstring alone parses; an empty body is not a success
            empty += 1
            continue
        try:
            ast.parse(prompt + body)
            ok += 1
        except SyntaxError:
            pass
    n = max(len(prompts), 1)
    return {
        "examples": len(prompts),
        "parse_rate": round(ok / n, 4),
        "empty_body": round(empty / n, 4),
    }


def samples(model, tokenizer, max_new_tokens: int = 96) -> dict:
    return {
        name: greedy(model, tokenizer, p, max_new_tokens)[0] for name, p in EVERYDAY_PROMPTS.items()
    }


def training_cost(checkpoint: Path) -> dict:
    curve = checkpoint / "learning_curve.csv"
    if not curve.exists():
        return {}
    rows = list(csv.DictReader(curve.open()))
    best = min(rows, key=lambda r: float(r["eval_loss"]))
    last = rows[-1]
    return {
        "tokens_seen": int(best["tokens"]),
        "train_seconds": float(best["elapsed_s"]),
        "tokens_per_s": round(int(best["tokens"]) / max(float(best["elapsed_s"]), 1e-9)),
        "best_step": int(best["step"]),
        "best_eval_loss_nats_per_token": float(best["eval_loss"]),
        "run_tokens_total": int(last["tokens"]),
        "run_seconds_total": float(last["elapsed_s"]),
    }


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    p = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=TINY_STARCODER_DIR,
        help="checkpoint folder (default: the repo's tiny-starcoder)",
    )
    p.add_argument("--files", type=int, default=40, help="held-out files for bits/byte")
    p.add_argument("--fim", type=int, default=100, help="FIM exact-match examples")
    p.add_argument("--parse", type=int, default=40, help="function headers for the parse rate")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument(
        "--no-write",
        action="store_true",
        help="do not write metrics.json and README.md into the checkpoint",
    )
    p.add_argument(
        "--results",
        type=Path,
        default=None,
        help="also write the markdown results section (for bench/RESULTS.md) to this file",
    )
    p.add_argument(
        "--card-only",
        action="store_true",
        help="only (re)write README.md from an existing metrics.json",
    )
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.card_only:
        path = args.checkpoint / "metrics.json"
        result = json.loads(path.read_text()) if path.exists() else None
        (args.checkpoint / "README.md").write_text(
            render_card(result, args.checkpoint, EVERYDAY_PROMPTS)
        )
        return result or {}
    torch.manual_seed(0)
    t0 = time.time()
    model, tokenizer = load(args.checkpoint)
    docs = heldout_documents(args.checkpoint, 0)
    result = {
        "checkpoint": args.checkpoint.name,
        "params": sum(p.numel() for p in model.parameters()),
    }
    result["compression"] = compression(docs[: args.files], model, tokenizer)
    logger.info("compression %s", result["compression"])
    result["fim"] = fim_exact_match(model, tokenizer, fim_examples(docs, args.fim))
    logger.info("fim %s", result["fim"])
    result["parse"] = parse_rate(model, tokenizer, header_prompts(docs, args.parse))
    logger.info("parse %s", result["parse"])
    result["training"] = training_cost(args.checkpoint)
    result["samples"] = samples(model, tokenizer)
    result["metrics_seconds"] = round(time.time() - t0, 1)
    text = json.dumps(result, indent=1, ensure_ascii=False)
    if not args.no_write:
        (args.checkpoint / "metrics.json").write_text(text + "\n", encoding="utf-8")
        card = render_card(result, args.checkpoint, EVERYDAY_PROMPTS)
        (args.checkpoint / "README.md").write_text(card)
        curve = args.checkpoint / "learning_curve.csv"
        if curve.exists():
            (args.checkpoint / "learning_curve.svg").write_text(learning_curve_svg(curve))
        if args.results:
            args.results.write_text(render_results(result))
    print(text)
    return result


if __name__ == "__main__":
    main()

"""Measure tiny-starcoder: held-out bits/byte (beside gzip -9 and xz -9), FIM exact match,
parse rate of function completions, and the training cost, in one run (< 10 min on CPU).

    python -m model.metrics [--checkpoint DIR] [--files 40] [--fim 100] [--parse 40]

Held-out files come from the checkpoint's corpus manifest (split "heldout": whole files the
model never saw). Results are printed as JSON and written to <checkpoint>/metrics.json.
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
from transformers import AutoModelForCausalLM, AutoTokenizer

from model.corpus import Document, iter_manifest_documents

logger = logging.getLogger("model.metrics")

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "tiny-starcoder"
FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE = "<fim_prefix>", "<fim_suffix>", "<fim_middle>"
EVERYDAY_PROMPTS = {
    "function header": 'def read_json(path):\n    """Read a JSON file and return its content."""\n',
    "import block": "import os\nimport sys\n",
    "class with a docstring": (
        'class Stack:\n    """A last-in, first-out stack of items."""\n\n    def __init__(self):\n'
    ),
}


def load(checkpoint: Path):
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    tokenizer.model_max_length = 10**9  # whole files are scored in windows; no length warning
    model = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32)
    model.eval()
    return model, tokenizer


def heldout_documents(checkpoint: Path, n: int, seed: int = 0) -> list[Document]:
    docs = list(iter_manifest_documents(checkpoint / "corpus_manifest.json", split="heldout"))
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


def fim_prompt(prefix: str, suffix: str) -> str:
    return f"{FIM_PREFIX}{prefix}{FIM_SUFFIX}{suffix}{FIM_MIDDLE}"


def fim_exact_match(model, tokenizer, examples: list[FimExample], max_new_tokens: int = 48):
    exact = ended = 0
    for ex in examples:
        middle, eos = greedy(model, tokenizer, fim_prompt(ex.prefix, ex.suffix), max_new_tokens)
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


def _yaml_metric(name: str, type_: str, value) -> str:
    return f"    - name: {name}\n      type: {type_}\n      value: {value}\n      verified: false\n"


def render_card(result: dict | None, checkpoint: Path) -> str:
    """The model card, in the layout of bigcode/starcoder's README, from measured results."""
    config = json.loads((checkpoint / "config.json").read_text())
    manifest = json.loads((checkpoint / "corpus_manifest.json").read_text())
    docs = manifest["documents"]
    train_docs = [d for d in docs if d["split"] == "train"]
    repos = ", ".join(f"{r['repo']} {r['version']} ({r['license']})" for r in manifest["repos"])
    r = result or {}
    comp, fim, parse, tr = (r.get(k, {}) for k in ("compression", "fim", "parse", "training"))
    params = r.get("params") or "?"
    metrics_yaml = ""
    if comp:
        metrics_yaml = (
            _yaml_metric("held-out bits per byte (model)", "bits_per_byte", comp["model_bpb"])
            + _yaml_metric(
                "gzip -9 bits per byte, per file", "bits_per_byte", comp["gzip9_bpb_per_file"]
            )
            + _yaml_metric(
                "xz -9 bits per byte, per file", "bits_per_byte", comp["xz9_bpb_per_file"]
            )
            + _yaml_metric(
                "xz -9 bits per byte, files concatenated",
                "bits_per_byte",
                comp["xz9_bpb_concatenated"],
            )
            + _yaml_metric(
                "FIM single-line exact match (greedy)", "exact_match", fim["exact_match"]
            )
            + _yaml_metric(
                "function completion parse rate (greedy)", "parse_rate", parse["parse_rate"]
            )
        )
    front = f"""---
pipeline_tag: text-generation
inference: true
widget:
- text: 'def print_hello_world():'
  example_title: Hello world
  group: Python
license: apache-2.0
library_name: transformers
tags:
- code
- gpt_bigcode
- fill-in-the-middle
datasets:
- cpython-stdlib-{manifest["repos"][0]["version"]}
model-index:
- name: tiny-starcoder
  results:
  - task:
      type: text-generation
    dataset:
      type: cpython-stdlib-heldout
      name: CPython standard library, held-out files ({comp.get("files", "?")} files)
    metrics:
{metrics_yaml.rstrip()}
---
"""
    table = ""
    if comp:
        table = f"""
| measure (held-out, {comp["files"]} files, {comp["bytes"]:,} bytes) | value |
|---|---|
| **tiny-starcoder bits per byte** | **{comp["model_bpb"]}** |
| gzip -9, each file alone | {comp["gzip9_bpb_per_file"]} |
| gzip -9, files concatenated | {comp["gzip9_bpb_concatenated"]} |
| xz -9, each file alone | {comp["xz9_bpb_per_file"]} |
| xz -9, files concatenated | {comp["xz9_bpb_concatenated"]} |
| FIM exact match, one masked line ({fim["examples"]} examples, greedy) | {fim["exact_match"]} |
| FIM middles that end at `<|endoftext|>` | {fim["ended_at_eos"]} |
| parse rate, function header + docstring completed ({parse["examples"]}, greedy) \
| {parse["parse_rate"]} |

All measured in one run of `python -m model.metrics` ({r.get("metrics_seconds", "?")} s on CPU).
"""
    sample_md = ""
    for name, text in (r.get("samples") or {}).items():
        prompt = EVERYDAY_PROMPTS[name]
        sample_md += (
            f"\n**{name}** (prompt, then the greedy completion of up to 96 tokens "
            f"exactly as it came out):\n\n```python\n{prompt}{text}\n```\n"
        )
    training = ""
    if tr:
        training = (
            f"- **Tokens seen** (up to the best checkpoint): {tr['tokens_seen']:,}\n"
            f"- **Training time**: {tr['train_seconds'] / 3600:.2f} h "
            f"({tr['tokens_per_s']:,} tokens/s)\n"
            f"- **Best held-out loss**: {tr['best_eval_loss_nats_per_token']} nats/token "
            f"at step {tr['best_step']:,}\n"
        )
    return f"""{front}
# tiny-starcoder

## Table of Contents

1. [Model Summary](#model-summary)
2. [Use](#use)
3. [Limitations](#limitations)
4. [Training](#training)
5. [License](#license)

## Model Summary

tiny-starcoder is a {params if isinstance(params, str) else f"{params / 1e6:.1f}M"}-parameter
model of StarCoder's family, trained by this project on a 2-core CPU so that the playground can
generate code with no GPU and no network. Everything but the size is StarCoder's:
GPTBigCode with multi-query attention, StarCoder's 19 special tokens at ids 0-18, and the
fill-in-the-middle objective (FIM rate 0.5, PSM and SPM).

- **Repository:** this repository, `model/train.py`
- **Architecture:** GPTBigCode, {config["n_layer"]} layers, width {config["n_embd"]},
  {config["n_head"]} query heads and one shared key/value head (multi-query),
  context {config["n_positions"]} tokens, vocabulary {config["vocab_size"]} (byte-level BPE)
- **Languages:** Python
{table}
## Use

### Intended use

The embedded default of the StarCoder Playground: offline code completion and infilling
demos, tests of the serving stack, and teaching. It is not a useful programming assistant.

### Generation

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

checkpoint = "model/checkpoints/tiny-starcoder"
tokenizer = AutoTokenizer.from_pretrained(checkpoint)
model = AutoModelForCausalLM.from_pretrained(checkpoint)

inputs = tokenizer.encode("def print_hello_world():\\n", return_tensors="pt")
outputs = model.generate(inputs, max_new_tokens=64)
print(tokenizer.decode(outputs[0]))
```

### Fill-in-the-middle

Fill-in-the-middle uses StarCoder's special tokens for the prefix, middle and suffix.
Generation ends at `<|endoftext|>`; the result is prefix + middle + suffix.

```python
input_text = "<fim_prefix>def add(a, b):\\n    <fim_suffix>\\n    return c\\n<fim_middle>"
inputs = tokenizer.encode(input_text, return_tensors="pt")
outputs = model.generate(inputs, max_new_tokens=32)
print(tokenizer.decode(outputs[0]))
```

### Everyday prompts
{sample_md}
### Attribution & other requirements

The training data is the CPython standard library (PSF-2.0). The model can reproduce parts of
it. `corpus_manifest.json` beside the weights lists every file the model saw (repo, path,
license, sha256, size, train/held-out split); the playground's attribution index is built from
exactly those files, so a generation that copies them is highlighted with its source.

## Limitations

The model is tiny and was trained for about two hours on a CPU: completions are often wrong,
repetitive or syntactically broken, and it knows only Python as written in the standard
library. Its context is {config["n_positions"]} tokens, so a FIM prompt is trimmed to the code
near the cursor. Greedy decoding falls into repetition loops (use the playground's
repetition penalty 1.2), and a FIM middle rarely ends at `<|endoftext|>` by itself
(see the table): stop single-line infills at the end of the line. It has seen no
natural-language instructions, no tests of the tech-assistant
prompt, and no code outside the standard library. Do not use its output without review.

## Training

### Model

- **Architecture:** GPT-2-like decoder with multi-query attention and FIM objective
- **Pretraining steps:** {tr.get("best_step", "?")}
- **Pretraining tokens:** {tr.get("tokens_seen", "?")}
- **Precision:** float32 (bf16 autocast is 12x slower on this CPU)
- **Optimizer:** AdamW (betas 0.9/0.95, weight decay 0.1), linear warmup and cosine decay
  to 10%, gradient clipping at 1.0, no dropout

### Data

- **Corpus:** {repos}; {len(train_docs):,} training files, {len(docs) - len(train_docs)}
  held-out files (split by file, never by line). Generated tables (`encodings/`,
  `pydoc_data/topics.py`, numeric and escaped-byte tables) are filtered out.
- **Packing:** documents joined with `<|endoftext|>`. Files longer than a window are cut at
  line boundaries into window-sized pieces; each piece becomes a FIM example with probability
  0.5, half of them PSM (`<fim_prefix>{{prefix}}<fim_suffix>{{suffix}}<fim_middle>{{middle}}`)
  and half SPM in StarCoder's variant (`<fim_prefix><fim_suffix>{{suffix}}<fim_middle>{{prefix}}{{middle}}`).
- **Piece lengths:** steps 0-1,100 cut files into fixed 1,536-character pieces; from step
  1,100 on, piece limits were drawn from 64-1,536 characters (`--fim-min-piece-chars 64`,
  now the default) to give the model shorter FIM middles.
- **Tokenizer:** byte-level BPE trained on the training files; digits are split one per
  token (as StarCoder) and `\\n` is its own pre-token, so a prompt ending in a bare newline is
  in distribution. Pad token is `<|endoftext|>`.

### Hardware and cost

{training}- **Hardware:** 2 shared CPU cores (Intel Xeon, AVX2), torch {torch.__version__}
- **Learning curve:** `learning_curve.csv` (held-out loss in nats/token and bits per byte),\n  plotted in `learning_curve.svg`:\n\n  ![learning curve](learning_curve.svg)

## License

The weights are released under Apache-2.0, the license of this repository. They were trained
only on the CPython standard library, which is under the PSF License Agreement (PSF-2.0); code
the model reproduces from it remains under that license and needs its attribution.
"""


def learning_curve_svg(curve_csv: Path, width: int = 640, height: int = 320) -> str:
    """Held-out bits/byte against tokens seen, as a dependency-free SVG."""
    rows = list(csv.DictReader(curve_csv.open()))
    xs = [int(r["tokens"]) for r in rows]
    ys = [float(r["eval_bpb"]) for r in rows]
    pad = 48
    x_max, y_lo, y_hi = max(xs), min(ys) * 0.95, max(ys) * 1.02

    def px(x: float, y: float) -> str:
        fx = pad + (width - 2 * pad) * x / x_max
        fy = height - pad - (height - 2 * pad) * (y - y_lo) / (y_hi - y_lo)
        return f"{fx:.1f},{fy:.1f}"

    points = " ".join(px(x, y) for x, y in zip(xs, ys, strict=True))
    ticks = "".join(
        f'<text x="4" y="{px(0, v).split(",")[1]}" font-size="11">{v:.2f}</text>'
        for v in (y_lo, (y_lo + y_hi) / 2, y_hi)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif">'
        f'<rect width="{width}" height="{height}" fill="white"/>'
        f'<polyline points="{points}" fill="none" stroke="#1f77b4" stroke-width="2"/>'
        f"{ticks}"
        f'<text x="{width // 2 - 90}" y="{height - 12}" font-size="12">tokens seen '
        f"(max {x_max:,})</text>"
        f'<text x="{pad}" y="20" font-size="12">held-out bits per byte (lower is better)</text>'
        "</svg>\n"
    )


def render_results(result: dict) -> str:
    """The tiny-starcoder section of bench/RESULTS.md."""
    comp, fim, parse, tr = (result[k] for k in ("compression", "fim", "parse", "training"))
    return f"""## tiny-starcoder (`python -m model.metrics`)

Held-out: {comp["files"]} whole CPython stdlib files the model never saw ({comp["bytes"]:,} bytes),
all numbers from one run ({result["metrics_seconds"]} s, CPU, greedy decoding).

| measure | value |
|---|---|
| tiny-starcoder, bits per byte | **{comp["model_bpb"]}** |
| gzip -9, each file alone / concatenated | {comp["gzip9_bpb_per_file"]} / {comp["gzip9_bpb_concatenated"]} |
| xz -9, each file alone / concatenated | {comp["xz9_bpb_per_file"]} / {comp["xz9_bpb_concatenated"]} |
| FIM exact match, one masked line in a function ({fim["examples"]}) | {fim["exact_match"]} |
| FIM middles ending at `<|endoftext|>` within 48 tokens | {fim["ended_at_eos"]} |
| parse rate, header + docstring completed to the function's end ({parse["examples"]}) | {parse["parse_rate"]} |
| completions with an empty body (counted as failures) | {parse["empty_body"]} |
| parameters | {result["params"]:,} |
| tokens seen (to the best checkpoint) | {tr.get("tokens_seen", "?"):,} |
| training time (to the best checkpoint) | {tr.get("train_seconds", 0) / 3600:.2f} h |
| training throughput | {tr.get("tokens_per_s", "?"):,} tokens/s |
"""


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    p = argparse.ArgumentParser(
        prog="python -m model.metrics",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=DEFAULT_CHECKPOINT,
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
        (args.checkpoint / "README.md").write_text(render_card(result, args.checkpoint))
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
        (args.checkpoint / "README.md").write_text(render_card(result, args.checkpoint))
        curve = args.checkpoint / "learning_curve.csv"
        if curve.exists():
            (args.checkpoint / "learning_curve.svg").write_text(learning_curve_svg(curve))
        if args.results:
            args.results.write_text(render_results(result))
    print(text)
    return result


if __name__ == "__main__":
    main()

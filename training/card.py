"""tiny-starcoder's model card, learning-curve plot and RESULTS.md section, from measurements.

Pure rendering of what `python -m training.evaluate` measured (metrics.json) and what training
left beside the weights (config, corpus manifest, learning curve); torch-free.
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
from pathlib import Path

from corpus import MANIFEST_NAME


def _yaml_metric(name: str, type_: str, value) -> str:
    return f"    - name: {name}\n      type: {type_}\n      value: {value}\n      verified: false\n"


def render_card(result: dict | None, checkpoint: Path, prompts: dict[str, str]) -> str:
    """The model card, in the layout of bigcode/starcoder's README, from measured results."""
    config = json.loads((checkpoint / "config.json").read_text())
    manifest = json.loads((checkpoint / MANIFEST_NAME).read_text())
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

All measured in one run of `python -m training.evaluate` ({r.get("metrics_seconds", "?")} s on CPU).
"""
    sample_md = ""
    for name, text in (r.get("samples") or {}).items():
        prompt = prompts[name]
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

- **Repository:** this repository, `training/train.py`
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

{training}- **Hardware:** 2 shared CPU cores (Intel Xeon, AVX2), torch {importlib.metadata.version("torch")}
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
    return f"""## tiny-starcoder (`python -m training.evaluate`)

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

"""Quality levers of the rerank fill, side by side on the same tasks (issue 24 item 5).

    python bench/fim_levers.py --editor 40 --humaneval 30 \\
        --config shipped:k=8 --config c2048:k=8,max_context=2048 --config k12:k=12

Each config is the app's fill settings (model/infill/rerank.py `infill_settings`: ramble 1.25, the
MAX_CONTEXT_TOKENS context, 48 new tokens) with some fields replaced; the first config is the
baseline the others are compared with. Every task runs every config in turn (the order
rotates from task to task), in one process on the app's thread count during a fill (every
core, threads sleeping between ops: OMP_WAIT_POLICY=PASSIVE), so a busy machine slows each alike;
latency is reported as each config's p50 over the baseline's, besides the seconds.

Candidate filters are scored from the same fills: keeping only the candidates that fit the
suffix (bench/fim_filters.py) before the pick is the same as scoring only those, since each
candidate's score is its own. `pick` rows: `joint` (as shipped), `fit` (filter, then joint).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

# Sleeping threads: a busy machine slows every config alike (spinning ones do not).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fim import in_thread  # noqa: E402 - the path above makes `bench` importable
from bench.fim_editor import build_editor_tasks, versions  # noqa: E402
from bench.fim_filters import keep_fitting  # noqa: E402
from bench.fim_tasks import (  # noqa: E402
    build_tasks,
    edit_similarity,
    exact_match,
    percentile,
    read_problems,
    spread,
)

PICKS = ("joint", "fit")


def parse_config(text: str) -> tuple[str, dict]:
    name, _, fields = text.partition(":")
    out = {}
    for item in filter(None, fields.split(",")):
        key, _, value = item.partition("=")
        out[key] = float(value) if "." in value else int(value)
    return name, out


def pick(candidates: list[tuple], prefix: str, suffix: str, rule: str) -> str:
    """The chosen middle from (text, suffix logprob, middle logprob, greedy) rows."""
    texts = [c[0] for c in candidates]
    if rule == "fit":
        texts = keep_fitting(prefix.rsplit("\n", 1)[-1], texts, suffix)
    by_text = {c[0]: c[1] + c[2] for c in candidates}
    return max(texts, key=by_text.__getitem__)


def summarise(rows: list[dict], names: list[str]) -> list[dict]:
    out = []
    base = [r["configs"][names[0]]["seconds"] for r in rows]
    for name in names:
        got = [r["configs"][name] for r in rows]
        seconds = [g["seconds"] for g in got]
        line = {
            "config": name,
            "tasks": len(rows),
            "p50_s": round(percentile(seconds, 0.5), 2),
            "p95_s": round(percentile(seconds, 0.95), 2),
            "p50_x_base": round(percentile(seconds, 0.5) / max(percentile(base, 0.5), 1e-9), 2),
            "oracle": round(sum(g["oracle"] for g in got) / len(rows), 3),
            "candidates": round(sum(len(g["candidates"]) for g in got) / len(rows), 1),
            "prompt_tokens": round(sum(g["prompt_tokens"] for g in got) / len(rows)),
        }
        for rule in PICKS:
            line[f"exact_{rule}"] = round(sum(g[rule]["exact"] for g in got) / len(rows), 3)
            sims = [g[rule]["edit_sim"] for g in got]
            line[f"edit_sim_{rule}"] = round(sum(sims) / len(rows), 3)
        out.append(line)
    return out


def run(tasks, configs, filler_for, progress=None) -> list[dict]:
    """Every config on every task; `progress(rows)` after each task (a partial run is kept)."""
    rows = []
    for i, task in enumerate(tasks):
        order = configs[i % len(configs) :] + configs[: i % len(configs)]
        row = {"task_id": task.task_id, "target": task.target, "configs": {}}
        for name, _ in order:
            filler = filler_for[name]
            start = time.perf_counter()
            fill = in_thread(filler, task.prefix, task.suffix, single_line=True)
            seconds = time.perf_counter() - start
            cands = [
                (c.text, c.suffix_logprob, c.middle_logprob, c.greedy) for c in fill.candidates
            ]
            got = {"seconds": round(seconds, 3), "prompt_tokens": fill.prompt_tokens,
                   "candidates": [[c[0], round(c[1], 3), round(c[2], 3)] for c in cands],
                   "oracle": any(exact_match(c[0], task.target) for c in cands)}  # fmt: skip
            for rule in PICKS:
                middle = pick(cands, task.prefix, task.suffix, rule)
                got[rule] = {"middle": middle, "exact": exact_match(middle, task.target),
                             "edit_sim": round(edit_similarity(middle, task.target), 3)}  # fmt: skip
            row["configs"][name] = got
        rows.append(row)
        if progress:
            progress(rows)
        print(
            task.task_id,
            " ".join(
                f"{n}:{'E' if row['configs'][n]['joint']['exact'] else '.'}"
                f"{'E' if row['configs'][n]['fit']['exact'] else '.'}"
                f"{row['configs'][n]['seconds']:.1f}s"
                for n, _ in configs
            ),
            flush=True,
        )
    return rows


def progress(report: dict, rows: dict, set_name: str):
    """Writes the rows so far beside --json (OUT.partial), to read a long run before its end."""
    out = report.get("json")

    def write(done: list[dict]) -> None:
        if out:
            body = {**report, "rows": {**rows, set_name: done}}
            Path(out + ".partial").write_text(json.dumps(body, indent=1) + "\n")

    return write


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python bench/fim_levers.py", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument(
        "--editor", type=int, default=40, help="editor-sized tasks (bench/fim_editor.py)"
    )
    p.add_argument("--humaneval", type=int, default=30, help="HumanEval single-line tasks, spread")
    p.add_argument("--editor-from", type=int, default=0, help="skip the first editor tasks")
    p.add_argument(
        "--humaneval-longer-than",
        type=int,
        default=None,
        metavar="TOKENS",
        help="instead: every HumanEval task whose prefix is over TOKENS tokens (the "
        "only ones a smaller max_context can change)",
    )
    p.add_argument("--config", action="append", default=None, metavar="NAME:FIELD=V,...")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--json", default=None, metavar="OUT")
    p.add_argument("--data-dir", default=os.environ.get("DATA_DIR", str(ROOT / "data")))
    args = p.parse_args(argv)
    import torch

    from bench.humaneval_generator import load_model
    from model.engine import GenerationParams, GenerationRequest, Infill
    from model.infill.fim_rerank import RerankFiller
    from model.infill.rerank import infill_settings

    torch.set_num_threads(args.threads)
    configs = [parse_config(c) for c in (args.config or ["base:k=8"])]
    model, tokenizer = load_model(args.model, args.data_dir, "cpu")
    shipped = infill_settings(
        GenerationRequest("", GenerationParams(max_new_tokens=48), infill=Infill("", ""))
    )
    filler_for = {
        name: RerankFiller(model, tokenizer, dataclasses.replace(shipped, **fields))
        for name, fields in configs
    }
    sets = {
        "editor": build_editor_tasks(args.editor)[args.editor_from :] if args.editor else [],
        "humaneval": spread(build_tasks(read_problems(), "single"), args.humaneval)
        if args.humaneval
        else [],
    }
    if args.humaneval_longer_than is not None:
        sets["humaneval"] = [
            t
            for t in build_tasks(read_problems(), "single")
            if len(tokenizer(t.prefix)["input_ids"]) > args.humaneval_longer_than
        ]
    load_before = os.getloadavg()[0]
    report = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="minutes"),
              "packages": versions(), "threads": args.threads, "json": args.json,
              "configs": {n: {**dataclasses.asdict(shipped), **f} for n, f in configs}}  # fmt: skip
    rows = {}
    for name, tasks in sets.items():
        if tasks:
            rows[name] = run(tasks, configs, filler_for, progress(report, rows, name))
            report[name] = summarise(rows[name], [n for n, _ in configs])
    report["loadavg_before_after"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    if args.json:
        Path(args.json).write_text(json.dumps({**report, "rows": rows}, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    for name in rows:
        print(
            f"\n{name}: config | exact joint | exact fit | edit sim joint/fit | oracle | "
            "p50 s | p95 s | p50 x base | candidates | prompt tokens"
        )
        for r in report[name]:
            print(
                f"{r['config']} | {r['exact_joint']:.3f} | {r['exact_fit']:.3f} | "
                f"{r['edit_sim_joint']:.3f}/{r['edit_sim_fit']:.3f} | {r['oracle']:.3f} | "
                f"{r['p50_s']:.2f} | {r['p95_s']:.2f} | {r['p50_x_base']:.2f} | "
                f"{r['candidates']} | {r['prompt_tokens']}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

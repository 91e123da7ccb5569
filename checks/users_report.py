"""What checks/users.py records of each request, and the report: counts per endpoint and outcome,
latency percentiles, and the failures and refusals seen."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from checks.users_workload import API


@dataclass
class Result:
    api: str  # complete, fill, assist, share, search
    outcome: str  # ok, refused, error, mismatch, incomplete, hang
    seconds: float
    key: tuple | None = None
    detail: str = ""
    text: str | None = None
    partials_not_prefix: int = 0
    ttft: float | None = None
    odd_partial: str = ""


@dataclass
class Stats:
    results: list[Result] = field(default_factory=list)

    def add(self, r: Result) -> None:
        self.results.append(r)


def _pct(values, q):
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


OUTCOMES = ["ok", "refused", "error", "mismatch", "incomplete", "hang"]


def summarize(args, stats: Stats, wall, tokens, refs, problems, models, ref_s) -> dict:
    rows, totals = [], dict.fromkeys(["requests", *OUTCOMES, "slow"], 0)
    for api in ["complete", "fill", "assist", "share", "search"]:
        rs = [r for r in stats.results if r.api == api]
        counts = {o: sum(r.outcome == o for r in rs) for o in OUTCOMES}
        done = [r.seconds for r in rs if r.outcome in ("ok", "mismatch", "incomplete")]
        refused = [r.seconds for r in rs if r.outcome == "refused"]
        ttft = [r.ttft for r in rs if r.ttft is not None and r.outcome != "hang"]
        rows.append(
            {
                "api": api,
                "requests": len(rs),
                **counts,
                "slow": sum(s > args.slow_after for s in done),
                "ttft_p50": _pct(ttft, 50),
                "ttft_p95": _pct(ttft, 95),
                "p50": _pct(done, 50),
                "p95": _pct(done, 95),
                "max": max(done, default=float("nan")),
                "refused_p50": _pct(refused, 50),
                "partials_not_prefix": sum(r.partials_not_prefix for r in rs),
            }
        )
        totals["requests"] += len(rs)
        for o in [*OUTCOMES, "slow"]:
            totals[o] += rows[-1][o]
    generated = sum(r["requests"] for r in rows[:3])
    lines = [
        f"{args.users} users, {args.seconds:.0f} s (soak wall {wall:.0f} s), "
        f"--rate-limit {args.rate_limit}; models: {models}",
        f"references: {len(refs)} combinations, sequential, {ref_s:.0f} s",
        "",
        "| endpoint | requests | ok | clear refusals | other errors | mismatches | incomplete "
        f"| hangs (>{args.hang_after:.0f} s) | slow (>{args.slow_after:.0f} s) | first token "
        "p50 / p95 s | p50 s | p95 s | max s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        first = f"{r['ttft_p50']:.1f} / {r['ttft_p95']:.1f}" if r["api"] in API.values() else ""
        lines.append(
            f"| /{r['api']} | {r['requests']} | {r['ok']} | {r['refused']} | {r['error']} | "
            f"{r['mismatch']} | {r['incomplete']} | {r['hang']} | {r['slow']} | {first} | "
            f"{r['p50']:.2f} | {r['p95']:.2f} | {r['max']:.2f} |"
        )
    lines.append(
        f"| all | {totals['requests']} | {totals['ok']} | {totals['refused']} | "
        f"{totals['error']} | {totals['mismatch']} | {totals['incomplete']} | {totals['hang']} "
        f"| {totals['slow']} | | | | |"
    )
    lines += [
        "",
        f"generations started: {generated}; tokens generated during the soak: {tokens:.0f} "
        f"({tokens / wall:.1f} tokens/s)"
        if wall
        else "",
        "latency: POST to final SSE event, of finished generations (ok, mismatch, incomplete); "
        "refusals' p50: "
        + (
            ", ".join(f"/{r['api']} {r['refused_p50']:.2f} s" for r in rows if r["refused"])
            or "none"
        ),
        "streamed values the final text does not extend (informational): "
        + ", ".join(f"/{r['api']} {r['partials_not_prefix']}" for r in rows[:3]),
    ]
    odd = [r for r in stats.results if r.odd_partial]
    if odd:
        lines += ["", "Streamed values the final text does not extend (first 3):"]
        lines += [f"- /{r.api} {r.key!r}: {r.odd_partial}" for r in odd[:3]]
    bad = [r for r in stats.results if r.outcome not in ("ok", "refused")]
    if bad:
        lines += ["", "Failures (first 20):"]
        for r in bad[:20]:
            lines.append(f"- /{r.api} {r.outcome} after {r.seconds:.1f} s, {r.key!r}: {r.detail}")
    refusals = sorted({_shape(r.detail) for r in stats.results if r.outcome == "refused"})
    if refusals:
        lines += ["", "Refusal messages seen:", *[f"- {m}" for m in refusals[:10]]]
    if problems:
        lines += ["", "Problems outside the soak:", *[f"- {p}" for p in problems]]
    return {"rows": rows, "totals": totals, "problems": problems, "tokens": tokens,
            "wall_s": wall, "failures": [r.__dict__ for r in bad],
            "table": "\n".join(lines)}  # fmt: skip


def _shape(message: str) -> str:
    """A refusal message with its numbers blanked, so identical kinds collapse into one line."""
    import re

    return re.sub(r"\d+", "N", message.split(" (last event")[0])[:200]

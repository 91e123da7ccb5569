"""Attribution benchmark: index build speed and size, membership check vs ripgrep, search.

    python bench/attribution.py [--manifest PATH] [--limit-mb 30] [--out FILE]  (the table for bench/RESULTS.md)

Measured side by side in one run (about 2-3 minutes on 2 cores):
  * index build MB/s (SQLite: documents + FTS5 words + FTS5 trigram + segment keys + Bloom);
  * index size as a share of the corpus: Bloom filter, text indexes, stored text;
  * membership check p50/p99 for 2 KB texts (fresh, mixed, fully verbatim), against
    `rg -U -F` scanning the corpus files for the same 50-character windows;
  * full-text search p50/p99 (BM25 words and exact phrases).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from codecs import encode as codec_encode
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.attribution import WINDOW, AttributionIndex, IndexDocument
from app.settings import Settings

logger = logging.getLogger("bench.attribution")
TEXT_CHARS = 2048
RG = shutil.which("rg") or "/usr/bin/rg"


HEADER = """# Attribution benchmark

`python bench/attribution.py --pg-url "$PG_TEST_URL"` (its output is the Attribution section of bench/RESULTS.md)

Goals (issue 5): membership check p50 <= 5 ms on 2 KB texts and >= 100x faster than
`rg -F` scanning the corpus for the same 50-character strings; full-text search p50 <= 20 ms.

"""
NOTES = """

How it is measured:
- Corpus: the tiny-starcoder corpus manifest (or, without one, the same stdlib corpus rebuilt by
  corpus.py). Build = `AttributionIndex.add_documents` into a fresh SQLite file: stored text,
  FTS5 BM25 over 30-line chunks, FTS5 trigram over whole files, segment-key table, Bloom filter.
- Sizes: Bloom filter = serialized rbloom filter (1% false positives); text indexes = dbstat pages
  of the FTS5 tables and the segment-key table; stored text = the documents table.
- 2 KB texts: "fresh" = corpus text with letters rot13-ed (code-shaped, not in the corpus; data
  lines without letters survive, so a couple of these texts do hold real verbatim spans),
  "mixed" = fresh text with a 300-character verbatim piece in the middle, "verbatim" = 2 KB copied.
  attribute() = every 50-character window through the Bloom filter, verification of hits in the
  segment-key table, extension to exact boundaries and source lookup in the trigram index.
- ripgrep: `rg -U -F -l -j 2 -e W1 -e W2 ...` with all ~2,000 distinct windows of the text, over
  the corpus written out as files (page cache warm). It answers less (which files contain any
  window; no spans, no lines), so the comparison flatters ripgrep.
- Search: 120 BM25 queries of 1-3 identifiers from the corpus; 60 exact phrases of 8-30
  characters cut from random places (the slow tail is whitespace-heavy phrases such as eight
  spaces, whose trigrams occur in every file).
"""


def load_corpus(manifest: str | None, limit_mb: float) -> tuple[list[IndexDocument], str]:
    """The model's corpus from its manifest if there is one, else the stdlib corpus rebuilt
    with corpus.py; capped at `limit_mb` (files in a fixed shuffled order)."""
    if manifest and Path(manifest).is_file():
        from corpus import iter_manifest_documents

        docs = [
            IndexDocument(d.repo, d.path, d.license, d.text, split=d.split, sha256=d.sha256)
            for d in iter_manifest_documents(manifest)
        ]
        label = f"corpus manifest {manifest}"
    else:
        from corpus import build_corpus

        _, found = build_corpus()
        docs = [
            IndexDocument(d.repo, d.path, d.license, d.text, split=d.split, sha256=d.sha256)
            for d in found
        ]
        label = "stdlib corpus from corpus.py (no manifest found)"
    random.Random(0).shuffle(docs)
    kept, total = [], 0
    for d in docs:
        if total + d.nbytes > limit_mb * 1e6:
            break
        kept.append(d)
        total += d.nbytes
    return kept, label


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def fresh(text: str) -> str:
    """Code-shaped text the corpus does not contain: letters rotated (rot13)."""
    return codec_encode(text, "rot13")


def make_texts(docs: list[IndexDocument], n: int, rnd: random.Random) -> dict[str, list[str]]:
    big = [d for d in docs if len(d.text) > 3 * TEXT_CHARS]

    def piece(k: int) -> str:
        d = rnd.choice(big)
        o = rnd.randrange(len(d.text) - k)
        return d.text[o : o + k]

    texts: dict[str, list[str]] = {"fresh": [], "mixed": [], "verbatim": []}
    for _ in range(n):
        texts["fresh"].append(fresh(piece(TEXT_CHARS)))
        outside = fresh(piece(TEXT_CHARS - 300))
        cut = len(outside) // 2
        texts["mixed"].append(outside[:cut] + piece(300) + outside[cut:])
        texts["verbatim"].append(piece(TEXT_CHARS))
    return texts


def time_calls(fn, items) -> list[float]:
    out = []
    for item in items:
        t = time.perf_counter()
        fn(item)
        out.append((time.perf_counter() - t) * 1000)
    return out


def rg_membership(text: str, corpus_dir: Path) -> tuple[float, bool]:
    """ripgrep's answer to the same question: does any 50-char window occur in the corpus?"""
    windows = {text[i : i + WINDOW] for i in range(len(text) - WINDOW + 1)}
    args = [RG, "-U", "-F", "-l", "--no-messages", "-j", "2"]
    for w in windows:
        args += ["-e", w]
    t = time.perf_counter()
    proc = subprocess.run([*args, str(corpus_dir)], capture_output=True, text=True)
    ms = (time.perf_counter() - t) * 1000
    return ms, bool(proc.stdout.strip())


def bench_postgres(args, docs: list[IndexDocument], rnd: random.Random) -> list[tuple[str, str]]:
    """Build a PostgreSQL index of the first --pg-limit-mb of the corpus in a scratch schema."""
    subset, total = [], 0
    for d in docs:
        if total + d.nbytes > args.pg_limit_mb * 1e6:
            break
        subset.append(d)
        total += d.nbytes
    schema = f"attr_bench_{os.getpid()}"
    index = AttributionIndex.open(args.pg_url, schema=schema)
    try:
        t = time.perf_counter()
        index.add_documents(subset, size_hint_bytes=total)
        build_s = time.perf_counter() - t
        texts = make_texts(subset, 50, rnd)
        for items in texts.values():
            index.attribute(items[0])
        attr = [x for items in texts.values() for x in time_calls(index.attribute, items)]
        words = [w for d in subset[:200] for w in d.text.split() if w.isidentifier() and len(w) > 4]
        queries = [" ".join(rnd.sample(words, k)) for k in (1, 2, 3) for _ in range(20)]
        search_ms = time_calls(index.search, queries)
        sizes = index.stats(sizes=True).sizes
    finally:
        index._store.drop()
    return [
        ("corpus", f"{len(subset)} files, {total / 1e6:.1f} MB"),
        ("index build", f"{total / 1e6 / build_s:.2f} MB/s ({build_s:.1f} s)"),
        ("text indexes size", f"pg_trgm {sizes['trigram'] / 1e6:.1f} MB, tsvector+chunks "
                              f"{sizes['words'] / 1e6:.1f} MB, segment keys "
                              f"{sizes['segments'] / 1e6:.1f} MB"),
        ("membership check, 2 KB texts", f"p50 {pct(attr, 50):.2f} ms, p99 {pct(attr, 99):.2f} ms "
                                         f"({len(attr)} fresh/mixed/verbatim)"),
        ("full-text search", f"p50 {pct(search_ms, 50):.2f} ms, p99 {pct(search_ms, 99):.2f} ms"),
    ]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", default=Settings.load([]).corpus_manifest)
    parser.add_argument("--limit-mb", type=float, default=30.0, help="cap on corpus size (MB)")
    parser.add_argument("--texts", type=int, default=100, help="2 KB texts per kind")
    parser.add_argument("--rg-texts", type=int, default=10, help="texts per kind for ripgrep")
    parser.add_argument("--out", default=None, help="write the markdown results here")
    parser.add_argument("--pg-url", default=None, help="also measure PostgreSQL at this URL")
    parser.add_argument("--pg-limit-mb", type=float, default=5.0, help="corpus cap for PostgreSQL")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()

    docs, label = load_corpus(args.manifest, args.limit_mb)
    corpus_bytes = sum(d.nbytes for d in docs)
    logger.info("corpus: %s: %d files, %.1f MB", label, len(docs), corpus_bytes / 1e6)

    work = Path(tempfile.mkdtemp(prefix="attr-bench-"))
    try:
        index = AttributionIndex.open(work / "index.sqlite")
        t = time.perf_counter()
        report = index.add_documents(docs, size_hint_bytes=corpus_bytes)
        build_s = time.perf_counter() - t
        stats = index.stats(sizes=True)
        sizes = stats.sizes
        text_index = sizes["words"] + sizes["trigram"] + sizes["segments"] + sizes["other"]

        # The corpus as files, for ripgrep.
        corpus_dir = work / "corpus"
        for i, d in enumerate(docs):
            path = corpus_dir / f"{i:05d}_{d.path.replace('/', '__')}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(d.text, encoding="utf-8")

        rnd = random.Random(1)
        texts = make_texts(docs, args.texts, rnd)
        for kind in texts:  # warm the caches once
            index.attribute(texts[kind][0])
        attr = {kind: time_calls(index.attribute, items) for kind, items in texts.items()}
        found = {
            kind: sum(bool(index.attribute(x)) for x in items) for kind, items in texts.items()
        }
        rg = {}
        rg_found = {}
        for kind, items in texts.items():
            runs = [rg_membership(x, corpus_dir) for x in items[: args.rg_texts]]
            rg[kind] = [ms for ms, _ in runs]
            rg_found[kind] = sum(hit for _, hit in runs)

        words = [w for d in docs[:200] for w in d.text.split() if w.isidentifier() and len(w) > 4]
        queries = [" ".join(rnd.sample(words, k)) for k in (1, 2, 3) for _ in range(40)]
        phrases = []
        for _ in range(60):
            d = rnd.choice(docs)
            o = rnd.randrange(max(1, len(d.text) - 30))
            phrases.append(d.text[o : o + rnd.randrange(8, 30)])
        index.search(queries[0])
        search_ms = time_calls(index.search, queries)
        exact_ms = time_calls(lambda p: index.search(p, exact=True), phrases)
        index.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    pg_rows = bench_postgres(args, docs, rnd) if args.pg_url else []
    all_attr = [x for v in attr.values() for x in v]
    all_rg = [x for v in rg.values() for x in v]
    rows = [
        ("corpus", f"{len(docs)} files, {corpus_bytes / 1e6:.1f} MB ({label})"),
        ("index build", f"{corpus_bytes / 1e6 / build_s:.2f} MB/s ({build_s:.1f} s; "
                        f"{report.added} files)"),
        ("Bloom filter size", f"{stats.bloom_bytes / 1e6:.2f} MB = "
                              f"{stats.bloom_bytes / corpus_bytes:.1%} of the corpus"),
        ("text indexes size", f"{text_index / 1e6:.1f} MB = {text_index / corpus_bytes:.0%} of "
                              f"the corpus (trigram {sizes['trigram'] / 1e6:.1f} MB, words "
                              f"{sizes['words'] / 1e6:.1f} MB, segment keys "
                              f"{sizes['segments'] / 1e6:.1f} MB, other {sizes['other'] / 1e6:.1f} MB)"),
        ("stored text", f"{sizes['documents'] / 1e6:.1f} MB = "
                        f"{sizes['documents'] / corpus_bytes:.0%} of the corpus"),
    ]  # fmt: skip
    lines = ["| measure | result |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]
    lines += [
        "",
        "Membership check, 2 KB texts (ms; each tests ~2,000 windows of 50 characters):",
        "",
        "| texts | n | attribute() p50 | p99 | texts with spans | rg -U -F n | rg p50 | rg p99 "
        "| rg found | speed-up (p50) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind in texts:
        a, r = attr[kind], rg[kind]
        lines.append(
            f"| {kind} | {len(a)} | {pct(a, 50):.2f} | {pct(a, 99):.2f} | {found[kind]} "
            f"| {len(r)} | {pct(r, 50):.0f} | {pct(r, 99):.0f} | {rg_found[kind]} "
            f"| {pct(r, 50) / pct(a, 50):.0f}x |"
        )
    lines.append(
        f"| all | {len(all_attr)} | {pct(all_attr, 50):.2f} | {pct(all_attr, 99):.2f} | "
        f"| {len(all_rg)} | {pct(all_rg, 50):.0f} | {pct(all_rg, 99):.0f} | "
        f"| {pct(all_rg, 50) / pct(all_attr, 50):.0f}x |"
    )
    lines += [
        "",
        "Full-text search (ms):",
        "",
        "| queries | n | p50 | p99 | mean |",
        "|---|---|---|---|---|",
        f"| BM25, 1-3 identifier words | {len(search_ms)} | {pct(search_ms, 50):.2f} "
        f"| {pct(search_ms, 99):.2f} | {statistics.mean(search_ms):.2f} |",
        f"| exact phrase, 8-30 characters | {len(exact_ms)} | {pct(exact_ms, 50):.2f} "
        f"| {pct(exact_ms, 99):.2f} | {statistics.mean(exact_ms):.2f} |",
    ]
    if pg_rows:
        lines += [
            "",
            "PostgreSQL backend (same code, tsvector + pg_trgm), on a smaller corpus:",
            "",
            "| measure | result |",
            "|---|---|",
        ] + [f"| {a} | {b} |" for a, b in pg_rows]
    machine = (
        f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), no GPU, "
        f"Python {platform.python_version()}, SQLite "
        f"{__import__('sqlite3').sqlite_version}, {subprocess.run([RG, '--version'], capture_output=True, text=True).stdout.splitlines()[0]}"
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines += [
        "",
        f"Machine: {machine}. Load average at the end {load} (other jobs share the cores, so "
        f"tails are noisy). Total run {time.perf_counter() - started:.0f} s.",
    ]
    table = HEADER + "\n".join(lines) + NOTES
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

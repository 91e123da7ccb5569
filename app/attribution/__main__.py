"""Command line for the attribution index: build, search, attribute, stats.

python -m app.attribution build                  # CORPUS_MANIFEST into INDEX_URL, as the app
python -m app.attribution build --folder ~/src --stack the-stack-python-0000.parquet
python -m app.attribution search "def make_archive" --exact
python -m app.attribution stats

Defaults come from the app's Settings (INDEX_URL, DATA_DIR, CORPUS_MANIFEST in the environment),
so the CLI and the app mean the same index; flags override them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from app.settings import Settings
from model.errors import PlaygroundError

from .build import DEFAULT_DESCRIPTION, build
from .index import AttributionIndex
from .sources import folder_source, manifest_source, stack_source


def _index_arg(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--index",
        default=default,
        metavar="URL_OR_PATH",
        help="the index: a SQLite file path (created if missing), sqlite:///PATH, or "
        "postgresql+psycopg://user:pass@host/db[?schema=NAME] (tables in schema NAME, "
        "default 'attribution'). Default: INDEX_URL, else DATA_DIR/attribution/index.sqlite "
        "(now %(default)s)",
    )


def make_parser(settings: Settings) -> argparse.ArgumentParser:
    index = settings.resolved_index_url()
    parser = argparse.ArgumentParser(
        prog="python -m app.attribution",
        description="Index training data for attribution: a Bloom filter of 50-character "
        "segments (membership check), BM25 full-text search and an exact-substring index.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "build",
        help="add documents to the index (incremental; identical content is stored once)",
        description="Add documents to the index. Incremental: files already indexed are "
        "skipped, content seen before (same sha256) is stored once, and a changed file at a "
        "known repo/path replaces the old version. Prints statistics at the end.",
    )
    _index_arg(p, index)
    p.add_argument(
        "--manifest",
        action="append",
        default=[],
        metavar="PATH",
        help="a corpus manifest (corpus.py format) listing the files a model was trained on; "
        "repeatable. Without any --manifest, --folder or --stack: CORPUS_MANIFEST "
        f"(now {settings.corpus_manifest})",
    )
    p.add_argument(
        "--folder",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder whose top-level folders are repos; each repo's license comes from its "
        "LICENSE/COPYING file or package metadata (METADATA, PKG-INFO, pyproject.toml, "
        "package.json); repeatable",
    )
    p.add_argument(
        "--stack",
        action="append",
        default=[],
        metavar="FILE",
        help="a .parquet or .jsonl file in The Stack's schema (content, max_stars_repo_name, "
        "max_stars_repo_path, max_stars_repo_licenses, lang); repeatable",
    )
    p.add_argument(
        "--description",
        default=None,
        help="what the index covers, shown in the playground "
        f"(default for a manifest: {DEFAULT_DESCRIPTION!r})",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar (log lines)")

    p = sub.add_parser("search", help="full-text search (BM25) or exact phrase search")
    _index_arg(p, index)
    p.add_argument("query", help="words to search for (any text is safe), or a phrase with --exact")
    p.add_argument("--exact", action="store_true", help="files containing the query verbatim")
    p.add_argument("--repo", help="only this repo")
    p.add_argument("--license", help="only this license (e.g. MIT)")
    p.add_argument("--lang", help="only this language (e.g. Python)")
    p.add_argument("--page", type=int, default=1, help="page number, from 1 (default 1)")
    p.add_argument("--page-size", type=int, default=10, help="results per page (default 10)")
    p.add_argument("--json", action="store_true", help="print results as JSON")

    p = sub.add_parser("attribute", help="find verbatim spans of a text (file or stdin)")
    _index_arg(p, index)
    p.add_argument("file", nargs="?", default="-", help="text file to check; - for stdin")
    p.add_argument("--json", action="store_true", help="print spans as JSON")

    p = sub.add_parser("stats", help="what the index holds and how big it is")
    _index_arg(p, index)
    p.add_argument("--json", action="store_true", help="print statistics as JSON")
    return parser


def _print_stats(index: AttributionIndex, as_json: bool = False) -> None:
    stats = index.stats(sizes=True)
    if as_json:
        print(json.dumps(stats.to_dict(), indent=1))
        return
    print(stats.summary)
    corpus = stats.bytes or 1
    bloom = stats.bloom_bytes
    text_index = sum(v for k, v in stats.sizes.items() if k != "documents")
    print(f"  backend {stats.backend}: {index.location}")
    splits = {k: v for k, v in stats.splits.items() if k} or "-"
    print(f"  splits: {splits}  licenses: {stats.licenses or '-'}")
    print(f"  Bloom filter: {bloom / 1e6:.2f} MB ({bloom / corpus:.1%} of the corpus)")
    parts = ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in stats.sizes.items() if k != "documents")
    print(
        f"  text indexes: {text_index / 1e6:.1f} MB ({text_index / corpus:.0%} of the corpus: "
        f"{parts}); stored text {stats.sizes.get('documents', 0) / 1e6:.1f} MB"
    )


def main(argv: list[str] | None = None) -> int:
    settings = Settings.load([])  # the environment's; this CLI's own flags override it
    args = make_parser(settings).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    target = str(args.index).removeprefix("sqlite:///")
    if args.command != "build" and "://" not in target and not Path(target).exists():
        print(
            f"error: no index at {target}; build one with: python -m app.attribution build "
            f"--index {target}",
            file=sys.stderr,
        )
        return 1
    try:
        index = AttributionIndex.open(args.index)
        if args.command == "build":
            if not (args.manifest or args.folder or args.stack):
                args.manifest = [settings.corpus_manifest]
            specs = [manifest_source(p) for p in args.manifest]
            specs += [folder_source(p) for p in args.folder]
            specs += [stack_source(p) for p in args.stack]
            description = args.description
            if description is None and args.manifest and not (args.folder or args.stack):
                description = DEFAULT_DESCRIPTION
            report = build(
                index, specs, show_progress=not args.no_progress, description=description
            )
            print(report.describe())
            _print_stats(index)
        elif args.command == "search":
            hits = index.search(
                args.query,
                repo=args.repo,
                license=args.license,
                lang=args.lang,
                page=args.page,
                page_size=args.page_size,
                exact=args.exact,
            )
            if args.json:
                print(json.dumps([h.to_dict() for h in hits], indent=1))
            for hit in [] if args.json else hits:
                print(f"{hit.repo}/{hit.path}:{hit.start_line}  [{hit.license}]  {hit.score:.3f}")
                print("    " + hit.snippet.replace("\n", "\n    "))
            if not hits and not args.json:
                print("no results")
        elif args.command == "attribute":
            text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text("utf-8")
            spans = index.attribute(text)
            if args.json:
                print(json.dumps([s.to_dict() for s in spans], indent=1))
            for span in [] if args.json else spans:
                print(f"chars {span.start}-{span.end} ({span.end - span.start}):")
                for s in span.sources:
                    print(f"    {s.repo}/{s.path}:{s.start_line}-{s.end_line}  [{s.license}]")
            if not spans and not args.json:
                print("no verbatim spans")
        else:
            _print_stats(index, args.json)
    except (PlaygroundError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

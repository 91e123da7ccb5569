"""Building an index from sources, with a progress bar; and the app's first-start build."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

from .core import BuildReport
from .index import AttributionIndex
from .sources import SourceSpec, manifest_source

logger = logging.getLogger(__name__)

DEFAULT_DESCRIPTION = "the training corpus of tiny-starcoder"


def build(
    index: AttributionIndex,
    sources: list[SourceSpec],
    *,
    show_progress: bool = True,
    description: str | None = None,
) -> BuildReport:
    """Add every source to the index; one tqdm bar over all documents (or log lines)."""
    from tqdm import tqdm

    total = sum(s.count or 0 for s in sources) or None
    total_report = BuildReport()
    bar = tqdm(total=total, unit="doc", disable=not show_progress, dynamic_ncols=True)
    done_bytes = 0
    last_log = time.monotonic()
    try:
        for spec in sources:
            bar.set_description(spec.label[-40:])

            def progress(doc, outcome: str) -> None:
                nonlocal done_bytes, last_log
                done_bytes += doc.nbytes
                bar.update(1)
                bar.set_postfix_str(f"{done_bytes / 1e6:.1f} MB", refresh=False)
                if not show_progress and time.monotonic() - last_log > 10:
                    last_log = time.monotonic()
                    logger.info("attribution index: %.1f MB read so far", done_bytes / 1e6)

            report = index.add_documents(
                spec.documents,
                size_hint_bytes=spec.nbytes,
                description=description,
                source_label=spec.label,
                progress=progress,
            )
            for name in (
                "added",
                "unchanged",
                "duplicates",
                "replaced",
                "skipped",
                "bytes_added",
                "seconds",
            ):
                setattr(total_report, name, getattr(total_report, name) + getattr(report, name))
    finally:
        bar.close()
    return total_report


def _fingerprint(manifest_path: Path) -> str:
    return hashlib.sha256(manifest_path.read_bytes()).hexdigest()


def sync_manifest(index: AttributionIndex, manifest_path: Path) -> BuildReport:
    """Make the index hold exactly the manifest's documents: add new and changed files,
    remove files the manifest no longer lists, and remember which manifest that was."""
    from corpus import read_manifest

    report = build(
        index,
        [manifest_source(manifest_path)],
        show_progress=False,
        description=DEFAULT_DESCRIPTION,
    )
    keep = {(d["repo"], d["path"]) for d in read_manifest(manifest_path)["documents"]}
    index.prune(keep)
    index.set_meta("manifest_sha256", _fingerprint(manifest_path))
    return report


def ensure_default_index(
    index_path: str | Path, manifest_path: str | Path, *, schema: str | None = None
) -> AttributionIndex:
    """Open the default index, building it from the model's corpus manifest if it is missing
    or empty, and updating it if the manifest changed since (the model was retrained).

    A SQLite index is first built into a temporary file and renamed into place, so an
    interrupted first start never leaves a half-built index behind. Progress is logged.
    """
    target = str(index_path)
    if target.startswith("sqlite:///"):
        target = target[len("sqlite:///") :]
    is_sqlite = "://" not in target
    manifest_path = Path(manifest_path)
    has_manifest = manifest_path.is_file()
    if not is_sqlite or Path(target).exists():
        index = AttributionIndex.open(target, schema=schema)
        if index.stats().documents:
            if has_manifest and index.get_meta("manifest_sha256") != _fingerprint(manifest_path):
                logger.info(
                    "attribution index %s: corpus manifest %s changed; updating",
                    index.location,
                    manifest_path,
                )
                logger.info(
                    "attribution index updated: %s", sync_manifest(index, manifest_path).describe()
                )
            logger.info("attribution index %s: %s", index.location, index.stats().summary)
            return index
        if not is_sqlite:
            if has_manifest:
                logger.info(
                    "attribution index %s is empty: building it from %s",
                    index.location,
                    manifest_path,
                )
                sync_manifest(index, manifest_path)
                logger.info("attribution index built: %s", index.stats().summary)
            return index
        index.close()
    if not has_manifest:
        logger.warning(
            "attribution index %s is missing and there is no corpus manifest at %s: "
            "verbatim spans will not be checked until one is built "
            "(python -m app.attribution build --manifest PATH --index %s)",
            target,
            manifest_path,
            target,
        )
        return AttributionIndex.open(target)
    logger.info(
        "attribution index %s is missing: building it from %s (one-time, about a minute)",
        target,
        manifest_path,
    )
    final = Path(target)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}.building-{os.getpid()}")
    for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        leftover.unlink(missing_ok=True)
    index = AttributionIndex.open(tmp)
    try:
        report = sync_manifest(index, manifest_path)
    finally:
        index.close()
    os.replace(tmp, final)
    index = AttributionIndex.open(final)
    logger.info(
        "attribution index %s built: %s. %s", final, report.describe(), index.stats().summary
    )
    return index

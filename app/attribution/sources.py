"""Where documents come from: the model's corpus manifest, plain folders, The Stack's files."""

from __future__ import annotations

import json
import logging
import os
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .core import LANGUAGES, IndexDocument

logger = logging.getLogger(__name__)

MAX_FOLDER_FILE_BYTES = 1_000_000
SKIP_DIRS = {".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv", "venv", ".tox"}
LICENSE_FILES = ("LICENSE", "LICENCE", "COPYING", "LICENSE.txt", "LICENSE.md", "COPYING.txt",
                 "LICENCE.txt", "LICENSE.rst")  # fmt: skip
STACK_COLUMNS = ("content", "max_stars_repo_name", "max_stars_repo_path",
                 "max_stars_repo_licenses", "lang")  # fmt: skip


@dataclass
class SourceSpec:
    """One source to index, with how many documents and bytes it holds (for the progress bar)."""

    label: str
    documents: Iterator[IndexDocument]
    count: int | None
    nbytes: int


# -- the model's corpus manifest ----------------------------------------------------------
def manifest_source(path: str | Path) -> SourceSpec:
    from corpus import iter_manifest_documents, read_manifest

    manifest = read_manifest(path)
    entries = manifest["documents"]

    def documents() -> Iterator[IndexDocument]:
        for d in iter_manifest_documents(path):
            yield IndexDocument(d.repo, d.path, d.license, d.text, split=d.split, sha256=d.sha256)

    return SourceSpec(
        f"manifest:{path}", documents(), len(entries), sum(e.get("bytes", 0) for e in entries)
    )


# -- plain folders ------------------------------------------------------------------------
_LICENSE_TEXTS = [
    ("GNU AFFERO GENERAL PUBLIC LICENSE", "AGPL-3.0"),
    ("GNU LESSER GENERAL PUBLIC LICENSE", "LGPL"),
    ("GNU LIBRARY GENERAL PUBLIC LICENSE", "LGPL-2.0"),
    ("GNU GENERAL PUBLIC LICENSE", "GPL"),
    ("Apache License", "Apache-2.0"),
    ("Mozilla Public License", "MPL-2.0"),
    ("PYTHON SOFTWARE FOUNDATION LICENSE", "PSF-2.0"),
    ("Permission is hereby granted, free of charge", "MIT"),
    ("The MIT License", "MIT"),
    ("Permission to use, copy, modify, and/or distribute this software", "ISC"),
    ("This is free and unencumbered software released into the public domain", "Unlicense"),
    ("Redistribution and use in source and binary forms", "BSD"),
]


def license_from_text(text: str) -> str | None:
    """SPDX-style id of a license file's text, for the common licenses; None if unknown."""
    head = " ".join(text[:20_000].split())
    upper = head.upper()
    for marker, spdx in _LICENSE_TEXTS:
        if marker.upper() not in upper:
            continue
        if spdx in ("GPL", "LGPL"):
            version = re.search(r"VERSION (\d)", upper)
            return f"{spdx}-{version.group(1)}.0" if version else spdx
        if spdx == "Apache-2.0" and "VERSION 2.0" not in upper:
            return "Apache"
        if spdx == "BSD":
            endorse = "ENDORSE OR PROMOTE" in upper or "NEITHER THE NAME" in upper
            return "BSD-3-Clause" if endorse else "BSD-2-Clause"
        return spdx
    return None


_CLASSIFIERS = {
    "MIT License": "MIT", "BSD License": "BSD-3-Clause", "Apache Software License": "Apache-2.0",
    "Python Software Foundation License": "PSF-2.0", "ISC License (ISCL)": "ISC",
    "Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0",
    "GNU General Public License v3 (GPLv3)": "GPL-3.0",
    "GNU General Public License v2 (GPLv2)": "GPL-2.0",
    "GNU Lesser General Public License v3 (LGPLv3)": "LGPL-3.0",
}  # fmt: skip


def license_from_metadata(text: str) -> str | None:
    """License of a METADATA / PKG-INFO file: License-Expression, License, or a classifier."""
    fields: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the body (long description) starts after the first blank line
        name, sep, value = line.partition(":")
        if sep:
            fields.setdefault(name.strip().lower(), []).append(value.strip())
    for name in ("license-expression", "license"):
        value = (fields.get(name) or [""])[0]
        if value and value.upper() != "UNKNOWN" and len(value) <= 60:
            return value
    for classifier in fields.get("classifier", []):
        if classifier.startswith("License :: "):
            return _CLASSIFIERS.get(classifier.split(" :: ")[-1], classifier.split(" :: ")[-1])
    return None


def license_from_pyproject(text: str) -> str | None:
    try:
        project = tomllib.loads(text).get("project", {})
    except tomllib.TOMLDecodeError:
        return None
    value = project.get("license-expression") or project.get("license")
    if isinstance(value, dict):
        if "text" in value:
            return license_from_text(value["text"]) or value["text"][:60]
        return None
    if isinstance(value, str) and value:
        return value
    for classifier in project.get("classifiers", []):
        if classifier.startswith("License :: "):
            return _CLASSIFIERS.get(classifier.split(" :: ")[-1])
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def detect_license(repo_dir: Path) -> str:
    """A repo folder's license: its LICENSE/COPYING file, else package metadata, else unknown."""
    for name in LICENSE_FILES:
        text = _read(repo_dir / name)
        if text and (spdx := license_from_text(text)):
            return spdx
    metadata = [repo_dir / "METADATA", repo_dir / "PKG-INFO"]
    metadata += sorted(repo_dir.glob("*.dist-info/METADATA")) + sorted(
        repo_dir.glob("*.egg-info/PKG-INFO")
    )
    for path in metadata:
        text = _read(path)
        if text and (spdx := license_from_metadata(text)):
            return spdx
    text = _read(repo_dir / "pyproject.toml")
    if text and (spdx := license_from_pyproject(text)):
        return spdx
    text = _read(repo_dir / "package.json")
    if text:
        try:
            value = json.loads(text).get("license")
        except (json.JSONDecodeError, AttributeError):
            value = None
        if isinstance(value, str) and value:
            return value
    return "unknown"


def _code_files(repo_dir: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(repo_dir):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(files):
            if Path(name).suffix.lower() in LANGUAGES:
                yield Path(root) / name


def folder_source(folder: str | Path) -> SourceSpec:
    """Each top-level folder of `folder` is a repo; its code files are the documents."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--folder {folder}: not a directory")
    repos = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = [(repo, f) for repo in repos for f in _code_files(repo)]
    sizes = {f: f.stat().st_size for _, f in files}

    def documents() -> Iterator[IndexDocument]:
        licenses: dict[Path, str] = {}
        for repo, file in files:
            if repo not in licenses:
                licenses[repo] = detect_license(repo)
                logger.info("folder repo %s: license %s", repo.name, licenses[repo])
            if sizes[file] > MAX_FOLDER_FILE_BYTES:
                logger.debug("skip %s: larger than %d bytes", file, MAX_FOLDER_FILE_BYTES)
                continue
            text = _read(file)
            if text is None:
                logger.debug("skip %s: not UTF-8", file)
                continue
            rel = file.relative_to(repo).as_posix()
            yield IndexDocument(repo.name, rel, licenses[repo], text)

    return SourceSpec(f"folder:{folder}", documents(), len(files), sum(sizes.values()))


# -- The Stack's schema -------------------------------------------------------------------
def _stack_document(row: dict, where: str) -> IndexDocument | None:
    missing = [c for c in STACK_COLUMNS if c not in row]
    if missing:
        raise ValueError(f"{where}: missing column(s) {', '.join(missing)} of The Stack's schema")
    text = row["content"]
    if not isinstance(text, str) or not text:
        return None
    licenses = row["max_stars_repo_licenses"]
    if isinstance(licenses, str):
        license_ = licenses
    else:
        license_ = " OR ".join(str(x) for x in (licenses or [])) or "unknown"
    return IndexDocument(
        str(row["max_stars_repo_name"]),
        str(row["max_stars_repo_path"]),
        license_,
        text,
        lang=str(row["lang"] or ""),
    )


def stack_source(path: str | Path) -> SourceSpec:
    """A parquet or jsonl file with The Stack's columns."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--stack {path}: no such file")
    name = path.name.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        count = parquet.metadata.num_rows
        absent = [c for c in STACK_COLUMNS if c not in parquet.schema_arrow.names]
        if absent:
            raise ValueError(f"{path}: missing column(s) {', '.join(absent)} of The Stack's schema")

        def documents() -> Iterator[IndexDocument]:
            for batch in parquet.iter_batches(batch_size=256, columns=list(STACK_COLUMNS)):
                for row in batch.to_pylist():
                    if doc := _stack_document(row, str(path)):
                        yield doc

    elif name.endswith((".jsonl", ".json")):
        with path.open("rb") as f:
            count = sum(1 for line in f if line.strip())

        def documents() -> Iterator[IndexDocument]:
            with path.open(encoding="utf-8") as f:
                for number, line in enumerate(f, 1):
                    if line.strip():
                        row = json.loads(line)
                        if doc := _stack_document(row, f"{path}:{number}"):
                            yield doc

    else:
        raise ValueError(f"--stack {path}: expected a .parquet or .jsonl file")
    return SourceSpec(f"stack:{path}", documents(), count, path.stat().st_size)

"""The training corpus of tiny-starcoder: permissively licensed Python found on this machine.

The corpus is the CPython standard library (PSF-2.0), optionally plus installed distributions
whose own metadata declares a permissive license. Every document carries its repo, path,
license and sha256, and the corpus manifest (written beside the checkpoint) lists exactly the
files the model saw, so the attribution index can be rebuilt from it on any machine with the
same Python and packages.

Shared by training (what the model reads) and the attribution index (what a generation is
checked against), so it belongs to neither. It must not import torch: the web imports it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import re
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

logger = logging.getLogger(__name__)

MANIFEST_VERSION = 1
MANIFEST_NAME = "corpus_manifest.json"  # beside the checkpoint it describes
STDLIB_REPO = "cpython-stdlib"
STDLIB_LICENSE = "PSF-2.0"

# Directories of generated tables or test data rather than code people write. A model that
# sees encodings/ learns to emit "0x0x0x...".
EXCLUDED_STDLIB_DIRS = (
    "site-packages/",
    "encodings/",
    "lib2to3/tests/data/",
    "test/encoded_modules/",
    "test/tokenizedata/",
    "test/test_lib2to3/data/",
    "test/cjkencodings/",
    "test/decimaltestdata/",
    "test/xmltestdata/",
    "idlelib/idle_test/",
    "__pycache__/",
)
# Single files that are generated tables or huge string literals.
EXCLUDED_STDLIB_FILES = (
    "pydoc_data/topics.py",
    "html/entities.py",
    "stringprep.py",
    "unicodedata.py",
    "_aix_support.py",
    "keyword.py",
    "token.py",
    "sre_constants.py",
    "test/test_unicodedata.py",
    "test/test_ucn.py",
    "test/test_codecmaps_cn.py",
    "test/test_codecmaps_hk.py",
    "test/test_codecmaps_jp.py",
    "test/test_codecmaps_kr.py",
    "test/test_codecmaps_tw.py",
    "test/test_normalization.py",
    "test/test_zipfile64.py",
    "test/test_pep3131.py",
    "test/bad_coding.py",
    "test/bad_coding2.py",
    "test/badsyntax_3131.py",
)
PERMISSIVE_LICENSES = {
    "MIT": "MIT",
    "MIT LICENSE": "MIT",
    "BSD": "BSD-3-Clause",
    "BSD LICENSE": "BSD-3-Clause",
    "BSD-2-CLAUSE": "BSD-2-Clause",
    "BSD-3-CLAUSE": "BSD-3-Clause",
    "NEW BSD": "BSD-3-Clause",
    "APACHE-2.0": "Apache-2.0",
    "APACHE 2.0": "Apache-2.0",
    "APACHE LICENSE 2.0": "Apache-2.0",
    "APACHE SOFTWARE LICENSE": "Apache-2.0",
    "APACHE LICENSE, VERSION 2.0": "Apache-2.0",
    "PSF-2.0": "PSF-2.0",
}
CLASSIFIER_LICENSES = {
    "License :: OSI Approved :: MIT License": "MIT",
    "License :: OSI Approved :: BSD License": "BSD-3-Clause",
    "License :: OSI Approved :: Apache Software License": "Apache-2.0",
}

MAX_FILE_BYTES = 300_000
MAX_LINE_CHARS = 1_000
MAX_MEAN_LINE_CHARS = 100
MAX_DIGIT_SHARE = 0.15
MAX_ESCAPE_SHARE = 0.12
_HEX_OR_NUMBER = re.compile(r"0x[0-9a-fA-F]+|\b\d+\b")
_ESCAPE = re.compile(r"\\[xuU][0-9a-fA-F]{2,8}")


@dataclass(frozen=True)
class Repo:
    """One repository of the corpus: the stdlib or one installed distribution."""

    repo: str
    version: str
    license: str
    root_kind: str  # "stdlib" | "site-packages"


@dataclass(frozen=True)
class Document:
    """One file of the corpus with its text."""

    repo: str
    path: str
    license: str
    sha256: str
    text: str
    split: str  # "train" | "heldout"

    @property
    def bytes(self) -> int:
        return len(self.text.encode("utf-8"))


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split_for(repo: str, path: str, heldout_percent: float) -> str:
    """Deterministic file-level split: a file is held out by the hash of its name."""
    digest = hashlib.sha256(f"{repo}/{path}".encode()).digest()
    bucket = int.from_bytes(digest[:4], "big") % 10_000
    return "heldout" if bucket < heldout_percent * 100 else "train"


def looks_generated(text: str) -> str | None:
    """Return why a file looks like a generated table (not code people write), else None."""
    n = len(text.encode("utf-8"))
    if n == 0:
        return "empty"
    if n > MAX_FILE_BYTES:
        return f"larger than {MAX_FILE_BYTES} bytes"
    lines = text.splitlines() or [""]
    if max(len(line) for line in lines) > MAX_LINE_CHARS:
        return f"a line longer than {MAX_LINE_CHARS} characters"
    if len(text) / len(lines) > MAX_MEAN_LINE_CHARS:
        return f"mean line longer than {MAX_MEAN_LINE_CHARS} characters"
    numeric = sum(len(m) for m in _HEX_OR_NUMBER.findall(text))
    if numeric / len(text) > MAX_DIGIT_SHARE:
        return f"more than {MAX_DIGIT_SHARE:.0%} numeric literals"
    escaped = sum(len(m) for m in _ESCAPE.findall(text))
    if escaped / len(text) > MAX_ESCAPE_SHARE:
        return f"more than {MAX_ESCAPE_SHARE:.0%} escaped byte literals"
    if "\x00" in text or "\x0c" * 3 in text:
        return "control characters"
    return None


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_repo() -> Repo:
    import platform

    return Repo(STDLIB_REPO, platform.python_version(), STDLIB_LICENSE, "stdlib")


def _read_utf8(path: Path) -> str | None:
    try:
        data = path.read_bytes()
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def iter_stdlib_files() -> Iterator[tuple[str, Path]]:
    root = stdlib_root()
    for file in sorted(root.rglob("*.py")):
        rel = file.relative_to(root).as_posix()
        if any(rel.startswith(d) or f"/{d}" in f"/{rel}" for d in EXCLUDED_STDLIB_DIRS):
            continue
        if rel in EXCLUDED_STDLIB_FILES:
            continue
        yield rel, file


def permissive_license(dist: importlib.metadata.Distribution) -> str | None:
    """The SPDX id of a distribution's license if its own metadata says it is permissive."""
    meta = dist.metadata
    candidates = [meta.get("License-Expression") or "", (meta.get("License") or "")[:40]]
    for value in candidates:
        key = value.strip().upper()
        if key in PERMISSIVE_LICENSES:
            return PERMISSIVE_LICENSES[key]
    for classifier in meta.get_all("Classifier") or []:
        if classifier in CLASSIFIER_LICENSES:
            return CLASSIFIER_LICENSES[classifier]
    return None


def package_repo(name: str) -> tuple[Repo, importlib.metadata.Distribution] | None:
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        logger.warning("package %s is not installed; skipped", name)
        return None
    spdx = permissive_license(dist)
    if spdx is None:
        logger.warning("package %s has no permissive license in its metadata; skipped", name)
        return None
    return Repo(dist.metadata["Name"], dist.version, spdx, "site-packages"), dist


def iter_package_files(dist: importlib.metadata.Distribution) -> Iterator[tuple[str, Path]]:
    for entry in sorted(dist.files or [], key=str):
        rel = PurePosixPath(str(entry)).as_posix()
        if not rel.endswith(".py") or rel.startswith("..") or "__pycache__" in rel:
            continue
        yield rel, Path(dist.locate_file(entry))


def build_corpus(
    packages: Iterable[str] = (), heldout_percent: float = 3.0
) -> tuple[list[Repo], list[Document]]:
    """Collect the corpus from this machine: the stdlib, then the permissive packages named."""
    repos = [stdlib_repo()]
    documents: list[Document] = []
    groups: list[tuple[Repo, Iterator[tuple[str, Path]]]] = [(repos[0], iter_stdlib_files())]
    for name in packages:
        found = package_repo(name)
        if found:
            repos.append(found[0])
            groups.append((found[0], iter_package_files(found[1])))
    skipped = 0
    seen: set[str] = set()
    for repo, files in groups:
        for rel, file in files:
            text = _read_utf8(file)
            reason = "not UTF-8" if text is None else looks_generated(text)
            if text is None or reason:
                logger.debug("skip %s/%s: %s", repo.repo, rel, reason)
                skipped += 1
                continue
            digest = sha256_text(text)
            if digest in seen:  # exact duplicates would leak across the split
                skipped += 1
                continue
            seen.add(digest)
            split = split_for(repo.repo, rel, heldout_percent)
            documents.append(Document(repo.repo, rel, repo.license, digest, text, split))
    logger.info("corpus: %d documents kept, %d skipped", len(documents), skipped)
    return repos, documents


def write_manifest(path: str | Path, repos: list[Repo], documents: list[Document]) -> None:
    manifest = {
        "version": MANIFEST_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "repos": [
            {"repo": s.repo, "version": s.version, "license": s.license, "root_kind": s.root_kind}
            for s in repos
        ],
        "documents": [
            {
                "repo": d.repo,
                "path": d.path,
                "license": d.license,
                "sha256": d.sha256,
                "bytes": d.bytes,
                "split": d.split,
            }
            for d in documents
        ],
    }
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


def read_manifest(path: str | Path) -> dict:
    manifest = json.loads(Path(path).read_text(encoding="utf-8"))
    if manifest.get("version") != MANIFEST_VERSION:
        raise ValueError(
            f"corpus manifest {path}: version must be {MANIFEST_VERSION}, "
            f"got {manifest.get('version')!r}"
        )
    return manifest


def _repo_roots(manifest: dict) -> dict[str, Path | importlib.metadata.Distribution | None]:
    roots: dict[str, Path | importlib.metadata.Distribution | None] = {}
    for repo in manifest["repos"]:
        if repo["root_kind"] == "stdlib":
            roots[repo["repo"]] = stdlib_root()
            continue
        try:
            roots[repo["repo"]] = importlib.metadata.distribution(repo["repo"])
        except importlib.metadata.PackageNotFoundError:
            logger.warning("corpus repo %s is not installed; its files are skipped", repo["repo"])
            roots[repo["repo"]] = None
    return roots


def iter_manifest_documents(
    manifest_path: str | Path, split: str | None = None
) -> Iterator[Document]:
    """Yield the manifest's documents resolved on this machine.

    A file that is missing, or whose sha256 differs from the manifest's, is skipped with a
    warning, so the caller only ever sees exactly the text the model was trained on.
    `split` ("train" or "heldout") keeps only that split.
    """
    manifest = read_manifest(manifest_path)
    roots = _repo_roots(manifest)
    for entry in manifest["documents"]:
        if split is not None and entry["split"] != split:
            continue
        root = roots.get(entry["repo"])
        if root is None:
            continue
        if isinstance(root, Path):
            file = root / entry["path"]
        else:
            file = Path(root.locate_file(entry["path"]))
        text = _read_utf8(file)
        if text is None:
            logger.warning("corpus file %s/%s is missing; skipped", entry["repo"], entry["path"])
            continue
        if sha256_text(text) != entry["sha256"]:
            logger.warning(
                "corpus file %s/%s differs from the manifest (sha256); skipped",
                entry["repo"],
                entry["path"],
            )
            continue
        yield Document(
            entry["repo"], entry["path"], entry["license"], entry["sha256"], text, entry["split"]
        )

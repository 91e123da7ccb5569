"""The tiny-starcoder corpus: filtering, file-level split, manifest contract. No torch here."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

import corpus
from model.registry import TINY_STARCODER_MANIFEST as CHECKPOINT_MANIFEST

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built():
    return corpus.build_corpus()


def test_generated_tables_are_rejected_and_code_is_kept():
    table = "TABLE = (\n" + "".join(f"    0x{i:04x}, 0x{i * 7:04x},\n" for i in range(400)) + ")\n"
    escapes = "DATA = (\n" + "".join(f"    b'\\x{i:02x}\\x{i:02x}\\x{i:02x}'\n" for i in range(256))
    code = (REPO / "corpus.py").read_text()
    assert corpus.looks_generated(table)
    assert corpus.looks_generated(escapes + ")\n")
    assert corpus.looks_generated("x = '" + "a" * 5000 + "'\n")
    assert corpus.looks_generated("") == "empty"
    assert corpus.looks_generated(code) is None


def test_stdlib_corpus_excludes_tables_and_holds_out_whole_files(built):
    repos, docs = built
    assert repos[0].repo == "cpython-stdlib" and repos[0].license == "PSF-2.0"
    paths = {d.path for d in docs}
    assert "os.py" in paths and "json/decoder.py" in paths
    assert not any(p.startswith("encodings/") for p in paths)
    assert "pydoc_data/topics.py" not in paths
    splits = {d.split for d in docs}
    assert splits == {"train", "heldout"}
    heldout = sum(d.split == "heldout" for d in docs) / len(docs)
    assert 0.01 < heldout < 0.06
    # Split by file: the same name always lands on the same side.
    for d in docs[:50]:
        assert corpus.split_for(d.repo, d.path, 3.0) == d.split
    assert len({d.sha256 for d in docs}) == len(docs)


def test_manifest_roundtrip_skips_changed_files(built, tmp_path, caplog):
    repos, docs = built
    some = [d for d in docs if d.path in ("os.py", "json/decoder.py", "textwrap.py")]
    assert len(some) == 3
    path = tmp_path / "corpus_manifest.json"
    corpus.write_manifest(path, repos, some)
    manifest = json.loads(path.read_text())
    assert manifest["version"] == 1 and manifest["created"]
    assert set(manifest["repos"][0]) == {"repo", "version", "license", "root_kind"}
    assert set(manifest["documents"][0]) == {"repo", "path", "license", "sha256", "bytes", "split"}
    # Tamper with one hash: that file must be skipped with a warning.
    manifest["documents"][0]["sha256"] = "0" * 64
    path.write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING, logger="corpus"):
        got = list(corpus.iter_manifest_documents(path))
    assert [d.path for d in got] == [d["path"] for d in manifest["documents"][1:]]
    assert any("differs" in r.message for r in caplog.records)
    by_path = {d.path: d for d in some}
    for d in got:
        assert d.text == by_path[d.path].text
        assert d.sha256 == corpus.sha256_text(d.text)


def test_manifest_rejects_unknown_version(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"version": 2, "repos": [], "documents": []}))
    with pytest.raises(ValueError, match="version must be 1"):
        list(corpus.iter_manifest_documents(path))


def test_permissive_license_is_read_from_package_metadata():
    class Meta(dict):
        def get_all(self, key):
            return self.get(key + "s")

    class Dist:
        def __init__(self, meta):
            self.metadata = Meta(meta)

    assert corpus.permissive_license(Dist({"License-Expression": "MIT"})) == "MIT"
    classifiers = ["License :: OSI Approved :: Apache Software License"]
    assert corpus.permissive_license(Dist({"Classifiers": classifiers})) == "Apache-2.0"
    assert corpus.permissive_license(Dist({"License": "GPL-3.0-only"})) is None


def test_corpus_module_does_not_import_torch():
    code = "import sys, corpus; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_committed_manifest_resolves_on_this_machine():
    manifest = json.loads(CHECKPOINT_MANIFEST.read_text())
    docs = list(corpus.iter_manifest_documents(CHECKPOINT_MANIFEST))
    assert len(docs) >= 0.99 * len(manifest["documents"])
    assert {d.split for d in docs} == {"train", "heldout"}

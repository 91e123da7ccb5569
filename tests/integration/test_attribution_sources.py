"""Attribution sources (folders, The Stack's files, the model manifest), the CLI, the first-start
build and the HTML rendering."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from app.attribution import AttributionIndex, build, ensure_default_index
from app.attribution.render import search_results_html, sources_html
from app.attribution.sources import (
    detect_license,
    folder_source,
    license_from_text,
    stack_source,
)
from app.web.handlers import Handlers
from tests.integration.test_attribution import drop_index, open_index, write_corpus_manifest

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
ROOT = Path(__file__).resolve().parents[2]

MIT = """MIT License

Copyright (c) 2024 Ada

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction...
"""
BSD3 = """Copyright (c) 2020, Bob
Redistribution and use in source and binary forms, with or without
modification, are permitted provided that the following conditions are met:
3. Neither the name of the copyright holder nor the names of its contributors
may be used to endorse or promote products derived from this software.
"""
GPL3 = "GNU GENERAL PUBLIC LICENSE\nVersion 3, 29 June 2007\n"

# Three made-up files long enough to hold several 50-character segments.
ORBIT = '''"""Orbital mechanics helpers for the toy simulator."""

import math


def hohmann_delta_v(mu, r1, r2):
    """Total delta-v of a Hohmann transfer between circular orbits r1 and r2."""
    a = (r1 + r2) / 2
    dv1 = math.sqrt(mu / r1) * (math.sqrt(r2 / a) - 1)
    dv2 = math.sqrt(mu / r2) * (1 - math.sqrt(r1 / a))
    return abs(dv1) + abs(dv2)
'''
PARSER = """// Tokenizer for the calculator language.
export function tokenize(source) {
  const tokens = [];
  for (const match of source.matchAll(/\\s*(\\d+\\.?\\d*|[-+*\\/()])/g)) {
    tokens.push({ kind: /\\d/.test(match[1]) ? "number" : "op", text: match[1] });
  }
  return tokens;
}
"""
STACK_ROWS = [
    {"content": ORBIT, "max_stars_repo_name": "nasa/toysim", "max_stars_repo_path": "sim/orbit.py",
     "max_stars_repo_licenses": ["MIT", "Apache-2.0"], "lang": "Python"},
    {"content": PARSER, "max_stars_repo_name": "calc/lang", "max_stars_repo_path": "src/tok.js",
     "max_stars_repo_licenses": ["BSD-3-Clause"], "lang": "JavaScript"},
]  # fmt: skip


def test_license_detection_from_text_and_metadata(tmp_path):
    assert license_from_text(MIT) == "MIT"
    assert license_from_text(BSD3) == "BSD-3-Clause"
    assert license_from_text(GPL3) == "GPL-3.0"
    assert license_from_text("Apache License\nVersion 2.0, January 2004") == "Apache-2.0"
    assert license_from_text("PYTHON SOFTWARE FOUNDATION LICENSE VERSION 2") == "PSF-2.0"
    assert license_from_text("all rights reserved") is None
    repo = tmp_path / "pkg"
    (repo / "pkg-1.0.dist-info").mkdir(parents=True)
    (repo / "pkg-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: pkg\nClassifier: License :: OSI Approved :: MIT License\n"
    )
    assert detect_license(repo) == "MIT"
    other = tmp_path / "other"
    other.mkdir()
    (other / "pyproject.toml").write_text('[project]\nname = "o"\nlicense = "Apache-2.0"\n')
    assert detect_license(other) == "Apache-2.0"
    none = tmp_path / "none"
    none.mkdir()
    assert detect_license(none) == "unknown"


@pytest.mark.parametrize("backend", BACKENDS)
def test_folder_and_stack_files_index_correctly(backend, tmp_path, request):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folders = tmp_path / "src"
    (folders / "orbits" / "sim").mkdir(parents=True)
    (folders / "orbits" / "LICENSE").write_text(GPL3)
    (folders / "orbits" / "sim" / "orbit.py").write_text(ORBIT)
    (folders / "orbits" / "node_modules").mkdir()
    (folders / "orbits" / "node_modules" / "skip.js").write_text(PARSER)
    parquet = tmp_path / "stack.parquet"
    pq.write_table(pa.Table.from_pylist(STACK_ROWS[:1]), parquet)
    jsonl = tmp_path / "stack.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in STACK_ROWS[1:]) + "\n")

    pg_url = request.getfixturevalue("pg_url") if backend == "postgresql" else None
    index = open_index(backend, tmp_path, pg_url)
    try:
        report = build(
            index,
            [folder_source(folders), stack_source(parquet), stack_source(jsonl)],
            show_progress=False,
        )
        # ORBIT is in the folder and the parquet file: stored once (dedup by content hash).
        assert (report.added, report.duplicates) == (2, 1)

        tokenizer = PARSER[PARSER.index("export") :].strip()
        spans = index.attribute("// mine\n" + tokenizer + "\n")
        assert len(spans) == 1 and spans[0].text == tokenizer
        assert spans[0].sources[0].to_dict() == {
            "repo": "calc/lang",
            "path": "src/tok.js",
            "license": "BSD-3-Clause",
            "start_line": 2,
            "end_line": 2 + tokenizer.count("\n"),
        }
        orbit = index.attribute(ORBIT[ORBIT.index("def ") :])[0].sources[0]
        assert (orbit.repo, orbit.path, orbit.license) == ("orbits", "sim/orbit.py", "GPL-3.0")

        hits = index.search("tokenize tokens", lang="javascript")
        assert [(h.repo, h.path, h.license) for h in hits] == [
            ("calc/lang", "src/tok.js", "BSD-3-Clause")
        ]
        assert index.search("hohmann", license="gpl-3.0")[0].start_line == 6
        assert index.search("hohmann", lang="JavaScript") == []
        assert index.stats().documents == 2
    finally:
        drop_index(index)


def test_stack_file_missing_a_column_is_refused(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"content": "x", "lang": "Python"}) + "\n")
    with pytest.raises(ValueError, match="max_stars_repo_name"):
        list(stack_source(bad).documents)


def test_ensure_default_index_builds_once_and_logs(tmp_path, caplog):
    manifest = tmp_path / "corpus_manifest.json"
    docs = write_corpus_manifest(manifest)
    path = tmp_path / "data" / "index.sqlite"
    with caplog.at_level(logging.INFO, logger="app.attribution"):
        index = ensure_default_index(path, manifest)
    assert "building it from" in caplog.text
    assert path.exists() and not list(path.parent.glob("*.building-*"))
    assert index.stats().documents == len(docs)
    assert "training corpus of tiny-starcoder" in index.stats().summary
    index.close()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="app.attribution"):
        again = ensure_default_index(path, manifest)
    assert "building" not in caplog.text and "changed" not in caplog.text
    assert again.stats().documents == len(docs)
    again.close()

    # The model was retrained on fewer files: the index follows its manifest.
    from corpus import stdlib_repo, write_manifest

    dropped = next(d for d in docs if d.path == "heapq.py")
    write_manifest(manifest, [stdlib_repo()], [d for d in docs if d is not dropped])
    with caplog.at_level(logging.INFO, logger="app.attribution"):
        updated = ensure_default_index(path, manifest)
    assert "changed; updating" in caplog.text
    assert updated.stats().documents == len(docs) - 1
    assert updated.attribute(dropped.text[2000:2400]) == []
    assert "heapq.py" not in {h.path for h in updated.search("heapify", exact=True)}
    updated.close()

    missing = ensure_default_index(tmp_path / "none.sqlite", tmp_path / "no-manifest.json")
    assert missing.attribute(docs[0].text[:300]) == []
    assert "empty" in missing.stats().summary


def test_cli_build_search_attribute_stats(tmp_path):
    manifest = tmp_path / "corpus_manifest.json"
    docs = write_corpus_manifest(manifest)
    index = tmp_path / "cli.sqlite"

    def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "app.attribution", *args],
            cwd=ROOT,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )

    built = cli("build", "--manifest", str(manifest), "--index", str(index))
    assert built.returncode == 0, built.stderr
    assert f"added {len(docs)} documents" in built.stdout
    assert f"{len(docs):,} files" in built.stdout and "Bloom filter" in built.stdout
    assert "doc/s" in built.stderr or "doc" in built.stderr  # the progress bar
    again = cli("build", "--manifest", str(manifest), "--index", str(index))
    assert "added 0 documents" in again.stdout and f"{len(docs)} unchanged" in again.stdout

    found = cli("search", "--index", str(index), "--json", "heapify", "--repo", "cpython-stdlib")
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)[0]["path"] == "heapq.py"
    hostile = cli("search", "--index", str(index), 'NEAR("(( -x*')
    assert hostile.returncode == 0, hostile.stderr

    heapq = next(d for d in docs if d.path == "heapq.py").text
    spans = cli("attribute", "--index", str(index), "--json", stdin=heapq[1000:1400])
    assert json.loads(spans.stdout)[0]["sources"][0]["path"] == "heapq.py"

    stats = cli("stats", "--index", str(index), "--json")
    assert json.loads(stats.stdout)["documents"] == len(docs)
    assert cli("stats", "--index", str(tmp_path / "nope.sqlite")).returncode == 1
    help_text = cli("build", "--help").stdout
    for option in ("--manifest", "--folder", "--stack", "--index", "--description"):
        assert option in help_text


def test_cli_defaults_come_from_the_apps_settings(tmp_path, monkeypatch, capsys):
    """INDEX_URL, CORPUS_MANIFEST and DATA_DIR mean to the CLI what they mean to the app."""
    from app.attribution.__main__ import main

    manifest = tmp_path / "corpus_manifest.json"
    docs = write_corpus_manifest(manifest)
    index = tmp_path / "named-by-env" / "index.sqlite"
    monkeypatch.setenv("INDEX_URL", str(index))
    monkeypatch.setenv("CORPUS_MANIFEST", str(manifest))
    assert main(["build", "--no-progress"]) == 0  # no source given: CORPUS_MANIFEST
    assert f"added {len(docs)} documents" in capsys.readouterr().out
    assert AttributionIndex.open(index).stats().documents == len(docs)
    assert main(["search", "--json", "heapify"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["path"] == "heapq.py"

    monkeypatch.delenv("INDEX_URL")
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    assert main(["stats"]) == 1  # DATA_DIR's default index, not yet built
    assert str(tmp_path / "data" / "attribution" / "index.sqlite") in capsys.readouterr().err


def test_rendering_escapes_and_marks_spans(tmp_path):
    index = AttributionIndex.open(tmp_path / "r.sqlite")
    index.add_documents(
        [
            __import__("app.attribution", fromlist=["IndexDocument"]).IndexDocument(
                "evil/<repo>", "a&b.py", "MIT <x>", "x = '<script>alert(1)</script>' " * 8
            )
        ]
    )
    text = "<b>hi</b>\n" + "x = '<script>alert(1)</script>' " * 4 + "& done"
    spans = index.attribute(text)
    assert len(spans) == 1
    html = Handlers.code_html("completion", text, "text", (0, 0), [spans[0].to_dict()])
    assert "<script>" not in html and "&lt;b&gt;hi&lt;/b&gt;" in html
    assert html.count('<mark class="attr-span"') == 1
    assert 'title="Verbatim from evil/&lt;repo&gt;/a&amp;b.py (MIT &lt;x&gt;)"' in html
    assert "&amp; done" in html
    panel = sources_html(spans)
    assert "MIT &lt;x&gt;" in panel and "<script>" not in panel and "1 verbatim span" in panel
    assert "No verbatim" in sources_html([])
    hits = index.search("script alert")
    results = search_results_html(hits)
    assert hits and "<mark>script</mark>" in results and "<script>" not in results
    assert "No results" in search_results_html([])

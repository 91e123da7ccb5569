"""Attribution index: membership check and full-text search, on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from app.attribution import WINDOW, AttributionIndex, build
from app.attribution.sources import manifest_source
from corpus import (
    STDLIB_LICENSE,
    STDLIB_REPO,
    Document,
    sha256_text,
    split_for,
    stdlib_repo,
    stdlib_root,
    write_manifest,
)
from model.errors import PlaygroundError

# -- a small real corpus: stdlib files in a manifest written as corpus.py writes the
# model's own (paths relative to the stdlib root) -------------------------------------------
CORPUS_FILES = (
    "textwrap.py", "heapq.py", "bisect.py", "fnmatch.py", "glob.py", "queue.py", "sched.py",
    "colorsys.py", "shlex.py", "json/decoder.py", "json/encoder.py", "json/__init__.py",
    "string.py", "graphlib.py", "contextvars.py", "keyword.py", "calendar.py",
)  # fmt: skip


def corpus_documents() -> list[Document]:
    docs = []
    for rel in CORPUS_FILES:
        path = stdlib_root() / rel
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        docs.append(
            Document(
                STDLIB_REPO,
                rel,
                STDLIB_LICENSE,
                sha256_text(text),
                text,
                split_for(STDLIB_REPO, rel, 3.0),
            )
        )
    return docs


def write_corpus_manifest(path: Path) -> list[Document]:
    docs = corpus_documents()
    write_manifest(path, [stdlib_repo()], docs)
    return docs


def open_index(backend: str, tmp_dir: Path, pg_url: str | None) -> AttributionIndex:
    """An empty index on `backend`; PostgreSQL ones get a schema of their own."""
    if backend == "sqlite":
        return AttributionIndex.open(tmp_dir / "index.sqlite")
    schema = f"attr_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    return AttributionIndex.open(pg_url, schema=schema)


def drop_index(index: AttributionIndex) -> None:
    store = index._store
    if hasattr(store, "drop"):
        store.drop()
    else:
        index.close()


def build_from_manifest(index: AttributionIndex, manifest: Path):
    return build(index, [manifest_source(manifest)], show_progress=False)


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]

FRESH = '''def tally_zebra_crossings(frames, *, min_gap=3):
    """Count zebra crossings seen in dashcam frames, merging nearby detections."""
    seen, last = 0, -min_gap
    for index, frame in enumerate(frames):
        if frame.get("zebra") and index - last >= min_gap:
            seen += 1
            last = index
    return seen
'''


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    manifest = tmp_path_factory.mktemp("corpus") / "corpus_manifest.json"
    docs = write_corpus_manifest(manifest)
    return manifest, {d.path: d for d in docs}


@pytest.fixture(scope="module", params=BACKENDS)
def index(request, corpus, tmp_path_factory):
    pg_url = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    idx = open_index(request.param, tmp_path_factory.mktemp("index"), pg_url)
    build_from_manifest(idx, corpus[0])
    yield idx
    drop_index(idx)


def line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def maximal_run(text: str, start: int, end: int, doc: str, dstart: int) -> tuple[int, int]:
    """The exact verbatim extent around text[start:end] == doc[dstart:...], computed naively."""
    s, d = start, dstart
    while s > 0 and d > 0 and text[s - 1] == doc[d - 1]:
        s, d = s - 1, d - 1
    e, de = end, dstart + (end - start)
    while e < len(text) and de < len(doc) and text[e] == doc[de]:
        e, de = e + 1, de + 1
    while text[s].isspace():  # spans never start or end with whitespace
        s += 1
    while text[e - 1].isspace():
        e -= 1
    return s, e


def snippet(doc: str, first_line: int, min_chars: int) -> tuple[int, str]:
    """(offset, text) of whole lines from `first_line` on, at least `min_chars` long."""
    lines = doc.splitlines(keepends=True)
    start = sum(len(x) for x in lines[: first_line - 1])
    end = start
    for line in lines[first_line - 1 :]:
        end += len(line)
        if end - start >= min_chars:
            break
    return start, doc[start:end]


def test_verbatim_snippet_is_found_with_repo_path_lines_license(index, corpus):
    doc = corpus[1]["textwrap.py"].text
    offset, verbatim = snippet(doc, 120, 240)
    assert len(verbatim) >= 200
    prefix = "# my helper, written today\nresult = wrap_it(zq)  # ok?\n"
    text = prefix + verbatim + "print('done with all of it, finally')\n"

    spans = index.attribute(text)

    assert len(spans) == 1
    span = spans[0]
    start, end = maximal_run(text, len(prefix), len(prefix) + len(verbatim), doc, offset)
    assert (span.start, span.end) == (start, end)
    assert span.text == text[start:end]
    assert verbatim.strip() in span.text
    src = span.sources[0]
    doc_start = offset - (len(prefix) - start)
    assert (src.repo, src.path, src.license) == ("cpython-stdlib", "textwrap.py", "PSF-2.0")
    assert src.start_line == line_of(doc, doc_start)
    assert src.end_line == line_of(doc, doc_start + len(span.text) - 1)
    # A click on the span searches for it: the exact-phrase search finds the same file.
    assert ("cpython-stdlib", "textwrap.py", src.start_line) in {
        (h.repo, h.path, h.start_line) for h in index.search(span.search_text(), exact=True)
    }
    assert span.to_dict() == {
        "start": start,
        "end": end,
        "text": span.text,
        "sources": [
            {
                "repo": "cpython-stdlib",
                "path": "textwrap.py",
                "license": "PSF-2.0",
                "start_line": src.start_line,
                "end_line": src.end_line,
            }
        ],
    }


def test_fresh_text_gets_no_spans(index):
    assert index.attribute(FRESH * 3) == []
    assert index.attribute("") == []
    assert index.attribute("x" * 49) == []


def test_mixed_text_gets_exactly_the_verbatim_parts(index, corpus):
    heapq = corpus[1]["heapq.py"].text
    bisect = corpus[1]["bisect.py"].text
    off1 = heapq.index("def heappush(")
    part1 = heapq[off1 : off1 + 230]
    off2 = bisect.index("def insort_right(")
    part2 = bisect[off2 : off2 + 180]
    text = FRESH + "\n\n" + part1 + "\n# now something of my own\n" + FRESH + part2 + "\n" + FRESH

    spans = index.attribute(text)

    assert [s.sources[0].path for s in spans] == ["heapq.py", "bisect.py"]
    expected = []
    for part, doc, off in ((part1, heapq, off1), (part2, bisect, off2)):
        pos = text.index(part)
        expected.append(maximal_run(text, pos, pos + len(part), doc, off))
    assert [(s.start, s.end) for s in spans] == expected
    for span, part in zip(spans, (part1, part2), strict=True):
        assert part.strip() in span.text
        assert len(span.text) - len(part.strip()) <= 2  # at most shared characters at the seams
        assert "zebra" not in span.text


def test_spans_chain_across_window_boundaries(index, corpus):
    doc = corpus[1]["json/decoder.py"].text
    # Unaligned start, several windows long: one span, not one per 50-character window.
    off = doc.index("class JSONDecoder") + 7
    verbatim = doc[off : off + 5 * WINDOW + 17]
    text = "@@@ " + verbatim + " @@@"
    spans = index.attribute(text)
    assert len(spans) == 1
    assert spans[0].text == verbatim
    assert (spans[0].start, spans[0].end) == (4, 4 + len(verbatim))


def test_adjacent_copies_from_different_places_stay_separate_spans(index, corpus):
    doc = corpus[1]["textwrap.py"].text
    a = doc.index("def dedent(")
    b = doc.index("def indent(")
    first, second = doc[a : a + 150], doc[b : b + 150]
    spans = index.attribute(first + second)
    assert [(s.start, s.end) for s in spans] == [(0, 150), (150, 300)]
    assert spans[0].sources[0].start_line == line_of(doc, a)
    assert spans[1].sources[0].start_line == line_of(doc, b)


def test_short_copies_are_noise_not_spans(index, corpus):
    doc = corpus[1]["textwrap.py"].text
    a = doc.index("def dedent(")
    assert index.attribute("zz " + doc[a : a + WINDOW - 3] + " zz") == []


def test_attribute_rejects_huge_text_naming_the_field(index):
    with pytest.raises(PlaygroundError) as err:
        index.attribute("x" * 300_000)
    assert err.value.field == "text" and "300000" in str(err.value)


def test_search_ranks_relevant_chunk_with_line_and_snippet(index, corpus):
    hits = index.search("dedent common leading whitespace")
    assert hits, "BM25 search found nothing"
    top = hits[0]
    assert (top.repo, top.path, top.license) == ("cpython-stdlib", "textwrap.py", "PSF-2.0")
    doc_lines = corpus[1]["textwrap.py"].text.splitlines()
    assert top.snippet.splitlines()[0] == doc_lines[top.start_line - 1][:240]
    assert any(top.snippet[s:e].lower() == "dedent" for s, e in top.highlights)
    assert set(top.to_dict()) == {"repo", "path", "license", "start_line", "snippet", "score"}
    assert top.score >= hits[-1].score


def test_search_exact_phrase_is_case_sensitive_and_located(index, corpus):
    doc = corpus[1]["heapq.py"].text
    phrase = "def heapify(x):"
    hits = index.search(phrase, exact=True)
    assert [h.path for h in hits] == ["heapq.py"]
    assert hits[0].start_line == line_of(doc, doc.index(phrase))
    s, e = hits[0].highlights[0]
    assert hits[0].snippet[s:e] == phrase
    assert index.search(phrase.upper(), exact=True) == []


def test_search_filters_and_paging(index):
    page1 = index.search("def return", page_size=3)
    page2 = index.search("def return", page=2, page_size=3)
    assert len(page1) == 3 and len(page2) == 3
    key = lambda h: (h.path, h.start_line)  # noqa: E731
    assert not {key(h) for h in page1} & {key(h) for h in page2}
    assert all(h.license == "PSF-2.0" for h in index.search("def", license="psf-2.0"))
    assert index.search("def", license="MIT") == []
    assert index.search("def", lang="python")
    assert index.search("def", lang="Rust") == []
    assert index.search("def", repo="someone/else") == []
    assert index.search("heapify", repo="cpython-stdlib")[0].path == "heapq.py"


HOSTILE = [
    '"', '""', '"""', "'", "''", "AND", "OR", "NOT", "NEAR", "NEAR(def class, 2)",
    "def AND OR class", "def OR", "AND def", "*", "def*", "*def", "-", "-def", "--",
    "(((", ")))", "(def", "def)", "((def) OR", "a:b", "text:def", "text : def", "^def", "+",
    "\\", "%", "_", "%_%", "", "   ", "\n\t", "🙂", "Ω≈ç√",
    "'; DROP TABLE documents; --", "' OR '1'='1", '" OR 1=1 --', "$$", "E'\\n'",
    "<script>alert(1)</script>", "{}", "[]", "a & b | !c", "def <-> class", "!!", ":*",
    "q" * 1000, "def " * 200, "NEAR/3", '"def" "class"', "col1 : x*", "ab",
]  # fmt: skip


@pytest.mark.parametrize("exact", [False, True])
def test_hostile_queries_return_results_or_nothing_never_an_error(index, exact):
    before = index.stats().documents
    for query in HOSTILE:
        for kwargs in ({}, {"repo": "x'; --"}, {"license": '"', "lang": "%"}, {"page": 3}):
            hits = index.search(query, exact=exact, **kwargs)
            assert isinstance(hits, list), query
    # Operators are treated as words, so the words around them still find code.
    assert index.search('"def" AND (return', exact=False)
    assert index.search("return x*", exact=False)
    assert index.search("(self)", exact=True)
    assert index.stats().documents == before  # nothing was dropped
    assert index.search("heapify")[0].path == "heapq.py"


def test_search_validation_names_field_limit_and_value(index):
    cases = [
        ({"query": "x" * 1001}, "query", "1,000"),
        ({"query": "x", "page": 0}, "page", "0"),
        ({"query": "x", "page_size": 500}, "page_size", "500"),
        ({"query": 5}, "query", "int"),
        ({"query": "def\x00class"}, "query", "NUL"),  # no database takes it: refused, named
    ]
    for kwargs, field, value in cases:
        query = kwargs.pop("query")
        with pytest.raises(PlaygroundError) as err:
            index.search(query, **kwargs)
        assert err.value.field == field
        assert field in str(err.value) and value in str(err.value)


def test_stats_one_line_summary(index, corpus):
    stats = index.stats()
    assert stats.documents == len(corpus[1])
    assert stats.repos == 1
    assert "cpython-stdlib" in stats.summary and f"{stats.documents:,} files" in stats.summary
    assert "PSF-2.0" in stats.summary
    assert set(stats.splits) <= {"train", "heldout"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_incremental_build_dedup_replace_and_reload(backend, corpus, tmp_path, request):
    pg_url = request.getfixturevalue("pg_url") if backend == "postgresql" else None
    idx = open_index(backend, tmp_path, pg_url)
    try:
        first = build_from_manifest(idx, corpus[0])
        assert first.added == len(corpus[1]) and first.bytes_added > 0
        again = build_from_manifest(idx, corpus[0])
        assert (again.added, again.unchanged) == (0, len(corpus[1]))

        from app.attribution import IndexDocument

        heapq = corpus[1]["heapq.py"]
        dup = IndexDocument("fork/heapq", "heapq.py", "MIT", heapq.text)
        changed_text = heapq.text.replace("def heappush(", "def heappush_changed(")
        changed = IndexDocument(heapq.repo, heapq.path, heapq.license, changed_text)
        report = idx.add_documents([dup, changed])
        assert (report.duplicates, report.replaced) == (1, 1)
        assert idx.stats().documents == len(corpus[1])

        off = changed_text.index("def heappush_changed(")
        probe = changed_text[off : off + 200]
        # Reopened from storage: the Bloom filter was saved and reloads with the same hash.
        location = idx._store if backend == "postgresql" else tmp_path / "index.sqlite"
        if backend == "sqlite":
            idx.close()
            idx = AttributionIndex.open(location)
        else:
            idx = AttributionIndex(idx._store)
        spans = idx.attribute(probe)
        assert [s.text for s in spans] == [probe]
        old = heapq.text[heapq.text.index("def heappush(") :][:200]
        assert not any("def heappush(" in s.text for s in idx.attribute(old))
    finally:
        drop_index(idx)


def test_concurrent_requests_from_worker_threads(index, corpus):
    """Gradio runs handlers on a thread pool: each thread gets its own connection."""
    from concurrent.futures import ThreadPoolExecutor

    doc = corpus[1]["shlex.py"].text
    text = FRESH + doc[3000:3400]
    expected = [s.to_dict() for s in index.attribute(text)]
    assert expected

    def work(i: int):
        if i % 2:
            return [s.to_dict() for s in index.attribute(text)]
        return [h.to_dict() for h in index.search("shlex split")]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(work, range(16)))
    assert all(r == expected for r in results[1::2])
    assert all(r == results[0] and r for r in results[::2])

"""Attribution in the playground: /attribute, /search, and highlighted spans in the browser."""

import json
from pathlib import Path

import pytest

from app.settings import Settings
from corpus import iter_manifest_documents
from model.engine import CancelToken, Delta, GenerationParams, GenerationRequest
from tests.conftest import ATTRIBUTION_DOCS
from tests.integration.test_browser import _set_param, browser, page  # noqa: F401  (fixtures)

HOSTILE = ['"', "a AND", "OR OR", "NEAR(", "*", "-x", "(((", 'def "f', "x' OR 1=1 --", "\\"]


@pytest.fixture(scope="module")
def indexed_docs(tmp_path_factory):
    manifest_path = Settings.load([], env={}).corpus_manifest
    manifest = json.loads(Path(manifest_path).read_text(encoding="utf-8"))
    train = [d for d in manifest["documents"] if d["split"] == "train"][:ATTRIBUTION_DOCS]
    subset = tmp_path_factory.mktemp("m") / "m.json"
    subset.write_text(json.dumps({**manifest, "documents": train}), encoding="utf-8")
    return [d for d in iter_manifest_documents(subset) if len(d.text) > 400]


def test_attribute_finds_a_verbatim_snippet_with_its_source(client, indexed_docs):
    doc = indexed_docs[0]
    start = doc.text.index("\n", 100) + 1
    snippet = doc.text[start : start + 250]
    text = "# my own words here, nothing copied at all\n" + snippet + "\nzz_unique_tail_9431()\n"
    spans = client.predict(text=text, api_name="/attribute")
    assert spans, "the verbatim snippet was not found"
    best = max(spans, key=lambda s: s["end"] - s["start"])
    assert (
        snippet.strip() in text[best["start"] : best["end"]] or (best["end"] - best["start"]) >= 200
    )
    src = best["sources"][0]
    assert (src["repo"], src["path"], src["license"]) == (doc.repo, doc.path, doc.license)
    first_line = doc.text[:start].count("\n") + 1
    assert src["start_line"] <= first_line + 1 and src["end_line"] >= first_line + 3


def test_fresh_text_has_no_spans(client):
    text = "def zebra_quux_7781(frobnicate):\n    return frobnicate * 1234567 + 'blorple'\n" * 3
    assert client.predict(text=text, api_name="/attribute") == []


@pytest.mark.parametrize("query", HOSTILE)
def test_hostile_search_queries_never_error(client, query):
    for exact in (False, True):
        hits = client.predict(query=query, exact=exact, api_name="/search")
        assert isinstance(hits, list)


def test_search_finds_a_word_from_the_corpus(client, indexed_docs):
    doc = indexed_docs[0]
    hits = client.predict(query=doc.text[200:260].strip(), exact=True, api_name="/search")
    assert any(h["path"] == doc.path for h in hits)


def _reproducing_prompt(engine, docs) -> tuple[str, object]:
    """A prefix of a training file whose greedy continuation starts as the file does."""
    params = GenerationParams(max_new_tokens=6, temperature=0, repetition_penalty=1.0)
    for doc in docs:
        for marker in ("\nimport o", "\nimport s", "\n    def __init__(self", "\nfrom "):
            cut = doc.text.find(marker, 80)
            if cut == -1:
                continue
            prompt = doc.text[max(0, cut - 300) : cut + len(marker)]  # fits the context
            stream = engine.stream(GenerationRequest(prompt, params), CancelToken())
            out = "".join(e.text for e in stream if isinstance(e, Delta))
            if out and doc.text[cut + len(marker) :].startswith(out[:2]):
                return prompt, doc
    pytest.fail("the model reproduces none of the candidate training files")


def test_browser_highlights_verbatim_training_text_and_click_searches(
    page,  # noqa: F811
    engine,
    indexed_docs,
):
    prompt, doc = _reproducing_prompt(engine, indexed_docs)
    _set_param(page, "temperature", 0)
    _set_param(page, "repetition-penalty", 1)  # as _reproducing_prompt found it: no penalty
    _set_param(page, "max-new-tokens", 6)
    page.fill("#completion-prompt textarea", prompt)
    page.click("#completion-run")
    page.wait_for_function(
        "() => document.querySelector('#completion-status').innerText.includes('tokens/s')"
    )
    mark = page.locator("#completion-output mark.attr-span").first
    try:
        mark.wait_for(timeout=10_000)
    except Exception as exc:  # say what the page showed instead
        shown = page.inner_text("#completion-output"), page.inner_text("#completion-status")
        raise AssertionError(f"no verbatim span highlighted; the page showed {shown!r}") from exc
    assert doc.path in (mark.get_attribute("title") or "")
    assert doc.path in page.inner_text("#completion-sources")
    mark.click()
    page.wait_for_function(
        "(p) => (document.querySelector('#search-results')?.innerText || '').includes(p)",
        arg=doc.path,
    )

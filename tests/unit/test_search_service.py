"""Search (app/services/search.py) over a small SQLite index: which spans of a generation are
reported, what a search finds, and the refusals that name the field."""

import pytest

from app.attribution import AttributionIndex, IndexDocument
from app.attribution.search import MAX_PAGE
from app.services.search import Search
from model.engine import CancelToken, GenerationParams
from model.errors import PlaygroundError
from tests.fakes import FakeEngine, fake_playground

FIB = "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    index = AttributionIndex.open(tmp_path_factory.mktemp("index") / "index.sqlite")
    index.add_documents([IndexDocument("octo/maths", "fib.py", "MIT", FIB * 2)])
    return Search(index, indexed_model="tiny-starcoder")


def completed(prompt: str, reply: str):
    playground = fake_playground(FakeEngine(reply))
    return list(playground.complete(prompt, GenerationParams(), CancelToken()))[-1]


def test_a_copied_continuation_is_reported_with_its_source(search):
    out = completed("# maths\n", FIB)
    [span] = search.attribute_output(out)
    assert out.text[span["start"] : span["end"]] in FIB
    assert span["sources"][0]["repo"] == "octo/maths" and span["sources"][0]["license"] == "MIT"


def test_a_copy_the_user_pasted_is_not_blamed_on_the_model(search):
    assert search.attribute(FIB)  # the prompt alone is a copy...
    assert search.attribute_output(completed(FIB, "\nprint('done')\n")) == []  # ...not the model's


def test_an_empty_check_says_whose_data_it_covered(search):
    assert search.checked_against("tiny-starcoder").startswith("Checked against: ")
    other = search.checked_against("fake-coder")
    assert "tiny-starcoder's training data only" in other
    assert "fake-coder's own training data is not indexed here" in other


def test_search_finds_the_file_and_filters_by_license(search):
    assert [h.path for h in search.search("fib")] == ["fib.py"]
    assert search.search("fib", license="GPL-3.0") == []


@pytest.mark.parametrize(
    "kwargs, field, message",
    [
        ({"query": {"$ne": 1}}, "query", "`query` must be text; got dict."),
        ({"query": "x", "repo": {"$ne": 1}}, "repo", "`repo` must be text; got dict."),
        ({"query": "a\x00b"}, "query", "`query` contains a NUL character."),
        ({"query": "x" * 1001}, "query", "`query` is 1,001 characters; the limit is 1,000."),
        (
            {"query": "x", "page": "two"},
            "page",
            f"`page` must be a whole number from 1 to {MAX_PAGE}; got 'two'.",
        ),
        (
            {"query": "x", "page": True},
            "page",
            f"`page` must be a whole number from 1 to {MAX_PAGE}; got bool.",
        ),
        ({"query": "x", "exact": "yes"}, "exact", "`exact` must be true or false; got str."),
    ],
)
def test_bad_search_input_is_refused_naming_the_field(search, kwargs, field, message):
    with pytest.raises(PlaygroundError) as err:
        search.search(**kwargs)
    assert (err.value.field, err.value.message) == (field, message)


def test_without_an_index_search_says_so_and_checks_find_nothing():
    search = Search(None)
    with pytest.raises(PlaygroundError, match=r"Search is not available: no attribution index\."):
        search.search("fib")
    assert search.attribute_output(completed("# maths\n", FIB)) == []
    assert search.summary() == "No attribution index."

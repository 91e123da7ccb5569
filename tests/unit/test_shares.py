"""Shares (app/services/shares.py) on an SQLite file: what Share saves from a generation made
over a FakeEngine, the links it hands back, the refusals, and how a share reopens."""

from datetime import UTC, datetime

import pytest

from app.links import PublicLinks
from app.services.shares import PENDING, Shares, record
from app.shares.page import render_share
from app.shares.store import SharePublic, Store
from model.engine import CancelToken, GenerationParams
from model.errors import PlaygroundError
from tests.fakes import FakeEngine, fake_playground
from tests.markup import Page

CODE = "def add(a, b):\n    <FILL_HERE>\n\nprint(add(1, 2))\n"
PARAMS = GenerationParams(max_new_tokens=64, stop=("#",))


@pytest.fixture
def shares(tmp_path):
    playground = fake_playground(FakeEngine("return a + b<|endoftext|>"))
    store = Store(f"sqlite:///{tmp_path / 'shares.db'}", writes_per_window=30)
    yield Shares(store, PublicLinks(), playground.registry), playground
    store.close()


def filled(playground):
    return list(playground.fill(CODE, PARAMS, CancelToken()))[-1]


def test_a_shared_fill_reopens_with_its_middle_marked(shares):
    service, playground = shares
    out = filled(playground)
    link, delete = service.share(record(out, CODE, PARAMS, "python"), "10.0.0.1", "localhost:7860")
    share_id = link.rsplit("/", 1)[-1]
    assert link == f"http://localhost:7860/s/{share_id}"
    assert delete.startswith(f"http://localhost:7860/s/{share_id}/delete?token=")
    share = service.load(share_id)
    assert (share.mode, share.model, share.prompt, share.output) == (
        "fim",
        "fake-coder",
        CODE,
        out.text,
    )
    assert share.parameters["language"] == "python" and share.parameters["stop"] == ["#"]
    page = Page(render_share(share))
    assert "".join(page.generated) == "return a + b"  # what a reader sees marked


def test_sharing_the_same_generation_twice_gives_two_links_each_with_its_delete_link(shares):
    service, playground = shares
    rec = record(filled(playground), CODE, PARAMS, "python")
    first, second = (service.share(rec, "10.0.0.1", "localhost") for _ in range(2))
    assert first[0] != second[0] and first[1] and second[1] and first[1] != second[1]


def test_links_never_point_at_a_host_the_client_made_up(shares):
    service, playground = shares
    rec = record(filled(playground), CODE, PARAMS, "python")
    link, delete = service.share(rec, "10.0.0.1", "evil.example")
    assert link.startswith("/s/") and delete.startswith(link + "/delete?token=")


@pytest.mark.parametrize(
    "rec, message",
    [
        (PENDING, "The generation is still running: share it once it has finished."),
        (None, "Generate something first, then share it."),
    ],
)
def test_sharing_before_there_is_anything_to_share_says_what_to_do(shares, rec, message):
    service, _ = shares
    with pytest.raises(PlaygroundError) as err:
        service.share(rec, "10.0.0.1", "localhost")
    assert err.value.message == message and err.value.field == "output"


def test_without_a_store_sharing_is_refused_and_links_open_nothing():
    registry = fake_playground(FakeEngine()).registry
    service = Shares(None, PublicLinks(), registry)
    with pytest.raises(PlaygroundError, match=r"Sharing is not configured on this server\."):
        service.share({"mode": "completion"}, "10.0.0.1", "localhost")
    assert service.load("AbCdEfGhIjKlMnOp") is None


def test_a_missing_share_is_named(shares):
    service, _ = shares
    with pytest.raises(PlaygroundError) as err:
        service.load("AbCdEfGhIjKlMnOp")
    assert err.value.kind == "not_found"
    assert err.value.message == (
        "The shared generation `AbCdEfGhIjKlMnOp` does not exist or was deleted."
    )


def test_a_share_with_odd_parameters_reopens_with_the_models_defaults():
    registry = fake_playground(FakeEngine()).registry
    stored = {"temperature": "hot", "max_new_tokens": 64, "stop": ["#", "\nclass"], "seed": 7,
              "top_p": 5, "language": ["not", "text"]}  # fmt: skip
    share = SharePublic(
        "AbCdEfGhIjKlMnOp", datetime.now(UTC), "completion", "gone-model", stored, "p", "p x"
    )
    form = Shares(None, PublicLinks(), registry).form(share)
    assert form == {
        "max_new_tokens": 64,
        "temperature": 0.2,
        "top_p": 0.9,
        "repetition_penalty": 1.2,
        "seed": "7",
        "stop": "#\n\nclass",
        "language": "python",
    }

"""`min_tokens` and `ignore_eos` (vLLM's names) hold back the end of a text, in both of the
worker's paths (the batch, and one request at a time for a seeded one) and through /v1.

tiny-starcoder never writes its end-of-text token on these prompts, so a copy of it whose
generation config also ends at " os" stands in for a model that stops early: greedy after
"import os\\n" it writes "import", then " os".
"""

from __future__ import annotations

import json
import shutil

import httpx
import pytest

from model.engine import CancelToken, Delta, Done, GenerationParams, GenerationRequest
from model.engines.worker import WorkerConfig, WorkerEngine

PROMPT = "import os\n"
END = " os"


@pytest.fixture(scope="module")
def early_ender(model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ends-at-os") / "model"
    shutil.copytree(model_dir, folder)
    from transformers import AutoTokenizer

    end = AutoTokenizer.from_pretrained(folder).convert_tokens_to_ids("Ġos")
    config = json.loads((folder / "generation_config.json").read_text())
    config["eos_token_id"] = [config["eos_token_id"], end]
    (folder / "generation_config.json").write_text(json.dumps(config))
    eng = WorkerEngine(WorkerConfig(str(folder), device="cpu", max_batch=2), max_queue=2).start()
    yield eng
    eng.close()


def run(engine, **params) -> tuple[str, Done]:
    p = GenerationParams(max_new_tokens=16, temperature=0, repetition_penalty=1.0, **params)
    events = list(engine.stream(GenerationRequest(PROMPT, p), CancelToken()))
    return "".join(e.text for e in events if isinstance(e, Delta)), events[-1]


# seed: the one-at-a-time path (generate()); none: the batch.
@pytest.mark.parametrize("path", [{}, {"seed": 7}], ids=["batched", "alone"])
def test_the_model_ends_early_unless_the_end_is_held_back(early_ender, path):
    text, done = run(early_ender, **path)
    assert (text, done.reason, done.generated_tokens) == ("import", "eos", 2)

    text, done = run(early_ender, ignore_eos=True, **path)
    assert (done.reason, done.generated_tokens) == ("length", 16)
    assert END not in text and text.startswith("import")  # the end token is never written

    text, done = run(early_ender, min_tokens=5, **path)
    assert done.generated_tokens >= 5 and done.reason in ("eos", "length")
    assert END not in text and text.startswith("import")


@pytest.mark.parametrize("path", [{}, {"seed": 7}], ids=["batched", "alone"])
def test_min_tokens_holds_back_stop_sequences_too(early_ender, path):
    """As vLLM: stop sequences are looked for once min_tokens are written."""
    text, done = run(early_ender, stop=("\n",), ignore_eos=True, **path)
    assert done.reason == "stop" and done.generated_tokens < 4 and "\n" not in text
    text, done = run(early_ender, stop=("\n",), ignore_eos=True, min_tokens=4, **path)
    assert done.reason == "stop" and done.generated_tokens >= 4 and text.count("\n") >= 1


def test_v1_completions_take_min_tokens_and_ignore_eos(live_app):
    url = live_app.url + "v1/completions"
    body = {"model": "tiny-starcoder", "prompt": "# end\n", "max_tokens": 24, "temperature": 0,
            "stop": ["\n"], "repetition_penalty": 1.0}  # fmt: skip
    short = httpx.post(url, json=body, timeout=60).json()
    held = httpx.post(url, json={**body, "min_tokens": 12}, timeout=60).json()
    assert short["usage"]["completion_tokens"] < 12 <= held["usage"]["completion_tokens"]
    fixed = httpx.post(url, json={**body, "stop": None, "ignore_eos": True}, timeout=60).json()
    assert fixed["usage"]["completion_tokens"] == 24
    assert fixed["choices"][0]["finish_reason"] == "length"
    bad = httpx.post(url, json={**body, "min_tokens": 30}, timeout=60)
    assert bad.status_code == 400
    assert "`min_tokens` must be at most the token limit, 24; got 30" in bad.text

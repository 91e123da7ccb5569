"""The entry of a model served behind ENGINE_URL: known models keep their defaults, others get
the generic ones or ENGINE_MODEL_DEFAULTS, and what the server says (context, FIM tokens,
scoring) wins. No server: the ModelInfo is what a RemoteEngine would build."""

from __future__ import annotations

import pytest

from model.engine import ModelInfo
from model.errors import PlaygroundError
from model.prompts.families import STARCODER_SPECIAL_TOKENS
from model.registry import (
    SMOLLM2,
    TINY_STARCODER,
    Registry,
    parse_remote_defaults,
    remote_spec,
    smollm2_spec,
    tiny_starcoder_spec,
)

URL = "http://vllm:8000"


def info(model_id: str, *, scores: bool = True, fim: bool = False, ctx: int = 2048) -> ModelInfo:
    specials = frozenset(STARCODER_SPECIAL_TOKENS) if fim else frozenset({"<|im_end|>"})
    return ModelInfo(
        model_id,
        ctx,
        specials,
        None,
        fills_by_rerank=scores,
        logprobs=scores,
        has_chat_template=not fim,
    )


@pytest.fixture
def registry(tmp_path) -> Registry:
    return Registry([tiny_starcoder_spec(), smollm2_spec()], data_dir=tmp_path)


@pytest.mark.parametrize(
    "names, found",
    [
        (["HuggingFaceTB/SmolLM2-135M-Instruct"], SMOLLM2),  # a Hub id, by its last part
        (["/srv/models/smollm2-135m-instruct/"], SMOLLM2),  # vLLM's `root`, a weights folder
        (["my-model", TINY_STARCODER], TINY_STARCODER),  # any of the names
        (["meta-llama/Llama-3-8B"], None),
    ],
)
def test_a_served_model_is_known_by_any_of_its_names(registry, names, found):
    spec = registry.match(names)
    assert (spec.id if spec else None) == found


def test_a_known_model_keeps_its_defaults_and_takes_the_servers_context(registry):
    spec = remote_spec(registry.get(SMOLLM2), info("/srv/smollm2-135m-instruct"), URL)
    assert (spec.temperature, spec.repetition_penalty) == (0.0, 1.0)
    assert spec.completion_stops == ("\n```",)
    assert spec.context_length == 2048  # the server's max_model_len, not the config's 8192
    assert spec.id == SMOLLM2 and spec.source == "remote"
    assert spec.label == f"SmolLM2-135M-Instruct on {URL}"  # served, not "embedded"
    assert spec.supports("fim") and spec.reranks_fim  # the server scores: fills by reranking


def test_an_unknown_model_gets_the_generic_defaults_or_the_settings(registry):
    spec = remote_spec(None, info("org/Some-Coder-7B"), URL)
    assert spec.id == "some-coder-7b"
    assert (spec.temperature, spec.repetition_penalty, spec.completion_stops) == (0.2, 1.2, ())
    given = parse_remote_defaults(
        '{"temperature": 0, "repetition_penalty": 1.05, "completion_stops": ["\\n\\n\\n"]}'
    )
    spec = remote_spec(None, info("org/Some-Coder-7B"), URL, given)
    assert (spec.temperature, spec.repetition_penalty) == (0.0, 1.05)
    assert spec.completion_stops == ("\n\n\n",)


def test_fim_tokens_on_the_server_mean_the_template(registry):
    spec = remote_spec(None, info("bigcode/starcoder2-3b", fim=True), URL)
    assert spec.fim and not spec.reranks_fim


def test_a_server_that_cannot_score_keeps_the_refusal(tmp_path):
    spec = remote_spec(None, info("some-chat", scores=False), URL)
    reg = Registry([spec], data_dir=tmp_path)
    with pytest.raises(PlaygroundError) as err:
        reg.choose(None, "fim")
    assert err.value.kind == "unsupported"
    assert "cannot score a prompt" in err.value.message
    assert reg.choose(None, "completion").id == "some-chat"  # the page still builds


@pytest.mark.parametrize(
    "text, named",
    [
        ("{not json", "must be a JSON object"),
        ('{"temperature": "hot"}', "'temperature'='hot' is not allowed"),
        ('{"top_k": 5}', "'top_k'=5 is not allowed"),
        ('{"repetition_penalty": 3}', "repetition_penalty must be from 1 to 2; got 3.0"),
        ('{"completion_stops": "\\n"}', "'completion_stops'='\\n' is not allowed"),
    ],
)
def test_bad_engine_model_defaults_are_named(text, named):
    with pytest.raises(PlaygroundError) as err:
        parse_remote_defaults(text)
    assert "ENGINE_MODEL_DEFAULTS" in err.value.message and named in err.value.message
    assert err.value.field == "engine_model_defaults"

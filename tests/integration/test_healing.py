"""Token healing on the real tokenizers: tiny-starcoder's (newline is its own token) and
SmolLM2's (newline merges with the next indent, so a trailing "\\n" is out of distribution)."""

from __future__ import annotations

import pytest
import torch

from model.tokens.healing import PrefixStripper, TokenHealer, heal, needs_healing
from tests.integration.test_smollm2 import _healed_greedy, converted_smollm2

HEADER = 'def add(a, b):\n    """Return the sum of a and b."""\n'


@pytest.fixture(scope="module")
def tiny_tok(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir, local_files_only=True)


@pytest.fixture(scope="module")
def smol_dir(tmp_path_factory):
    return converted_smollm2(tmp_path_factory)["dir"]  # one conversion per session, shared


@pytest.fixture(scope="module")
def smol_tok(smol_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smol_dir, local_files_only=True)


@pytest.fixture(scope="module")
def smol_engine(smol_dir):
    from model.engines.local import LocalEngine

    return LocalEngine.load(str(smol_dir), device="cpu")


def _allowed(healer: TokenHealer, healing, generated: list[int] = ()) -> set[int]:
    """Token ids the processor leaves open after `generated` tokens of the continuation."""
    ids = torch.tensor([healing.input_ids + list(generated)])
    scores = torch.zeros(1, len(healer.vocab))
    out = healing.processor(ids, scores.clone())
    return set(torch.nonzero(torch.isfinite(out[0])).flatten().tolist())


def test_a_newline_no_token_extends_is_left_alone_so_it_can_batch(tiny_tok):
    # tiny-starcoder keeps "\n" a token of its own: healing could only re-create it as it is.
    ids = tiny_tok(HEADER)["input_ids"]
    healing = TokenHealer(tiny_tok).heal(ids)
    assert not healing.active and healing.input_ids == ids


@pytest.mark.parametrize("which", ["smol_tok"])
def test_trailing_newline_is_backed_off_and_must_be_regenerated(which, request):
    tok = request.getfixturevalue(which)
    healer = TokenHealer(tok)
    ids = tok(HEADER)["input_ids"]
    healing = healer.heal(ids)
    assert healing.active and needs_healing(HEADER)
    assert healing.removed == "\n"
    assert healing.input_ids == ids[:-1]
    assert tok.decode(healing.input_ids) + healing.removed == HEADER
    allowed = _allowed(healer, healing)
    assert allowed, "some token must be able to continue"
    for token in allowed:
        assert tok.decode([token]).startswith("\n")
    newline = tok.convert_tokens_to_ids("Ċ")
    assert newline in allowed
    assert tok.convert_tokens_to_ids("def") not in allowed


def test_smollm2_may_merge_the_newline_with_the_indent(smol_tok):
    healer = TokenHealer(smol_tok)
    healing = healer.heal(smol_tok(HEADER)["input_ids"])
    # "\n    " is one token in SmolLM2's vocabulary: the whole point of healing this prompt.
    assert smol_tok.convert_tokens_to_ids("ĊĠĠĠĠ") in _allowed(healer, healing)


def test_several_whitespace_tokens_are_rebuilt_step_by_step(tiny_tok):
    # tiny-starcoder splits "\n" and the indent: both are backed off, then re-created in order.
    healer = TokenHealer(tiny_tok)
    prompt = "def f(x):\n    "
    ids = tiny_tok(prompt)["input_ids"]
    healing = healer.heal(ids)
    assert healing.removed == "\n    "
    assert healing.input_ids == ids[:-2]
    newline = tiny_tok.convert_tokens_to_ids("Ċ")
    after_newline = _allowed(healer, healing, [newline])
    assert after_newline
    assert newline not in after_newline
    for token in after_newline:
        text = tiny_tok.decode([token])
        assert text.startswith("    ") or "    ".startswith(text), text
    # Once the removed text is rebuilt, nothing is masked any more.
    assert len(_allowed(healer, healing, ids[-2:])) == len(healer.vocab)


@pytest.mark.parametrize(
    "prompt", ["def f(x): return x", "x", " ", "<fim_prefix>a<fim_suffix>\n<fim_middle>"]
)
def test_prompts_without_trailing_whitespace_or_ending_in_specials_are_left_alone(prompt, tiny_tok):
    ids = tiny_tok(prompt)["input_ids"]
    healing = heal(tiny_tok, ids)
    assert not healing.active
    assert needs_healing(prompt) == (prompt == " ")  # the cheap text check is conservative
    assert healing.input_ids == ids
    assert healing.removed == ""


def test_chat_turn_markers_are_never_healed(smol_tok):
    prompt = smol_tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt.endswith("\n")
    ids = smol_tok(prompt)["input_ids"]
    healing = heal(smol_tok, ids)
    # The template ends "<|im_start|>assistant\n": the newline may be healed, the marker not.
    assert smol_tok.convert_tokens_to_ids("<|im_start|>") in healing.input_ids


def test_stripper_drops_the_healed_text_once_even_across_deltas():
    s = PrefixStripper("\n  ")
    assert s.feed("\n") == ""
    assert s.feed(" ") == ""
    assert s.feed("  return 1") == " return 1"  # one of its two spaces was healed text
    assert s.feed("\n  ") == "\n  "
    assert PrefixStripper("").feed("x") == "x"


def test_healing_turns_smollm2_prose_into_a_function_body(smol_engine):
    """The issue's case: a header ending in Enter. Healed, the first line is indented code and
    the shown text does not repeat the prompt's newline."""
    text = _healed_greedy(smol_engine, HEADER, heal, max_new_tokens=8)
    assert text.startswith("    "), repr(text)
    assert not text.startswith("\n")
    compile(HEADER + text.split("\n")[0] + "\n", "<healed>", "exec")


def test_sampling_with_top_p_still_rebuilds_the_removed_text(engine):
    """Custom processors run before generate()'s top-p/temperature warpers, so the mask can
    never leave an empty nucleus; every seed starts the continuation with the healed text."""
    tok, model = engine.tokenizer, engine.model
    healing = heal(tok, tok("def f(x):\n    ")["input_ids"])
    ids = torch.tensor([healing.input_ids])
    for seed in range(3):
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=4,
                do_sample=True,
                temperature=0.2,
                top_p=0.9,
                repetition_penalty=1.2,
                logits_processor=[healing.processor],
                pad_token_id=tok.pad_token_id,
            )
        text = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        assert text.startswith(healing.removed), (seed, text)


@pytest.mark.parametrize("which", ["tiny", "smol"])
def test_the_web_processs_tokenizer_plans_the_same_healing(
    which, tiny_tok, smol_tok, model_dir, smol_dir
):
    # A remote engine heals with the `tokenizers` library's tokenizer (no transformers, no
    # torch in the web process): same bytes per token, same back-off, same allowed tokens.
    from tokenizers import Tokenizer

    from model.tokens.heal_plan import HealPlanner

    tok, folder = (tiny_tok, model_dir) if which == "tiny" else (smol_tok, smol_dir)
    web = HealPlanner(Tokenizer.from_file(f"{folder}/tokenizer.json"))
    worker = TokenHealer(tok)
    assert web.vocab.bytes == worker.vocab.bytes
    healed = 0
    for prompt in (HEADER, "def f(x):\n    ", "x = [1, 2, ", "    return x"):
        ids = tok(prompt)["input_ids"]
        plan, healing = web.plan(ids), worker.heal(ids)
        planned = (plan.kept, plan.text) if plan else (ids, "")
        assert planned == (healing.input_ids, healing.removed)
        if plan:
            healed += 1
            assert web.vocab.allowed_ids(plan.removed) == (
                worker.vocab.allowed(plan.removed).nonzero().flatten().tolist()
            )
    assert healed >= 2  # the prompts ending in whitespace were healed, not skipped

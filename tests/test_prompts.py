"""FIM splitting and templates per model family, ta-prompt assembly and truncation."""

import pytest

from model.errors import PlaygroundError
from model.prompts import (
    FILL_MARKER,
    TaPrompt,
    Turn,
    assistant_prompt,
    clean_reply,
    detect_fim_template,
    fim_prompt,
    split_fim,
)
from tests.random_model import STARCODER_SPECIALS


def test_split_fim_at_the_single_marker_keeps_whitespace_exactly():
    assert split_fim("def f():\n    <FILL_HERE>\n  \n") == ("def f():\n    ", "\n  \n")


@pytest.mark.parametrize("code,count", [("no marker", 0), ("a<FILL_HERE>b<FILL_HERE>", 2)])
def test_zero_or_several_markers_are_a_clear_error(code, count):
    with pytest.raises(PlaygroundError) as err:
        split_fim(code)
    assert f"exactly one {FILL_MARKER}" in str(err.value)
    assert f"found {count}" in str(err.value)
    assert err.value.field == "prompt"


FAMILIES = {
    "starcoder": (set(STARCODER_SPECIALS), "<fim_prefix>P<fim_suffix>S<fim_middle>"),
    "starcoder2": (
        set(STARCODER_SPECIALS) | {"<file_sep>"},
        "<fim_prefix>P<fim_suffix>S<fim_middle>",
    ),
    "santacoder": (
        {"<|endoftext|>", "<fim-prefix>", "<fim-middle>", "<fim-suffix>", "<fim-pad>"},
        "<fim-prefix>P<fim-suffix>S<fim-middle>",
    ),
    "codellama": ({"<s>", "</s>", "▁<PRE>", "▁<MID>", "▁<SUF>", "▁<EOT>"}, "<PRE> P <SUF>S <MID>"),
    "deepseek-coder": (
        {"<｜begin▁of▁sentence｜>", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"},
        "<｜fim▁begin｜>P<｜fim▁hole｜>S<｜fim▁end｜>",
    ),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_family_is_detected_and_formatted(family):
    specials, expected = FAMILIES[family]
    tpl = detect_fim_template(frozenset(specials))
    assert tpl is not None and tpl.family == family
    prompt, prefix, suffix = fim_prompt(f"P{FILL_MARKER}S", tpl, "m")
    assert (prompt, prefix, suffix) == (expected, "P", "S")


def test_starcoder2_also_stops_at_file_sep_and_code_llama_at_eot():
    assert "<file_sep>" in detect_fim_template(FAMILIES["starcoder2"][0]).stop_tokens
    assert detect_fim_template(FAMILIES["codellama"][0]).stop_tokens == ("<EOT>",)


def test_model_without_fim_tokens_gets_a_clear_message():
    tpl = detect_fim_template(frozenset({"<|endoftext|>", "<|im_start|>"}))
    assert tpl is None
    with pytest.raises(PlaygroundError, match="does not support fill-in-the-middle"):
        fim_prompt(f"a{FILL_MARKER}b", tpl, "HuggingFaceTB/SmolLM2-135M-Instruct")


def test_embedded_ta_prompt_is_in_bigcode_format():
    ta = TaPrompt.load()
    assert ta.preamble.strip() and len(ta.dialogues) >= 3
    for d in ta.dialogues:
        assert d.lstrip().startswith("Human:") and "\n\nAssistant:" in d


def _words(text: str) -> int:
    return len(text.split())


def test_assistant_prompt_appends_the_turns_and_ends_on_assistant():
    ta = TaPrompt.parse("Preamble.\n-----\nHuman: hi\n\nAssistant: hello\n")
    built = assistant_prompt(
        ta, [Turn("q1", "a1")], "q2", budget_tokens=10_000, count_tokens=_words
    )
    assert built.prompt == (
        "Preamble.\n\n-----\n\nHuman: hi\n\nAssistant: hello\n\n-----\n\n"
        "Human: q1\n\nAssistant: a1\n\nHuman: q2\n\nAssistant:"
    )
    assert built.notice is None


def test_truncation_drops_oldest_examples_first_then_oldest_turns_and_says_so():
    ta = TaPrompt.parse(
        "Pre.\n-----\nHuman: ex1 " + "w " * 30 + "\n\nAssistant: a\n-----\n"
        "Human: ex2\n\nAssistant: b\n"
    )
    history = [Turn("old " * 20, "x"), Turn("new", "y")]
    full = assistant_prompt(ta, history, "now", budget_tokens=10_000, count_tokens=_words)
    budget = _words(full.prompt) - 5
    built = assistant_prompt(ta, history, "now", budget_tokens=budget, count_tokens=_words)
    assert "ex1" not in built.prompt and "ex2" in built.prompt and "old" in built.prompt
    assert built.dropped_examples == 1 and built.dropped_turns == 0
    tight = assistant_prompt(ta, history, "now", budget_tokens=12, count_tokens=_words)
    assert "ex2" not in tight.prompt and "old" not in tight.prompt
    assert "Human: new" in tight.prompt and tight.prompt.endswith("Human: now\n\nAssistant:")
    assert "2 example dialogue(s)" in tight.notice and "1 oldest turn(s)" in tight.notice


def test_a_message_that_cannot_fit_is_refused_with_both_numbers():
    ta = TaPrompt.parse("Pre.\n-----\nHuman: a\n\nAssistant: b\n")
    with pytest.raises(PlaygroundError) as err:
        assistant_prompt(ta, [], "x " * 100, budget_tokens=20, count_tokens=_words)
    assert "`message`" in str(err.value) and "20" in str(err.value)


def test_clean_reply_trims_stop_markers_and_whitespace():
    assert clean_reply(" Use a set.\n\nHuman: thanks") == "Use a set."
    assert clean_reply("ok\n-----\nHuman:") == "ok"
    assert clean_reply("fine\nAssistant: more") == "fine"

"""FIM splitting and templates per model family, ta-prompt assembly and truncation."""

import pytest
from tokenizers import Tokenizer

from model.errors import PlaygroundError
from model.prompts.chat import chat_prompt
from model.prompts.families import STARCODER_SPECIAL_TOKENS, detect_fim_template
from model.prompts.templates import (
    FILL_MARKER,
    MAX_EXACT_COUNTS,
    TaPrompt,
    Turn,
    assistant_prompt,
    clean_reply,
    fim_prompt,
    split_fim,
)
from model.registry import TINY_STARCODER_DIR


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
    "starcoder": (set(STARCODER_SPECIAL_TOKENS), "<fim_prefix>P<fim_suffix>S<fim_middle>"),
    "starcoder2": (
        set(STARCODER_SPECIAL_TOKENS) | {"<file_sep>"},
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


# --- fitting a long conversation: linear in the history, whole prompt counted a few times ---

TOKENIZER = TINY_STARCODER_DIR / "tokenizer.json"

# SmolLM2-Instruct's chat template: ChatML with a default system prompt.
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\\n' }}{% endif %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
ASK = "And how do I sort it in reverse?"


class CountingTokenizer:
    """The tiny model's real tokenizer, remembering every text it was asked to count."""

    def __init__(self):
        self.tok = Tokenizer.from_file(str(TOKENIZER))
        self.texts: list[str] = []

    def __call__(self, text: str) -> int:
        self.texts.append(text)
        return len(self.tok.encode(text).ids)

    def whole_prompts(self) -> int:
        """Counts of an assembled prompt: the only texts holding the message and a turn."""
        return sum(1 for t in self.texts if ASK in t and "turn-" in t)


def _history(n: int) -> list[Turn]:
    return [
        Turn(
            f"turn-{i}: how do I sort a list of dicts by key {i}? " * 2,
            f"answer-{i}: sorted(items, key=lambda d: d['k{i}'])",
        )
        for i in range(n)
    ]


def _build(kind: str, history, budget: int, count, drop_examples: int = 0):
    if kind == "ta":
        ta = TaPrompt.load()
        ta = TaPrompt(ta.preamble, ta.dialogues[drop_examples:])
        return assistant_prompt(ta, history, ASK, budget_tokens=budget, count_tokens=count)
    return chat_prompt(CHATML, history, ASK, budget_tokens=budget, count_tokens=count)


@pytest.mark.parametrize("kind", ["ta", "chat"])
@pytest.mark.parametrize("budget", [256, 1500, 7936])
def test_a_50_turn_history_is_fitted_with_a_linear_number_of_counts(kind, budget):
    history = _history(50)
    count = CountingTokenizer()
    built = _build(kind, history, budget, count)
    # Before: one whole-prompt count per dropped turn (quadratic in the history's size).
    assert len(count.texts) <= len(history) + 8
    assert count.whole_prompts() <= 1 + MAX_EXACT_COUNTS
    assert sum(map(len, count.texts)) <= 3 * len(built.prompt) + 20_000
    exact = count(built.prompt)
    assert exact <= budget
    # The oldest turns went first, and only as many as had to: one more would not fit.
    kept = history[built.dropped_turns :]
    assert all(t.user in built.prompt for t in kept)
    assert not any(f"turn-{i}:" in built.prompt for i in range(built.dropped_turns))
    if built.dropped_turns:
        assert f"the {built.dropped_turns} oldest turn(s)" in built.notice
        more = history[built.dropped_turns - 1 :]
        one_more = _build(kind, more, 10**6, count, drop_examples=built.dropped_examples)
        assert one_more.notice is None and count(one_more.prompt) > budget


def test_fitting_1000_turns_counts_only_what_can_fit():
    count = CountingTokenizer()
    built = _build("chat", _history(1000), 512, count)
    assert count(built.prompt) <= 512 and built.dropped_turns > 990
    assert len(count.texts) <= 30


def _seamy(text: str) -> int:
    """Words, plus one token per seam between turns: piece sums undercount the whole."""
    return len(text.split()) + text.count("\n\nHuman:")


def test_when_pieces_undercount_the_exact_count_corrects_the_pick():
    ta = TaPrompt.parse("Pre.\n-----\nHuman: ex\n\nAssistant: b\n")
    history = [Turn(f"q{i} " * 5, f"a{i}") for i in range(40)]
    wholes = []

    def count(text: str) -> int:
        if text.endswith("Human: now\n\nAssistant:") and text.startswith("Pre."):
            wholes.append(text)
        return _seamy(text)

    built = assistant_prompt(ta, history, "now", budget_tokens=60, count_tokens=count)
    assert _seamy(built.prompt) <= 60 and len(wholes) <= 1 + MAX_EXACT_COUNTS
    assert built.prompt.endswith(
        "Human: q39 q39 q39 q39 q39 \n\nAssistant: a39\n\nHuman: now\n\nAssistant:"
    )
    # As many turns as fit: one more would not.
    ta_left = TaPrompt(ta.preamble, ta.dialogues[built.dropped_examples :])
    more = history[built.dropped_turns - 1 :]
    one_more = assistant_prompt(ta_left, more, "now", budget_tokens=10**6, count_tokens=_seamy)
    assert _seamy(one_more.prompt) > 60


def test_a_count_far_above_the_estimate_still_ends_after_a_bounded_number_of_tries():
    ta = TaPrompt.parse("Pre.\n-----\nHuman: ex\n\nAssistant: b\n")
    history = [Turn(f"q{i}", f"a{i}") for i in range(30)]
    wholes = []

    def count(text: str) -> int:
        if text.startswith("Pre.") and text.endswith("Assistant:"):
            wholes.append(text)
            return 1000 if "Human: q" in text else 5  # any turn at all overflows
        return 1

    built = assistant_prompt(ta, history, "now", budget_tokens=50, count_tokens=count)
    assert built.dropped_turns == 30 and built.dropped_examples == 1
    assert len(wholes) <= 1 + MAX_EXACT_COUNTS


def test_chat_prompt_drops_the_oldest_turns_and_keeps_the_template_intact():
    count = CountingTokenizer()
    history = _history(6)
    full = chat_prompt(CHATML, history, ASK, budget_tokens=10**6, count_tokens=count)
    assert full.notice is None
    budget = count(full.prompt) - 1
    built = chat_prompt(CHATML, history, ASK, budget_tokens=budget, count_tokens=count)
    assert built.dropped_turns == 1 and "1 oldest turn(s)" in built.notice
    assert built.prompt.startswith("<|im_start|>system\nYou are a helpful AI assistant")
    assert built.prompt.endswith(f"<|im_start|>user\n{ASK}<|im_end|>\n<|im_start|>assistant\n")
    assert "turn-0:" not in built.prompt and "turn-1:" in built.prompt


def test_a_chat_message_too_long_for_any_history_is_refused_with_both_numbers():
    count = CountingTokenizer()
    with pytest.raises(PlaygroundError) as err:
        chat_prompt(
            CHATML,
            _history(3),
            "sort " * 400,
            budget_tokens=100,
            count_tokens=count,
            max_new_tokens=28,
        )
    assert str(err.value).startswith("`message` tokens + `max_new_tokens` must be <= 128 ")
    assert "and 28 `max_new_tokens`" in str(err.value)

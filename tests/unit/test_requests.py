"""Bad input gets a message naming the field, the limit and the given value."""

import math

import pytest

from app.parameters import parse_params
from app.validation import Limits, check_context, check_text
from model.errors import PlaygroundError


def _msg(fn, *args, **kwargs) -> PlaygroundError:
    with pytest.raises(PlaygroundError) as err:
        fn(*args, **kwargs)
    return err.value


def test_defaults_are_the_original_playgrounds():
    p = parse_params()
    assert (p.temperature, p.max_new_tokens, p.top_p, p.repetition_penalty) == (0.2, 256, 0.9, 1.2)
    assert parse_params(temperature=0).greedy


@pytest.mark.parametrize(
    "kwargs,field,needle",
    [
        ({"temperature": math.nan}, "temperature", "finite"),
        ({"temperature": "nan"}, "temperature", "finite"),
        ({"temperature": 1.5}, "temperature", "[0, 1]; got 1.5"),
        ({"top_p": 0}, "top_p", "(0, 1]; got 0"),
        ({"top_p": math.inf}, "top_p", "finite"),
        ({"repetition_penalty": 0.5}, "repetition_penalty", "[1, 2]; got 0.5"),
        ({"max_new_tokens": 0}, "max_new_tokens", "[1, 8192]; got 0"),
        ({"max_new_tokens": 2.5}, "max_new_tokens", "whole number; got 2.5"),
        ({"max_new_tokens": "lots"}, "max_new_tokens", "number; got 'lots'"),
        ({"seed": -5}, "seed", "got -5"),
        ({"stop": [str(i) for i in range(33)]}, "stop", "at most 32 sequences; got 33"),
        ({"stop": "\n".join(map(str, range(33)))}, "stop", "at most 32 sequences; got 33"),
        ({"min_tokens": -1}, "min_tokens", "[0, 8192]; got -1"),
        ({"min_tokens": 1.5}, "min_tokens", "whole number; got 1.5"),
        ({"max_new_tokens": 16, "min_tokens": 20}, "min_tokens", "token limit, 16; got 20"),
        ({"ignore_eos": "yes"}, "ignore_eos", "true or false; got str"),
    ],
)
def test_out_of_range_parameters_name_field_limit_and_value(kwargs, field, needle):
    err = _msg(parse_params, **kwargs)
    assert err.field == field
    assert f"`{field}`" in err.message and needle in err.message


def test_up_to_four_stops_and_blank_seed_are_fine():
    p = parse_params(stop="\n\n\nEND\n", seed=None)
    assert p.stop == ("END",) and p.seed is None
    assert parse_params(stop=["a", "b", "c", "d"], seed=7).stop == ("a", "b", "c", "d")


@pytest.mark.parametrize(
    "value,needle",
    [
        ("", "is empty"),
        ("   \n", "is empty"),
        ("a\x00b", "NUL byte (at character 1)"),
        ("ok \ud800 bad", "lone surrogate U+D800 at character 3"),
        ("x" * 131_073, "is 131,073 bytes; the limit is 131,072 bytes"),
    ],
)
def test_bad_prompts(value, needle):
    err = _msg(check_text, "prompt", value, Limits())
    assert err.field == "prompt" and "`prompt`" in err.message and needle in err.message


def test_context_overflow_names_both_numbers_like_tgi():
    err = _msg(check_context, "prompt", 8000, 500, 8192)
    assert err.message == (
        "`prompt` tokens + `max_new_tokens` must be <= 8192 (the model's context). "
        "Given: 8000 `prompt` tokens and 500 `max_new_tokens`."
    )
    check_context("prompt", 7692, 500, 8192)  # exactly at the limit is fine


def test_a_whitespace_stop_such_as_a_blank_line_is_accepted_from_the_api():
    # The page's box splits stops on newlines; the API takes a list, where "\n\n" is common.
    assert parse_params(stop=["\n\n", "\t"]).stop == ("\n\n", "\t")


def test_min_tokens_and_ignore_eos_are_off_unless_asked_and_kept_when_asked():
    assert (parse_params().min_tokens, parse_params().ignore_eos) == (0, False)
    p = parse_params(max_new_tokens=16, min_tokens=16, ignore_eos=True)
    assert (p.max_new_tokens, p.min_tokens, p.ignore_eos) == (16, 16, True)


def test_the_assistant_gets_room_to_finish_when_no_limit_is_given():
    """SmolLM2's answers to everyday questions took 70-358 tokens: 256 cut 2 of 5 mid-sentence."""
    from app.parameters import SCHEMA
    from model.engine import default_max_new_tokens

    assert SCHEMA.resolve({}, None, "assistant").max_new_tokens == 512
    assert SCHEMA.resolve({}, None, "completion").max_new_tokens == 256
    assert SCHEMA.resolve({"max_new_tokens": 40}, None, "assistant").max_new_tokens == 40
    assert default_max_new_tokens("fim") == 256

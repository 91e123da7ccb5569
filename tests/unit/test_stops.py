from model.tokens.stops import StopMatcher


def test_text_before_a_stop_is_emitted_and_the_stop_is_cut():
    m = StopMatcher(["Human:"])
    assert m.feed("Sure.\n\n") == "Sure.\n\n"
    assert m.feed("Hum") == ""  # could become "Human:", held back
    assert m.feed("an: next") == ""
    assert m.stopped


def test_held_back_text_is_released_when_it_stops_matching():
    m = StopMatcher(["-----"])
    assert m.feed("a --") == "a "
    assert m.feed("x") == "--x"
    assert not m.stopped
    assert m.feed("--") == ""
    assert m.flush() == "--"


def test_the_earliest_of_several_stops_wins():
    m = StopMatcher(["\n\n", "END"])
    assert m.feed("code END more\n\n") == "code "


def feed_all(matcher: StopMatcher, pieces: list[str]) -> list[str]:
    return [matcher.feed(p) for p in pieces]


def test_without_the_setting_a_first_newline_waits_for_what_follows():
    m = StopMatcher(["\n```"])
    assert feed_all(m, ["\n", "    if"]) == ["", "\n    if"]  # a decode step late


def test_a_first_newline_can_be_shown_at_once_and_a_fence_after_it_still_stops():
    # The playground's completions: the first token is often a lone newline.
    m = StopMatcher(["\n```"], show_first_newline=True)
    assert feed_all(m, ["\n", "    if"]) == ["\n", "    if"]
    fence = StopMatcher(["\n```"], show_first_newline=True)
    assert feed_all(fence, ["\n", "``", "`python"]) == ["\n", "", ""] and fence.stopped
    whole = StopMatcher(["\n```"], show_first_newline=True)
    assert whole.feed("\n```python") == "\n" and whole.stopped


def test_after_a_shown_first_newline_held_text_is_released_or_flushed_without_it():
    m = StopMatcher(["\n```"], show_first_newline=True)
    assert feed_all(m, ["\n", "`", "x"]) == ["\n", "", "`x"] and not m.stopped
    held = StopMatcher(["\n```"], show_first_newline=True)
    assert feed_all(held, ["\n", "`"]) == ["\n", ""]
    assert held.flush() == "`"  # the newline was shown once, not again
    later = StopMatcher(["\n```"], show_first_newline=True)
    assert feed_all(later, ["x", "\n", "```"]) == ["x", "", ""]  # only the first newline
    blank = StopMatcher(["\n```"], show_first_newline=True)
    assert feed_all(blank, ["\n", "\n", "```"]) == ["\n", "", ""] and blank.stopped

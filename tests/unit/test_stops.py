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

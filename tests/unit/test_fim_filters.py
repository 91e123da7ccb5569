"""Which single-line fill candidates fit the code after the gap (bench/fim_filters.py): a line
that opens a block or a bracket needs the next line to continue it, and a deeper next line
needs a line that opens something."""

import pytest

from bench.fim_filters import fits_suffix, keep_fitting, opens

BODY = "\n        x = 1\n"  # the next line indented deeper than a gap at 4 spaces
SAME = "\n    x = 1\n"  # the next line at the gap's own indentation


@pytest.mark.parametrize(
    "middle,suffix,fits",
    [
        ("    try:", SAME, False),  # the example: a block nobody continues
        ("    try:", BODY, True),
        ("    args.append(", SAME, False),  # an open call the suffix does not continue
        ("    args.append(", "\n        value,\n    )\n", True),
        ("    args.append(", "\n    )\n", True),  # closed on the next line
        ("    if ready:", "\n\n        # why\n        go()\n", True),  # blanks, comments skipped
        ("    x = compute(a, b)", SAME, True),
        ("    x = compute(a, b)", BODY, False),  # a body with nothing opening it
        ("    print('(')", SAME, True),  # brackets in strings are not code
        ("    x = 1  # note: see (", SAME, True),  # nor in comments
        ("    total = a + \\", BODY, True),  # a backslash continuation
        ("    value = [1, 2,", SAME, False),
        ("    for i in range(3):", "\n    return 0\n", False),
        ("    return x", "", True),  # nothing after the gap: nothing to fit
    ],
)
def test_a_candidate_fits_when_the_next_code_line_continues_what_it_opens(middle, suffix, fits):
    assert fits_suffix("", middle, suffix) is fits


def test_a_gap_inside_a_line_is_judged_as_the_whole_line():
    # "    return " + "f(x" + ")": the suffix closes the bracket the middle opened.
    assert fits_suffix("    return ", "f(x", ")\n    y = 2\n")
    assert not fits_suffix("    return ", "f(x, (", ")\n    y = 2\n")
    assert opens("    if x:") and opens("call(a,") and not opens("x = {'a': 1}")
    assert not opens("x = d[1:]")  # a slice's colon opens no block


def test_a_line_inside_an_open_bracket_may_be_followed_by_a_deeper_line():
    # `    a,` continues a call that an earlier line opened; the next argument is deeper.
    assert fits_suffix("", "    key=value,", "\n        other,\n")
    assert fits_suffix("", "    ),", "\n        x,\n")


def test_keep_fitting_drops_misfits_but_never_every_candidate():
    middles = ["    try:", "    x = go()", "    args.append("]
    assert keep_fitting("", middles, SAME) == ["    x = go()"]
    assert keep_fitting("", ["    try:", "    y("], SAME) == ["    try:", "    y("]

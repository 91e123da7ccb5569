"""One rate limiter for generations and shares, keyed on the client's address."""

import pytest

from app.ratelimit import RateLimited, RateLimiter, client_address


def test_limit_per_client_in_a_sliding_window():
    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0], what="generations")
    limiter.check("a")
    limiter.check("a")
    limiter.check("b")
    with pytest.raises(RateLimited) as err:
        limiter.check("a")
    assert err.value.kind == "rate_limit"
    assert "Too many generations: the limit is 2 per 60 s per client" in err.value.message
    assert "Try again in 60 s" in err.value.message
    now[0] = 60.5
    limiter.check("a")


def test_zero_means_no_limit():
    limiter = RateLimiter(0)
    for _ in range(1000):
        limiter.check("a")


def test_client_address_trusts_only_the_configured_proxy_header():
    headers = {"x-forwarded-for": "6.6.6.6, 10.0.0.7"}
    # Without a trusted proxy the header is the client's to forge: the socket peer counts.
    assert client_address("127.0.0.1", headers) == "127.0.0.1"
    # Behind one, the entry the proxy appended (the last) is the client; earlier ones are forged.
    assert client_address("10.1.1.1", headers, "x-forwarded-for") == "10.0.0.7"
    assert client_address("10.1.1.1", {}, "x-forwarded-for") == "10.1.1.1"
    assert client_address(None, None) == "unknown"


def test_the_token_budget_charges_prompt_and_new_tokens_and_refunds_what_was_not_used():
    from app.ratelimit import TokenBudget

    now = [0.0]
    budget = TokenBudget(1000, clock=lambda: now[0])
    first = budget.charge("a", 100, 500)  # reserved: 600
    budget.charge("b", 100, 800)  # another client's budget is its own
    with pytest.raises(RateLimited) as err:
        budget.charge("a", 100, 400)
    message = err.value.message
    assert "costs 500 model tokens (100 of prompt + 400 to write)" in message
    assert "the budget is 1,000 per 60 s per client" in message and "400 are left" in message
    assert "Enough is back in 60 s" in message and err.value.retry_after_s == 60
    first.settle(150)  # it ended early: the rest comes back at once
    budget.charge("a", 100, 400)
    now[0] = 30.0
    with pytest.raises(RateLimited) as later:
        budget.charge("a", 100, 400)
    assert "Enough is back in 30 s" in later.value.message  # when the oldest charge expires
    now[0] = 60.5
    budget.charge("a", 100, 400)


def test_a_generation_bigger_than_the_whole_budget_is_told_so():
    from app.ratelimit import TokenBudget
    from model.errors import PlaygroundError

    with pytest.raises(PlaygroundError) as err:
        TokenBudget(1000).charge("a", 10, 16_000)
    assert err.value.kind == "too_large" and err.value.field == "max_new_tokens"
    assert "more than the whole budget of 1,000" in err.value.message
    for _ in range(100):
        TokenBudget(0).charge("a", 10**6, 10**6)  # 0: no budget


@pytest.mark.parametrize(
    "host, expected",
    [
        ("localhost:7860", ("localhost", 7860)),
        ("[::1]:80", ("[::1]", 80)),
        ("LocalHost", ("localhost", None)),
        ("localhost:1@evil.example", None),
        ("user@localhost", None),
        ("localhost:99999", None),
        ("localhost:0", None),
        ("localhost:", None),
        ("a b", None),
        ("", None),
        (None, None),
        ("localhost/evil", None),
    ],
)
def test_a_host_header_is_parsed_as_an_authority_without_userinfo(host, expected):
    from app.links import parse_authority

    assert parse_authority(host) == expected


def test_links_never_use_a_host_with_userinfo():
    from app.links import PublicLinks

    links = PublicLinks()
    assert links.base("localhost:1@evil.example") == ""
    assert links.base("localhost:7860") == "http://localhost:7860"
    assert not links.host_allowed("evil.example") and links.host_allowed("127.0.0.1:80")

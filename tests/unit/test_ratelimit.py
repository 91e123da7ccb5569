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

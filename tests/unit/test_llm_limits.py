"""agentwharf.llm.limits: calls and tokens per minute per caller, exact under concurrency."""

import asyncio

import pytest

from agentwharf.errors import RequestLimitExceeded
from agentwharf.llm.limits import RateLimit, RateLimiter


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


def run(coro):
    return asyncio.run(coro)


def test_which_limit_applies_to_whom():
    default, alice = RateLimit("user", None, 5, None), RateLimit("user", "alice", 2, None)
    endpoint, robots = RateLimit("endpoint", None, 9, None), RateLimit("service_principal", None, 3, None)
    assert default.subject("bob", "user") == "bob" and default.subject("ci", "service_principal") == "ci"
    assert alice.subject("alice", "user") == "alice" and alice.subject("bob", "user") is None
    assert alice.subject("alice", "service_principal") is None  # a principal is a user or an SP, not both
    assert endpoint.subject("bob", "user") == "*" and endpoint.subject(None, None) == "*"
    assert robots.subject("ci", "service_principal") == "ci" and robots.subject("bob", "user") is None
    assert default.subject(None, None) is None


def test_calls_are_exact_when_many_arrive_at_once(clock):
    limiter = RateLimiter(clock)
    limits = (RateLimit("user", None, 5, None),)

    async def burst():
        return await asyncio.gather(*(limiter.admit("ep", limits, "alice", "user") for _ in range(20)),
                                    return_exceptions=True)

    results = run(burst())
    assert sum(not isinstance(r, Exception) for r in results) == 5
    refused = [r for r in results if isinstance(r, RequestLimitExceeded)]
    assert len(refused) == 15 and refused[0].http_status == 429
    assert "5 calls per minute for 'alice'" in refused[0].message
    assert refused[0].headers() == [(b"retry-after", b"60")]


def test_the_window_slides_and_retry_after_says_when(clock):
    limiter = RateLimiter(clock)
    limits = (RateLimit("user", None, 2, None),)
    run(limiter.admit("ep", limits, "alice", "user"))
    clock.now += 20
    run(limiter.admit("ep", limits, "alice", "user"))
    clock.now += 10
    with pytest.raises(RequestLimitExceeded) as refused:
        run(limiter.admit("ep", limits, "alice", "user"))
    assert refused.value.retry_after == pytest.approx(30)  # the first call leaves the window then
    clock.now += 30.5
    assert run(limiter.admit("ep", limits, "alice", "user")) is not None


def test_each_caller_has_its_own_default_window_and_the_strictest_limit_wins(clock):
    limiter = RateLimiter(clock)
    limits = (RateLimit("user", None, 3, None), RateLimit("user", "bob", 1, None), RateLimit("endpoint", None, 5, None))
    for _ in range(3):
        run(limiter.admit("ep", limits, "alice", "user"))
    with pytest.raises(RequestLimitExceeded, match="'alice' \\(the default per-caller limit\\)"):
        run(limiter.admit("ep", limits, "alice", "user"))
    run(limiter.admit("ep", limits, "bob", "user"))
    with pytest.raises(RequestLimitExceeded, match="1 calls per minute for 'bob'"):
        run(limiter.admit("ep", limits, "bob", "user"))
    run(limiter.admit("ep", limits, "carol", "user"))
    with pytest.raises(RequestLimitExceeded, match="5 calls per minute for all callers together"):
        run(limiter.admit("ep", limits, "dave", "user"))
    # Another endpoint counts apart.
    assert run(limiter.admit("other", limits, "alice", "user")) is not None


def test_no_limit_no_ticket(clock):
    assert run(RateLimiter(clock).admit("ep", (), "alice", "user")) is None
    assert run(RateLimiter(clock).admit("ep", (RateLimit("user", "bob", 1, None),), "alice", "user")) is None


def test_tokens_spent_are_refused_until_they_age_out(clock):
    limiter = RateLimiter(clock)
    limits = (RateLimit("user", None, None, 100),)
    run(limiter.admit("ep", limits, "alice", "user")).settle(60)
    clock.now += 5
    run(limiter.admit("ep", limits, "alice", "user")).settle(50)
    with pytest.raises(RequestLimitExceeded, match="100 tokens per minute") as refused:
        run(limiter.admit("ep", limits, "alice", "user"))
    assert refused.value.retry_after == pytest.approx(55)  # then the first 60 leave: 50 < 100


def test_concurrent_token_calls_overshoot_by_at_most_one_call(clock):
    """Twelve calls of 30 tokens each arrive together against 100 tokens a minute: calls wait
    for reservations to settle instead of all passing a check they cannot know the answer to."""
    limiter = RateLimiter(clock, max_wait=5)
    limits = (RateLimit("endpoint", None, None, 100),)
    spent = []

    async def call():
        ticket = await limiter.admit("ep", limits, "alice", "user", prompt_tokens=3)
        await asyncio.sleep(0.01)
        spent.append(30)
        ticket.settle(30)

    async def burst():
        return await asyncio.gather(*(call() for _ in range(12)), return_exceptions=True)

    results = run(burst())
    assert sum(spent) <= 100 + 30
    assert sum(spent) >= 100  # and the budget is used, not wasted on guesses
    assert all(isinstance(r, RequestLimitExceeded) for r in results if r is not None)


def test_a_bounded_call_reserves_its_bound(clock):
    limiter = RateLimiter(clock)
    limits = (RateLimit("user", None, None, 100),)

    async def two():
        first = await limiter.admit("ep", limits, "alice", "user", prompt_tokens=10, max_tokens=50)
        # 60 reserved: a second bounded call of 60 does not fit beside it, so it waits...
        second = asyncio.ensure_future(limiter.admit("ep", limits, "alice", "user", prompt_tokens=10, max_tokens=50))
        await asyncio.sleep(0.01)
        assert not second.done()
        first.settle(20)  # ...until the first used only 20
        return await asyncio.wait_for(second, 1)

    assert run(two()).reservation == 60


def test_forget_drops_an_endpoints_windows(clock):
    limiter = RateLimiter(clock)
    limits = (RateLimit("user", None, 1, None),)
    run(limiter.admit("ep", limits, "alice", "user"))
    limiter.forget("ep")
    assert run(limiter.admit("ep", limits, "alice", "user")) is not None

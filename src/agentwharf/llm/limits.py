"""Per-caller rate limits: calls and tokens per minute, checked before a request does any work.

A limit is keyed like Databricks' (``endpoint``: every caller together; ``user`` or
``service_principal`` with a ``principal``: that one; ``user`` without one: the default, which
counts each caller on its own). Every limit that applies is checked, so the strictest wins.

Windows slide over the last 60 seconds and live in the gateway's memory; a platform with gateway
processes also counts what the others admitted (``shared_limits``: their counts, exchanged
through the database), so a limit holds across all of them.

Concurrency, and why nothing overshoots: admission runs on the event loop with no ``await``
between the check and the bookkeeping, so two requests can never both take the last call.
Tokens are known only once a call ends, so an admitted call *reserves* its tokens: the prompt
(estimated from its length) plus ``max_tokens`` when the request bounds its answer, otherwise the
average the endpoint's calls have used (a call on an endpoint never seen before reserves all
that is left). A call that would not fit beside the reservations of calls in flight waits for
them to settle, rather than being refused on a guess; once nothing else is in flight it may go
if any budget is left, which is the only way a window ends above its limit: by what that one
call used beyond its reservation. A budget actually spent is refused at once: 429
``REQUEST_LIMIT_EXCEEDED`` with ``Retry-After`` saying when enough of the window has passed.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agentwharf.errors import RequestLimitExceeded

WINDOW_SECONDS = 60.0
#: How long a call waits for reserved tokens to settle before it is refused after all.
MAX_WAIT_SECONDS = 10.0
#: Retry-After when other processes' calls fill a window (their times are not known here).
OTHERS_RETRY_AFTER = 5.0


@dataclass(frozen=True)
class RateLimit:
    key: str
    principal: str | None
    calls: int | None
    tokens: int | None

    def to_json(self) -> dict[str, Any]:
        view: dict[str, Any] = {"key": self.key, "renewal_period": "minute"}
        if self.principal is not None:
            view["principal"] = self.principal
        if self.calls is not None:
            view["calls"] = self.calls
        if self.tokens is not None:
            view["tokens"] = self.tokens
        return view

    def subject(self, caller: str | None, kind: str | None) -> str | None:
        """Whose window a call by ``caller`` (a ``user`` or ``service_principal``) counts in,
        or None when this limit does not apply to that caller."""
        if self.key == "endpoint":
            return "*"
        if caller is None:
            return None
        if self.principal is not None:
            return caller if caller == self.principal and kind == self.key else None
        if self.key == "service_principal" and kind != "service_principal":
            return None
        return caller


@dataclass
class _Window:
    """One limit's counts for one subject on one endpoint."""

    calls: deque = field(default_factory=deque)
    #: (settled at, tokens) of calls that ended.
    spent: deque = field(default_factory=deque)
    spent_total: int = 0
    reserved: int = 0
    in_flight: int = 0
    #: What other processes (gateway processes) counted in this window, last time they said.
    others_calls: int = 0
    others_tokens: int = 0

    def calls_used(self) -> int:
        return len(self.calls) + self.others_calls

    def tokens_spent(self) -> int:
        return self.spent_total + self.others_tokens

    def prune(self, now: float) -> None:
        horizon = now - WINDOW_SECONDS
        while self.calls and self.calls[0] <= horizon:
            self.calls.popleft()
        while self.spent and self.spent[0][0] <= horizon:
            self.spent_total -= self.spent.popleft()[1]

    def calls_retry_after(self, limit: int, now: float) -> float:
        # The call that must leave the window before one more fits.
        index = len(self.calls) - (limit - self.others_calls)
        if not limit:
            return WINDOW_SECONDS
        return self.calls[index] + WINDOW_SECONDS - now if 0 <= index < len(self.calls) else OTHERS_RETRY_AFTER

    def tokens_retry_after(self, limit: int, now: float) -> float:
        if self.others_tokens:
            return OTHERS_RETRY_AFTER
        excess = self.spent_total - limit + 1
        for at, tokens in self.spent:
            excess -= tokens
            if excess <= 0:
                return at + WINDOW_SECONDS - now
        return WINDOW_SECONDS


@dataclass
class Ticket:
    """An admitted call. ``settle`` with the tokens it used (or 0 if it used none)."""

    limiter: RateLimiter
    windows: list[tuple[_Window, bool]]
    reservation: int
    endpoint: str
    settled: bool = False

    def settle(self, tokens: int) -> None:
        if self.settled:
            return
        self.settled = True
        now = self.limiter.clock()
        for window, counts_tokens in self.windows:
            window.in_flight -= 1
            if counts_tokens:
                window.reserved -= self.reservation
                if tokens:
                    window.spent.append((now, tokens))
                    window.spent_total += tokens
        if tokens:
            self.limiter.learn(self.endpoint, tokens)
        self.limiter.wake()


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic, max_wait: float = MAX_WAIT_SECONDS):
        self.clock = clock
        self.max_wait = max_wait
        self._windows: dict[tuple, _Window] = {}
        #: endpoint -> average tokens of its recent calls, for reservations.
        self._typical: dict[str, float] = {}
        self._settled = asyncio.Event()

    def learn(self, endpoint: str, tokens: int) -> None:
        before = self._typical.get(endpoint)
        self._typical[endpoint] = tokens if before is None else 0.8 * before + 0.2 * tokens

    def wake(self) -> None:
        self._settled.set()
        self._settled = asyncio.Event()

    def reservation(self, endpoint: str, prompt_tokens: int, max_tokens: int | None) -> int | None:
        """Tokens a call reserves; None: unknown (it reserves whatever budget is left)."""
        if max_tokens is not None:
            return prompt_tokens + max_tokens
        typical = self._typical.get(endpoint)
        return None if typical is None else max(prompt_tokens, math.ceil(typical))

    def forget(self, endpoint: str) -> None:
        """Drop an endpoint's windows (its limits changed or it was deleted)."""
        for key in [k for k in self._windows if k[0] == endpoint]:
            del self._windows[key]
        self._typical.pop(endpoint, None)

    async def admit(self, endpoint: str, limits: tuple[RateLimit, ...], caller: str | None, kind: str | None,
                    prompt_tokens: int = 0, max_tokens: int | None = None) -> Ticket | None:
        """Admit one call, waiting while its tokens only *might* not fit.

        Returns:
            A ticket to settle when the call ends, or None when no limit applies.

        Raises:
            RequestLimitExceeded: a limit's calls or tokens for this minute are spent.
        """
        applicable = [(limit, subject) for limit in limits if (subject := limit.subject(caller, kind)) is not None]
        if not applicable:
            return None
        deadline = self.clock() + self.max_wait
        while True:
            settled = self._settled
            decision = self._try(endpoint, applicable, prompt_tokens, max_tokens)
            if isinstance(decision, Ticket):
                return decision
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise RequestLimitExceeded(f"Rate limit of endpoint {endpoint!r}: the tokens of calls in flight use what is "
                                           "left of this minute's budget; retry shortly", retry_after=1.0)
            try:
                await asyncio.wait_for(settled.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    def own_counts(self) -> dict[tuple[str, RateLimit, str], tuple[int, int]]:
        """(calls, tokens spent or reserved) this process counted in each window (for the others)."""
        now = self.clock()
        counts = {}
        for key, window in self._windows.items():
            window.prune(now)
            counts[key] = (len(window.calls), window.spent_total + window.reserved)
        return counts

    def set_others(self, counts: dict[tuple[str, RateLimit, str], tuple[int, int]]) -> None:
        """What other processes counted, per window (a window missing here: nothing)."""
        for key, window in self._windows.items():
            window.others_calls, window.others_tokens = counts.get(key, (0, 0))
        for (endpoint, limit, subject), (calls, tokens) in counts.items():
            window = self._window(endpoint, limit, subject)
            window.others_calls, window.others_tokens = calls, tokens
        self.wake()  # a call waiting for tokens may fit now

    def _window(self, endpoint: str, limit: RateLimit, subject: str) -> _Window:
        # Limits of one endpoint differ in (key, principal), so the limit itself names its window.
        key = (endpoint, limit, subject)
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window()
        return window

    def _try(self, endpoint: str, applicable: list, prompt_tokens: int, max_tokens: int | None) -> Ticket | None:
        """Admit now (a ticket), or None to wait. Raises when a budget is spent. No awaits here."""
        now = self.clock()
        wanted = self.reservation(endpoint, prompt_tokens, max_tokens)
        chosen, reservation = [], 0
        for limit, subject in applicable:
            window = self._window(endpoint, limit, subject)
            window.prune(now)
            if limit.calls is not None and window.calls_used() >= limit.calls:
                raise RequestLimitExceeded(self._message(endpoint, limit, subject, f"{limit.calls} calls"),
                                           retry_after=window.calls_retry_after(limit.calls, now))
            if limit.tokens is not None:
                if window.tokens_spent() >= limit.tokens:
                    raise RequestLimitExceeded(self._message(endpoint, limit, subject, f"{limit.tokens} tokens"),
                                               retry_after=window.tokens_retry_after(limit.tokens, now))
                left = limit.tokens - window.tokens_spent() - window.reserved
                fits = wanted is not None and wanted <= left
                if not fits and window.in_flight:
                    return None  # it might fit once the calls in flight settle
                reservation = max(reservation, wanted if wanted is not None else max(left, 0))
            chosen.append((window, limit.tokens is not None))
        for window, counts_tokens in chosen:
            window.calls.append(now)
            window.in_flight += 1
            if counts_tokens:
                window.reserved += reservation
        return Ticket(self, chosen, reservation, endpoint)

    @staticmethod
    def _message(endpoint: str, limit: RateLimit, subject: str, budget: str) -> str:
        whose = "all callers together" if subject == "*" else (
            f"{subject!r}" if limit.principal else f"{subject!r} (the default per-caller limit)")
        return f"Rate limit exceeded on endpoint {endpoint!r}: {budget} per minute for {whose}"

"""Kept-alive connections to the providers of the LLM endpoints this process serves.

MLflow 3.17's AI Gateway makes each provider call in a new aiohttp session over a new connector
(``mlflow.gateway.providers.utils._aiohttp_post``), closed when the call ends: every call pays a
TCP connect (a TLS handshake too, for https providers), the provider an accept, and the event
loop the connector's setup and teardown. Profiled under the ``llm-overhead`` benchmark, that was
the largest share of the gateway's time on a call (``BaseConnector.connect`` and the session's
setup and close: ~17% of the event loop's busy time, plus the provider's accept in its latency).

MLflow takes no session or connector as a parameter; the one seam is the connector it asks
``mlflow.gateway.ssrf.build_ssrf_guarded_connector`` for on each call. ``install`` wraps that
function so that, while one of the platform's calls is in progress (``ProviderPool.lent``, a
context variable), it answers with the pool's long-lived connector, and with MLflow's own answer
at any other time. Everything else stays MLflow's: the session it builds per call (so headers,
and the key in them, are per call, never shared), the headers it strips, the URL check, its
timeout, its error mapping. MLflow's server runs in a process of its own and never sees this.

SSRF protection is kept as MLflow applies it: a call made while MLflow's
``upstream_protection_enabled()`` holds gets a connector whose resolver is MLflow's
``SSRFGuardedResolver`` (a connection is checked when it is opened, as before); other calls get a
plain one. The two pools never share a connection.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import aiohttp

#: Idle provider connections are closed after this long. Below the keep-alive of common model
#: servers (uvicorn's, hence vLLM's, is 5 s), so the platform closes an idle connection before
#: the provider does: a POST on a connection the provider is closing fails, and aiohttp retries
#: only idempotent methods.
KEEPALIVE_SECONDS = 4.0

_lent: ContextVar[ProviderPool | None] = ContextVar("agentwharf_provider_pool", default=None)


class _Done:
    """An awaitable that is already done: what ``close`` returns, so that a caller that does
    not await it (aiohttp tolerates that) leaves no coroutine behind to warn about."""

    def __await__(self):
        return iter(())


class _KeptConnector(aiohttp.TCPConnector):
    """A connector that outlives the sessions using it: MLflow's per-call session owns the
    connector it is given and closes it on exit (and MLflow closes it again in a ``finally``),
    so ``close`` keeps the pool; ``shutdown`` closes it for real."""

    def close(self, *, abort_ssl: bool = False) -> Any:
        return _Done()

    def shutdown(self) -> Any:
        return super().close()


class ProviderPool:
    """The connections to providers, shared by every call of every LLM endpoint of a process.

    No limit on how many are open at once (``limit=0``): each call had a connector of its own
    before, and a long stream must not hold up other calls.
    """

    def __init__(self, keepalive_seconds: float = KEEPALIVE_SECONDS):
        self.keepalive_seconds = keepalive_seconds
        self._connectors: dict[bool, _KeptConnector] = {}

    def connector(self, guarded: bool) -> aiohttp.TCPConnector:
        """The pool's connector, made on first use (aiohttp needs the running loop for it)."""
        connector = self._connectors.get(guarded)
        if connector is None or connector.closed:
            from mlflow.gateway.ssrf import SSRFGuardedResolver

            resolver = SSRFGuardedResolver() if guarded else None
            connector = self._connectors[guarded] = _KeptConnector(
                resolver=resolver, limit=0, keepalive_timeout=self.keepalive_seconds)
        return connector

    @contextlib.contextmanager
    def lent(self) -> Iterator[None]:
        """MLflow's provider calls made inside this block (by this task) use the pool."""
        token = _lent.set(self)
        try:
            yield
        finally:
            _lent.reset(token)

    async def close(self) -> None:
        connectors, self._connectors = list(self._connectors.values()), {}
        for connector in connectors:
            await connector.shutdown()


def install() -> None:
    """Have MLflow's provider calls use the lent pool, if any (idempotent; MLflow's own
    behaviour when no pool is lent, so it is never undone)."""
    from mlflow.gateway import ssrf

    original = ssrf.build_ssrf_guarded_connector
    if getattr(original, "agentwharf_wrapped", False):
        return

    def build_connector() -> aiohttp.TCPConnector | None:
        pool = _lent.get()
        if pool is None:
            return original()
        return pool.connector(guarded=ssrf.upstream_protection_enabled())

    build_connector.agentwharf_wrapped = True  # type: ignore[attr-defined]
    ssrf.build_ssrf_guarded_connector = build_connector

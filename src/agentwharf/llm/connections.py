"""Kept-alive connections to the providers of the LLM endpoints this process serves.

MLflow 3.17's AI Gateway makes each provider call in a new aiohttp session over a new connector
(``mlflow.gateway.providers.utils._aiohttp_post``), closed when the call ends: every call pays a
TCP connect (a TLS handshake too, for https providers), the provider an accept, and the event
loop the connector's setup and teardown, then the session's (its cookie jar, its default
headers, its close). Profiled under the ``llm-overhead`` benchmark, the connector was the largest
share of the gateway's time on a call (~17% of the event loop's busy time, plus the provider's
accept in its latency); the session alone, once connections were kept, was still ~150 us a call
on a loaded 2-core machine (issue 12, item 7).

MLflow takes no session or connector as a parameter; its one egress helper, ``_aiohttp_post``
(every provider call, plain or streamed, goes through it), is the seam. ``install`` wraps it so
that, while one of the platform's calls is in progress (``ProviderPool.lent``, a context
variable), the request goes out on the pool's long-lived session, and through MLflow's own
helper at any other time. The wrapper does what MLflow's helper does, in its order and with its
names: the headers it strips and the ``Accept-Encoding`` it sets, the URL it builds, its SSRF
check of the URL, its timeout, no redirects, its read buffer, its 502 for a refused upstream.
What differs is only where the session lives, and so what must not be shared through it: the
headers (and the key in them) go with each request, never on the session, and the session keeps
no cookies (``DummyCookieJar``), so nothing a provider sets reaches another call. MLflow's
provider code builds the request and reads the answer as before; its server runs in a process
of its own and never sees this.

SSRF protection is kept as MLflow applies it: a call made while MLflow's
``upstream_protection_enabled()`` holds has its URL checked (``assert_public_upstream_url``) and
goes out through a connector whose resolver is MLflow's ``SSRFGuardedResolver`` (a connection
is checked when it is opened, as before); other calls get a plain one. The two pools never share
a connection. A call MLflow makes without protection (``ssrf_protect=False``: the server calling
itself) is left to MLflow's helper.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Iterator
from contextvars import ContextVar
from typing import Any

import aiohttp
import orjson

#: Idle provider connections are closed after this long. Below the keep-alive of common model
#: servers (uvicorn's, hence vLLM's, is 5 s), so the platform closes an idle connection before
#: the provider does: a POST on a connection the provider is closing fails, and aiohttp retries
#: only idempotent methods.
KEEPALIVE_SECONDS = 4.0
#: MLflow's read buffer for provider answers (large SSE ``data:`` lines).
READ_BUFSIZE = 2**20

_lent: ContextVar[ProviderPool | None] = ContextVar("agentwharf_provider_pool", default=None)


def _json(value: Any) -> str:
    # The payload was parsed from the caller's JSON by orjson, so orjson can write it back.
    return orjson.dumps(value).decode()


class ProviderPool:
    """The connections to providers, shared by every call of every LLM endpoint of a process.

    No limit on how many are open at once (``limit=0``): each call had a connector of its own
    before, and a long stream must not hold up other calls.
    """

    def __init__(self, keepalive_seconds: float = KEEPALIVE_SECONDS):
        self.keepalive_seconds = keepalive_seconds
        self._connectors: dict[bool, aiohttp.TCPConnector] = {}
        self._sessions: dict[bool, aiohttp.ClientSession] = {}

    def connector(self, guarded: bool) -> aiohttp.TCPConnector:
        """The pool's connector, made on first use (aiohttp needs the running loop for it)."""
        connector = self._connectors.get(guarded)
        if connector is None or connector.closed:
            from mlflow.gateway.ssrf import SSRFGuardedResolver

            resolver = SSRFGuardedResolver() if guarded else None
            connector = self._connectors[guarded] = aiohttp.TCPConnector(
                resolver=resolver, limit=0, keepalive_timeout=self.keepalive_seconds)
        return connector

    def session(self, guarded: bool) -> aiohttp.ClientSession:
        """The pool's session over ``connector(guarded)``: no default headers, no cookies."""
        session = self._sessions.get(guarded)
        if session is None or session.closed:
            session = self._sessions[guarded] = aiohttp.ClientSession(
                connector=self.connector(guarded), connector_owner=False, cookie_jar=aiohttp.DummyCookieJar(),
                read_bufsize=READ_BUFSIZE, json_serialize=_json)
        return session

    @contextlib.contextmanager
    def lent(self) -> Iterator[None]:
        """MLflow's provider calls made inside this block (by this task) use the pool."""
        token = _lent.set(self)
        try:
            yield
        finally:
            _lent.reset(token)

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        connectors, self._connectors = list(self._connectors.values()), {}
        for session in sessions:
            await session.close()
        for connector in connectors:
            await connector.close()


def _pooled_post(original):
    """MLflow's ``_aiohttp_post`` (``original``), on the lent pool's session when there is one."""
    from fastapi import HTTPException
    from mlflow.environment_variables import MLFLOW_GATEWAY_ROUTE_TIMEOUT_SECONDS
    from mlflow.gateway import ssrf
    from mlflow.gateway.providers.utils import _STRIPPED_HEADERS, SUPPORTED_ACCEPT_ENCODING
    from mlflow.utils.uri import append_to_uri_path

    # MLflow's URL building (parse, check the query for traversal, join, unparse) gives the same
    # URL for the same endpoint and route every call: ~3% of the gateway's time on a call, once.
    url_of = functools.lru_cache(maxsize=1024)(append_to_uri_path)

    @contextlib.asynccontextmanager
    async def post(headers: dict[str, str], base_url: str, path: str, payload: dict[str, Any], *,
                   ssrf_protect: bool = True) -> AsyncIterator[aiohttp.ClientResponse]:
        pool = _lent.get()
        if pool is None or not ssrf_protect:
            async with original(headers, base_url, path, payload, ssrf_protect=ssrf_protect) as response:
                yield response
            return
        request_headers = {k: v for k, v in headers.items() if k.lower() not in _STRIPPED_HEADERS}
        request_headers["Accept-Encoding"] = SUPPORTED_ACCEPT_ENCODING
        url = url_of(base_url, path)
        try:
            ssrf.assert_public_upstream_url(url)
            session = pool.session(guarded=ssrf.upstream_protection_enabled())
            timeout = aiohttp.ClientTimeout(total=MLFLOW_GATEWAY_ROUTE_TIMEOUT_SECONDS.get())
            async with session.post(url, json=payload, headers=request_headers, timeout=timeout,
                                    allow_redirects=False) as response:
                yield response
        except ssrf.GatewaySSRFProtectionError as error:
            raise HTTPException(status_code=502, detail=str(error)) from error

    post.agentwharf_wrapped = True  # type: ignore[attr-defined]
    return post


def install() -> None:
    """Have MLflow's provider calls use the lent pool, if any (idempotent; MLflow's own
    behaviour when no pool is lent, so it is never undone)."""
    from mlflow.gateway.providers import utils

    if not getattr(utils._aiohttp_post, "agentwharf_wrapped", False):
        utils._aiohttp_post = _pooled_post(utils._aiohttp_post)

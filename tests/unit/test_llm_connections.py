"""The provider connection pool: MLflow's egress helper sends the platform's calls on the pool's
long-lived session (headers per request, no cookies), calls outside the platform's go through
MLflow's own helper, and SSRF-guarded calls keep MLflow's checks and a guarded pool of their own.
(That calls really reuse a connection, and each sends its own key, is in the integration tests.)"""

import asyncio
import contextlib

import aiohttp
import pytest
from fastapi import HTTPException
from mlflow.gateway import ssrf
from mlflow.gateway.providers import utils

from agentwharf.llm import connections
from agentwharf.llm.connections import ProviderPool


@pytest.fixture
def installed(monkeypatch):
    """``install`` for this test only (monkeypatch puts MLflow's helper back after it)."""
    monkeypatch.setattr(utils, "_aiohttp_post", utils._aiohttp_post)
    monkeypatch.delenv("MLFLOW_GATEWAY_API_BASE_ALLOW_PRIVATE_IPS", raising=False)
    connections.install()
    wrapped = utils._aiohttp_post
    connections.install()  # a second platform in the process: still one wrapper around MLflow's helper
    assert utils._aiohttp_post is wrapped
    return wrapped


def fake_original(calls: list):
    @contextlib.asynccontextmanager
    async def original(headers, base_url, path, payload, *, ssrf_protect=True):
        calls.append((headers, base_url, path, payload, ssrf_protect))
        yield "mlflow's response"

    return original


class FakeSession:
    def __init__(self):
        self.posts = []

    @contextlib.asynccontextmanager
    async def post(self, url, **kwargs):
        self.posts.append((url, kwargs))
        yield "pooled response"


async def _post(post, **kwargs):
    async with post({"Authorization": "Bearer k", "accept-encoding": "br", "X-MLflow-Authorization": "x"},
                    kwargs.pop("base_url", "http://provider.example/v1"), "chat/completions", {"messages": []},
                    **kwargs) as response:
        return response


def test_calls_outside_the_platforms_and_unprotected_ones_go_through_mlflows_helper():
    calls = []
    post = connections._pooled_post(fake_original(calls))

    async def scenario():
        assert await _post(post) == "mlflow's response"
        with ProviderPool().lent():
            assert await _post(post, ssrf_protect=False) == "mlflow's response"

    asyncio.run(scenario())
    assert [call[4] for call in calls] == [True, False]


def test_a_lent_pool_sends_on_its_session_with_mlflows_headers_url_and_options(monkeypatch):
    pool, session = ProviderPool(), FakeSession()
    monkeypatch.setattr(pool, "session", lambda guarded: session)
    post = connections._pooled_post(fake_original([]))

    async def scenario():
        with pool.lent():
            return await _post(post)

    assert asyncio.run(scenario()) == "pooled response"
    [(url, options)] = session.posts
    assert url == "http://provider.example/v1/chat/completions"
    assert options["headers"] == {"Authorization": "Bearer k", "Accept-Encoding": utils.SUPPORTED_ACCEPT_ENCODING}
    assert options["json"] == {"messages": []} and options["allow_redirects"] is False
    assert isinstance(options["timeout"], aiohttp.ClientTimeout)


def test_a_protected_call_to_a_private_address_is_refused_before_any_connection(monkeypatch):
    pool, session = ProviderPool(), FakeSession()
    monkeypatch.setattr(pool, "session", lambda guarded: session)
    post = connections._pooled_post(fake_original([]))

    async def scenario():
        token = ssrf.upstream_ssrf_protection.set(True)
        try:
            with pool.lent():
                await _post(post, base_url="http://10.0.0.1/v1")
        finally:
            ssrf.upstream_ssrf_protection.reset(token)

    with pytest.raises(HTTPException) as refused:
        asyncio.run(scenario())
    assert refused.value.status_code == 502 and session.posts == []


def test_the_pools_sessions_last_keep_no_cookies_and_guarded_calls_have_their_own():
    async def scenario():
        pool = ProviderPool()
        plain, guarded = pool.session(False), pool.session(True)
        assert pool.session(False) is plain and guarded is not plain
        assert isinstance(plain.cookie_jar, aiohttp.DummyCookieJar) and not plain.headers
        assert plain.connector is pool.connector(False) and not plain.connector_owner
        assert isinstance(guarded.connector._resolver, ssrf.SSRFGuardedResolver)
        assert not isinstance(plain.connector._resolver, ssrf.SSRFGuardedResolver)
        connectors = plain.connector, guarded.connector
        await pool.close()
        assert plain.closed and guarded.closed and all(connector.closed for connector in connectors)

    asyncio.run(scenario())


def test_install_wraps_mlflows_helper_once(installed):
    assert installed.agentwharf_wrapped

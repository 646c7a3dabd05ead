"""The provider connection pool: MLflow's per-call session cannot close it, calls outside the
platform's get MLflow's own connector, and SSRF-guarded calls get a guarded pool of their own.
(That calls really reuse a connection, and each sends its own key, is in the integration tests.)"""

import asyncio

import aiohttp
import pytest
from mlflow.gateway import ssrf

from agentwharf.llm import connections
from agentwharf.llm.connections import ProviderPool


@pytest.fixture
def installed(monkeypatch):
    """``install`` for this test only (monkeypatch puts MLflow's function back after it)."""
    monkeypatch.setattr(ssrf, "build_ssrf_guarded_connector", ssrf.build_ssrf_guarded_connector)
    monkeypatch.delenv("MLFLOW_GATEWAY_API_BASE_ALLOW_PRIVATE_IPS", raising=False)
    connections.install()
    wrapped = ssrf.build_ssrf_guarded_connector
    connections.install()  # a second platform in the process: still one wrapper around MLflow's function
    assert ssrf.build_ssrf_guarded_connector is wrapped


async def _like_mlflow_per_call() -> aiohttp.BaseConnector | None:
    """What ``mlflow.gateway.providers.utils._aiohttp_post`` does with the connector it asks for:
    a session that owns it, closed at the end of the call, then the connector closed again."""
    connector = ssrf.build_ssrf_guarded_connector()
    async with aiohttp.ClientSession(connector=connector):
        pass
    if connector is not None and not connector.closed:
        await connector.close()
    return connector


def test_a_lent_pool_outlives_every_call_until_it_is_closed(installed):
    async def scenario():
        pool = ProviderPool()
        with pool.lent():
            first, second = await _like_mlflow_per_call(), await _like_mlflow_per_call()
        assert first is second and not first.closed
        await pool.close()
        assert first.closed

    asyncio.run(scenario())


def test_calls_outside_the_platforms_get_mlflows_own_connector(installed):
    async def scenario():
        pool = ProviderPool()
        with pool.lent():
            pass
        assert await _like_mlflow_per_call() is None  # MLflow's answer when its protection is off
        await pool.close()

    asyncio.run(scenario())


def test_calls_mlflow_guards_get_a_guarded_pool_apart_from_the_plain_one(installed):
    async def scenario():
        pool = ProviderPool()
        with pool.lent():
            plain = await _like_mlflow_per_call()
            token = ssrf.upstream_ssrf_protection.set(True)
            try:
                guarded = await _like_mlflow_per_call()
            finally:
                ssrf.upstream_ssrf_protection.reset(token)
        assert guarded is not plain
        assert isinstance(guarded._resolver, ssrf.SSRFGuardedResolver)
        assert not isinstance(plain._resolver, ssrf.SSRFGuardedResolver)
        await pool.close()

    asyncio.run(scenario())

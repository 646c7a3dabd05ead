"""The gateway-process tests again on the scale-out configuration: every store in PostgreSQL
(where the published state also sends NOTIFY), artifacts in S3, and workers over TCP, so the
gateways reach them with each worker's handshake secret."""

from __future__ import annotations

import pytest

from tests.integration.scaleout.conftest import scaleout_env
from tests.integration.test_gateways import ENV, gateway_cluster
from tests.integration.test_gateways import (  # noqa: F401 (collected here again)
    test_a_gateway_answers_only_the_serving_routes,
    test_a_rate_limit_holds_across_gateways,
    test_changes_made_on_the_control_process_reach_every_gateway,
    test_each_gateway_serves_the_endpoint_and_stores_its_records,
    test_kill_9_of_a_gateway_under_load_loses_no_acknowledged_request,
    test_traffic_on_gateways_keeps_a_version_up_and_a_gateway_wakes_it_from_zero,
)


@pytest.fixture(scope="module")
def cluster(postgres, s3, tmp_path_factory):
    env = {**ENV, **scaleout_env(postgres, s3, "gateways"), "AGENTWHARF_WORKER_TRANSPORT": "tcp"}
    with gateway_cluster(tmp_path_factory.mktemp("scaleout-gateways") / "home", env) as control:
        yield control


def test_gateways_reach_the_workers_over_tcp_with_their_secrets_sealed(cluster):
    import sqlalchemy as sa

    from agentwharf.settings import sqlalchemy_url

    engine = sa.create_engine(sqlalchemy_url(cluster.database_url))
    try:
        with engine.connect() as db:
            payloads = [row[0] for row in db.execute(sa.text(
                "SELECT payload FROM aw_serving_state WHERE kind = 'version' AND payload IS NOT NULL"))]
    finally:
        engine.dispose()
    import orjson

    workers = [worker for payload in payloads for worker in orjson.loads(payload)["workers"]]
    assert workers and all(address.startswith("tcp://127.0.0.1:") and secret for address, secret in workers)

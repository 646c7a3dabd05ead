"""Config updates are serialized by the database, not only by one process's lock: an update
claims the endpoint's config version in its own transaction, and the later of two loses."""

from __future__ import annotations

import pytest

from agentwharf.control.endpoints import EndpointService
from agentwharf.errors import Conflict

CONFIG = {"served_entities": [{"name": "v1", "entity_name": "main.x.bot", "entity_version": "1", "workload_size": "Small"}],
          "traffic_config": {"routes": [{"served_model_name": "v1", "traffic_percentage": 100}]}}


def _service(db) -> EndpointService:
    return EndpointService(db, None, None, {"Small": 1}, 15)


def _serving(db, service: EndpointService) -> None:
    spec = service.parse(CONFIG)
    service._insert("bot", spec, {}, None, None, "1", None)
    with db.session() as session:  # as the reconciler leaves it once v1 answers
        from agentwharf.store.models import Endpoint

        endpoint = session.query(Endpoint).filter_by(name="bot").one()
        endpoint.update_state, endpoint.pending_routes, endpoint.routes, endpoint.config_version = \
            "NOT_UPDATING", None, spec.routes_json(), 1
        for entity in endpoint.entities:
            entity.pending = False


def test_of_two_updates_checked_against_the_same_config_the_second_is_refused(db):
    one, two = _service(db), _service(db)  # two control processes, one database
    _serving(db, one)
    seen = one.get("bot").config_version
    spec = one.parse(CONFIG)
    one._write_update("bot", spec, [], {"by": "one"}, seen)
    with pytest.raises(Conflict) as refused:
        two._write_update("bot", spec, [], {"by": "two"}, seen)
    assert "read its config again" in refused.value.message
    after = two.get("bot")
    assert after.tags == {"by": "one"} and after.config_version == seen + 1 and after.update_state == "NOT_UPDATING"
    two._write_update("bot", spec, [], {"by": "two"}, after.config_version)  # read again: it goes through
    assert two.get("bot").tags == {"by": "two"}


def test_an_update_in_progress_refuses_another(db):
    service = _service(db)
    _serving(db, service)
    seen = service.get("bot").config_version
    bigger = {**CONFIG, "served_entities": CONFIG["served_entities"] + [
        {"name": "v2", "entity_name": "main.x.bot", "entity_version": "2", "workload_size": "Small"}]}
    spec = service.parse(bigger)
    service._write_update("bot", spec, [spec.entities[1]], {}, seen)  # a new version: pending, IN_PROGRESS
    assert service.get("bot").update_state == "IN_PROGRESS"
    with pytest.raises(Conflict):
        service._write_update("bot", service.parse(CONFIG), [], {}, seen)

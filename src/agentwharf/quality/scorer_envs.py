"""Where a custom scorer's code runs when it needs packages the platform does not have.

    platform              the platform's own Python (the default; still sandboxed)
    model                 the environment of the model version whose trace it scores (the
                          agent's packages: a scorer that imports the agent's own code)
    models:/NAME/VERSION  the environment of a registered model version named for it, built
                          once by the platform, as a deploy builds a model's (its logged
                          requirements; log a tiny pyfunc model whose requirements are the
                          scorer's)

Set per scorer of an endpoint's experiment (``PUT /api/2.0/serving-endpoints/{name}/scorers/
{scorer}/environment``, ``agentwharf monitor scorer-env``); the scoring process reads the choice
(``aw_scorer_environments``) within a second. A registered environment is built by the
platform's quality loop (``build_pending``); until it is READY the scorer's traces get an error
assessment saying so.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy import select, text

from agentwharf.errors import InvalidParameter, NotFound
from agentwharf.store.database import Database
from agentwharf.store.models import ScorerEnvironment

log = logging.getLogger("agentwharf.quality")

_REGISTERED = re.compile(r"^models:/[^/]+/[^/]+$")
_SCORER = text("SELECT 1 FROM scorers WHERE experiment_id = :experiment AND scorer_name = :name")


def parse(value: object) -> tuple[str, str | None]:
    """``platform``, ``model`` or ``models:/NAME/VERSION`` -> (kind, model URI).

    Raises:
        InvalidParameter: anything else.
    """
    if value in ("platform", "model"):
        return str(value), None
    if isinstance(value, str) and _REGISTERED.match(value):
        return "registered", value
    raise InvalidParameter(f"environment must be 'platform', 'model' or 'models:/NAME/VERSION', got {value!r}")


def view(row: ScorerEnvironment | None, scorer: str) -> dict:
    if row is None:
        return {"scorer": scorer, "environment": "platform", "state": "READY"}
    shown = row.model_uri if row.kind == "registered" else row.kind
    found = {"scorer": scorer, "environment": shown, "state": row.state, "updated_by": row.updated_by,
             "updated_at": row.updated_at}
    if row.message:
        found["message"] = row.message
    return found


def get(db: Database, experiment_id: str, scorer: str) -> dict:
    with db.session() as session:
        return view(session.get(ScorerEnvironment, (experiment_id, scorer)), scorer)


def put(db: Database, experiment_id: str, scorer: str, value: object, who: str | None) -> dict:
    """Choose the scorer's environment (``platform`` removes the choice).

    Raises:
        InvalidParameter: not an environment.
        NotFound: no scorer of that name is registered on the experiment.
    """
    kind, model_uri = parse(value)
    with db.session() as session:
        if session.execute(_SCORER, {"experiment": int(experiment_id), "name": scorer}).first() is None:
            raise NotFound(f"No scorer {scorer!r} is registered on experiment {experiment_id} (register it first)")
        row = session.get(ScorerEnvironment, (experiment_id, scorer))
        if kind == "platform":
            if row is not None:
                session.delete(row)
            return view(None, scorer)
        if row is None:
            row = ScorerEnvironment(experiment_id=experiment_id, scorer=scorer)
            session.add(row)
        row.kind, row.model_uri, row.updated_by = kind, model_uri, who
        row.python, row.message = None, None
        # A model environment is the serving one (ready when the version is); a registered one
        # is built by the quality loop.
        row.state = "READY" if kind == "model" else "BUILDING"
        session.flush()
        return view(row, scorer)


async def build_pending(db: Database, prepare: Callable[[str, str, Path], Awaitable[str]], logs_dir: Path) -> None:
    """Build the registered environments asked for (one at a time, in the quality loop).

    ``prepare(key, model_uri, log_path)`` returns the environment's Python (the supervisor's
    ``Environments.prepare``: reused when the same requirements were built already)."""
    import asyncio

    def pending() -> list[tuple[str, str, str]]:
        with db.session() as session:
            rows = session.scalars(select(ScorerEnvironment).where(ScorerEnvironment.state == "BUILDING")).all()
            return [(r.experiment_id, r.scorer, r.model_uri) for r in rows if r.model_uri]

    def record(experiment_id: str, scorer: str, model_uri: str, python: str | None, message: str | None) -> None:
        with db.session() as session:
            row = session.get(ScorerEnvironment, (experiment_id, scorer))
            if row is None or row.model_uri != model_uri:  # changed meanwhile
                return
            row.state, row.python, row.message = ("READY", python, None) if python else ("FAILED", None, message)

    for experiment_id, scorer, model_uri in await asyncio.to_thread(pending):
        log_path = logs_dir / "scorers" / f"{experiment_id}-{_safe(scorer)}-environment.log"
        try:
            python = await prepare(f"scorer:{experiment_id}/{scorer}", model_uri, log_path)
        except Exception as error:  # the builder's message, for the error assessments and the API
            log.warning("the environment of scorer %r (%s) could not be built: %s", scorer, model_uri, error)
            await asyncio.to_thread(record, experiment_id, scorer, model_uri, None, str(error)[:4000])
            continue
        log.info("scorer %r of experiment %s runs in %s", scorer, experiment_id, python)
        await asyncio.to_thread(record, experiment_id, scorer, model_uri, python, None)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:100]

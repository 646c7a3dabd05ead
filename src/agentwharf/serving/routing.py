"""Which worker pool serves a request: the live traffic split of every endpoint.

The control plane rebuilds an endpoint's ``EndpointRoutes`` whenever its config changes and
swaps it in whole, so the gateway never sees half an update.
"""

from __future__ import annotations

import asyncio
import bisect
import random
from dataclasses import dataclass, field

from agentwharf.llm.limits import RateLimit


def worker_key(endpoint_name: str, entity_name: str) -> str:
    """The supervisor's key for one served entity of one endpoint."""
    return f"{endpoint_name}/{entity_name}"


@dataclass(frozen=True)
class LlmRoute:
    """What the gateway needs to answer an LLM endpoint's calls itself."""

    #: ``llm/v1/chat``, ``llm/v1/completions`` or ``llm/v1/embeddings``.
    task: str
    #: served entity name -> the provider's model name (to tell which one answered).
    models: dict[str, str] = field(default_factory=dict)

    def entity_of(self, model: str | None) -> str | None:
        return next((entity for entity, name in self.models.items() if name == model), None)


@dataclass(frozen=True)
class EndpointRoutes:
    name: str
    #: served entity name -> supervisor key, for every served entity (0% ones included).
    entities: dict[str, str]
    #: (supervisor key, traffic percentage) for every route with traffic.
    routes: tuple[tuple[str, int], ...]
    #: The endpoint's MLflow experiment, where its traces go.
    experiment_id: str | None = None
    #: supervisor key -> (registered model name, version), for trace tags.
    models: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: supervisor key -> API scopes of the on-behalf-of token its model asked for.
    user_scopes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: supervisor key -> the model's system credential, so records never keep it.
    system_tokens: dict[str, str] = field(default_factory=dict)
    #: A config update is loading new versions (requests to an endpoint with no traffic yet wait).
    updating: bool = False
    #: The last config update failed (an endpoint with no traffic then refuses at once).
    update_failed: bool = False
    #: Set for an LLM endpoint (external models): the gateway answers it, no worker does.
    llm: LlmRoute | None = None
    #: The endpoint's rate limits (``ai-gateway``), checked before any work.
    limits: tuple[RateLimit, ...] = ()
    _cumulative: tuple[int, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        total, cumulative = 0, []
        for _key, percentage in self.routes:
            total += percentage
            cumulative.append(total)
        object.__setattr__(self, "_cumulative", tuple(cumulative))

    def pick(self, draw: float | None = None) -> str | None:
        """A supervisor key chosen by traffic percentage; ``draw`` in [0, 100) for tests."""
        if not self._cumulative:
            return None
        if len(self.routes) == 1:
            return self.routes[0][0]
        point = (random.random() * self._cumulative[-1]) if draw is None else draw
        return self.routes[bisect.bisect_right(self._cumulative, point)][0]


class RouteTable:
    def __init__(self) -> None:
        self._endpoints: dict[str, EndpointRoutes] = {}
        self._changed: asyncio.Event | None = None

    def get(self, endpoint_name: str) -> EndpointRoutes | None:
        return self._endpoints.get(endpoint_name)

    def set(self, routes: EndpointRoutes) -> None:
        self._endpoints[routes.name] = routes
        self._notify()

    def remove(self, endpoint_name: str) -> None:
        self._endpoints.pop(endpoint_name, None)
        self._notify()

    async def wait_changed(self, timeout: float) -> None:
        """Return after the next change of any endpoint's routes, or after ``timeout``."""
        if self._changed is None:
            self._changed = asyncio.Event()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def names(self) -> list[str]:
        return list(self._endpoints)

    def any_limited(self) -> bool:
        """Whether any endpoint has rate limits (``ai-gateway``)."""
        return any(routes.limits for routes in self._endpoints.values())

"""What every served model interface has in common: the routes, one validated request (``Call``),
how an answer is reshaped for the route it came in on (``Dialect``), and the 400s that name the
shape an endpoint expects.

An interface validates a request *before* any model code runs, so a bad body is a 400 naming
the field, never a 500 from inside the model.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import pydantic

#: The gateway's routes, as the worker sees them in a request's metadata.
INVOCATIONS, RESPONSES, CHAT = "invocations", "responses", "chat"
ROUTE_PATHS = {
    INVOCATIONS: "POST /serving-endpoints/{name}/invocations",
    RESPONSES: "POST /serving-endpoints/responses (OpenAI Responses)",
    CHAT: "POST /serving-endpoints/chat/completions (OpenAI Chat Completions)",
}
#: MLflow's scoring protocol keys (``mlflow.pyfunc.scoring_server.SUPPORTED_FORMATS``).
SCORING_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")


class InvalidRequest(Exception):
    """The request does not fit the model's interface; the message names what was wrong."""


#: Labels pydantic puts in an error's path for the members of a union, not field names.
_UNION_LABELS = {"str", "int", "float", "bool", "bytes", "none", "dict", "list"}


def _is_field(part: object) -> bool:
    # The schemas' fields are snake_case; union members show up as validator labels
    # ("function-after[...]"), type names ("str") or class names ("Message").
    if isinstance(part, int):
        return True
    text = str(part)
    return "[" not in text and text not in _UNION_LABELS and not text[:1].isupper()


def describe_validation_error(error: pydantic.ValidationError) -> str:
    """``input.0.role: Field required``: the field path without pydantic's internal labels."""
    parts = []
    for detail in error.errors()[:5]:
        path = ".".join(str(p) for p in detail["loc"] if _is_field(p))
        parts.append(f"{path or 'body'}: {detail['msg']}")
    return "; ".join(dict.fromkeys(parts))


#: The request shapes ``looks_like`` tells apart, as error messages name them.
SCORING_LOOK = "MLflow's scoring protocol"
CHAT_LOOK = "a chat request ('messages')"
RESPONSES_LOOK = "a Responses request ('input')"


def looks_like(body: dict[str, Any]) -> str | None:
    """Which interface's request shape a body has, going by its keys (for error messages)."""
    if any(key in body for key in SCORING_KEYS):
        return SCORING_LOOK
    if "messages" in body:
        return CHAT_LOOK
    if "input" in body:
        return RESPONSES_LOOK
    return None


def _same(value: Any, _meta: dict | None = None) -> Any:
    return value


def close(events: Any) -> None:
    """Close a stream of events if it can be closed, so the model's generator stops (and its
    ``finally`` blocks run) now, not whenever it is collected."""
    closer = getattr(events, "close", None)
    if closer is not None:
        closer()


def require_messages(body: dict[str, Any]) -> list[Any]:
    """The ``messages`` of a Chat Completions request, or the 400 that names them."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise InvalidRequest("Invalid chat completion request: 'messages' is required (a list of messages)")
    return messages


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one route speaks to one interface: the route's request made the model's own, and
    the model's answer (or stream of events) made the route's."""

    request: Callable[[dict[str, Any]], dict[str, Any]] = _same
    answer: Callable[[Any, dict[str, Any]], Any] = _same
    events: Callable[[Iterator[Any], dict[str, Any]], Iterator[Any]] = _same


#: The endpoint's own route: the model's request and answer as they are.
NATIVE = Dialect()


@dataclass(slots=True)
class Call:
    """One validated request, ready for the model."""

    #: What the interface's ``predict`` / ``predict_stream`` take.
    request: Any
    #: The request as the model received it (the route's body made the model's own): what the
    #: trace and the inference table keep.
    recorded: dict[str, Any]
    stream: bool
    dialect: Dialect


class ModelInterface:
    """One of MLflow's model interfaces behind the calls the worker makes.

    Subclasses set ``kind``, ``label``, ``shape`` and ``dialects`` (the routes they answer),
    and implement ``validate``, ``predict`` and ``predict_stream``.
    """

    #: Reported to the gateway in the worker's HELLO and in the worker log.
    kind: ClassVar[str]
    #: The name users know the interface by, in error messages.
    label: ClassVar[str]
    #: The request shape ``invocations`` takes, as an error message shows it.
    shape: ClassVar[str]
    #: Route name to dialect; a route missing here is refused with a 400 saying which fits.
    dialects: ClassVar[dict[str, Dialect]]
    #: What ``looks_like`` says of this interface's own requests.
    look: ClassVar[str | None] = None
    #: Whether the model implements ``predict_stream`` (set per loaded model).
    streams: bool = False
    #: Whether the model's ``predict`` is a coroutine function, its ``predict_stream`` an async
    #: generator: the worker then awaits them on its event loop (``apredict``, ``apredict_stream``)
    #: instead of running them in a thread.
    async_predict: bool = False
    async_stream: bool = False

    def parse(self, body: dict[str, Any], route: str = INVOCATIONS) -> Call:
        """Validate a request that came in on ``route``.

        Raises:
            InvalidRequest: the route does not reach this interface, the body does not fit it,
                or it asks for a stream the model cannot give.
        """
        dialect = self.dialects.get(route)
        if dialect is None:
            raise InvalidRequest(self.wrong_route(route))
        stream = body.get("stream") is True
        if stream and not self.streams:
            raise InvalidRequest(f"This endpoint's model ({self.label}) does not implement predict_stream, so it "
                                 "cannot stream: send the request without \"stream\": true")
        native = dialect.request(body)
        return Call(self.validate(native), native, stream, dialect)

    def wrong_route(self, route: str) -> str:
        fits = " or ".join(ROUTE_PATHS[name] for name in self.dialects)
        return f"{ROUTE_PATHS[route]} cannot reach this endpoint's model, a {self.label}; use {fits}"

    def invalid(self, detail: str, body: dict[str, Any]) -> InvalidRequest:
        """A 400 naming what was wrong, the shape this endpoint takes, and where a request of
        another interface's shape should go instead."""
        message = f"Invalid {self.label} request: {detail}. This endpoint's model is a {self.label}: send {self.shape}"
        seen = looks_like(body) if isinstance(body, dict) else None
        if seen is not None and seen != self.look:
            message += f". This body looks like {seen}{self.elsewhere(seen)}"
        return InvalidRequest(message)

    def build(self, request_type: type, body: dict[str, Any], required: str) -> Any:
        """``request_type(**body)`` (one of MLflow's pydantic request types), or the 400 that
        names the field that does not fit."""
        if required not in body:
            raise self.invalid(f"'{required}' is required (a list of messages)", body)
        try:
            return request_type(**body)
        except pydantic.ValidationError as error:
            raise self.invalid(describe_validation_error(error), body) from None
        except TypeError as error:
            raise self.invalid(str(error), body) from None

    def elsewhere(self, seen: str) -> str:
        """Where a request of another shape would be understood, if anywhere."""
        return ", which this model does not take"

    def validate(self, body: dict[str, Any]) -> Any:
        raise NotImplementedError

    def predict(self, request: Any) -> Any:
        raise NotImplementedError

    def predict_stream(self, request: Any) -> Iterator[Any]:
        raise NotImplementedError

    async def apredict(self, request: Any) -> Any:
        raise NotImplementedError

    def apredict_stream(self, request: Any) -> AsyncIterator[Any]:
        raise NotImplementedError

    def assemble(self, events: list[Any]) -> Any:
        """A stream's events as one output, for the trace and the inference table."""
        return events


def is_async(model: Any, name: str) -> bool:
    """Whether ``model``'s method ``name`` is, under MLflow's wrappers (``mlflow.trace`` and the
    pydantic input check keep ``__wrapped__``), a coroutine function or an async generator: the
    wrappers are plain functions that hand the coroutine or async generator back."""
    method = getattr(type(model), name, None)
    if method is None:
        return False
    inner = inspect.unwrap(method)
    return inspect.iscoroutinefunction(inner) or inspect.isasyncgenfunction(inner)


async def aclose(events: Any) -> None:
    """``close`` for an async stream of events."""
    closer = getattr(events, "aclose", None)
    if closer is not None:
        await closer()


def overrides(model: Any, base: type, name: str = "predict_stream") -> bool:
    """Whether ``model``'s class defines ``name`` itself rather than inheriting ``base``'s
    placeholder (MLflow's base classes raise NotImplementedError there)."""
    return getattr(type(model), name, None) is not getattr(base, name)

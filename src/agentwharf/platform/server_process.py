"""What a server process of the platform does around its own routes: the platform's process
(``agentwharf up``) and a gateway process (``agentwharf gateway``) alike.

On the ASGI lifespan it starts and stops the process's parts; around every HTTP request it
makes the request's id, applies the concurrency limit, answers JSON whatever fails below (never
a stack trace, never uvicorn's plain-text 500) and writes the access log line.
"""

from __future__ import annotations

import logging
import time

from agentwharf.asgi import send_error
from agentwharf.errors import AgentwharfError, Unavailable
from agentwharf.platform.logs import access_line
from agentwharf.tracing.ids import new_request_id

log = logging.getLogger("agentwharf.platform")


class ServerProcess:
    """Base of an ASGI app owning one process's parts. A subclass has ``settings`` and
    ``in_flight``, and gives ``start``, ``stop`` and ``_route``; ``what`` names it in messages."""

    what = "platform"

    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope, receive, send) -> None:
        request_id = scope["agentwharf.request_id"] = new_request_id()
        began = time.perf_counter()
        status = 0

        async def tracked_send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        if self.in_flight >= self.settings.limit_concurrency:
            await send_error(send, Unavailable(f"The {self.what} is handling {self.in_flight} requests, its limit "
                                               "(AGENTWHARF_LIMIT_CONCURRENCY); retry shortly"))
            return
        self.in_flight += 1
        try:
            await self._route(scope, receive, tracked_send)
        except Exception:
            log.exception("%s %s failed (request %s)", scope["method"], scope["path"], request_id)
            if not status:
                status = 500
                await send_error(send, AgentwharfError(f"Internal error (request {request_id}); see the {self.what} log"))
        finally:
            self.in_flight -= 1
            caller = scope.get("agentwharf.caller")
            access_line(scope["method"], scope["path"], status, time.perf_counter() - began, request_id,
                        caller.name if caller is not None else None)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as error:
                    log.exception("%s failed to start", self.what)
                    await self.stop()
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

"""The practical limit: a bare ASGI app that reads the body and answers a small fixed JSON.

Run with ``uvicorn echo_asgi:app --no-access-log`` (one process). No framework, no validation,
no tracing: whatever a real server does on top of this is its own cost.
"""

ANSWER = (
    b'{"output":[{"type":"message","id":"0","role":"assistant",'
    b'"content":[{"type":"output_text","text":"Echo: hello"}]}]}'
)
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:  # read the whole body, as a real server must
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})

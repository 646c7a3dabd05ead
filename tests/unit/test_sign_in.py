"""agentwharf.web.sign_in: the 401 answer, JSON for clients, a sign-in page for browsers."""

import asyncio

import orjson
import pytest

from agentwharf.errors import Unauthenticated
from agentwharf.web.sign_in import MESSAGES, safe_next, send_unauthenticated, sign_in_page


def answer(method="GET", accept=None, message="Authentication required"):
    headers = [(b"accept", accept.encode())] if accept is not None else []
    sent = []

    async def send(event):
        sent.append(event)

    asyncio.run(send_unauthenticated({"type": "http", "method": method, "headers": headers}, send, Unauthenticated(message)))
    start, body = sent
    assert start["type"] == "http.response.start" and body["type"] == "http.response.body"
    return start["status"], dict(start["headers"]), body["body"]


@pytest.mark.parametrize(("method", "accept"), [
    ("GET", None),
    ("GET", "application/json"),
    ("GET", "*/*"),
    ("POST", "text/html"),
    ("PUT", "text/html,application/xhtml+xml"),
    ("HEAD", "text/html"),
    ("DELETE", "text/html"),
])
def test_api_clients_get_json(method, accept):
    status, headers, body = answer(method, accept, "The token is invalid, expired or revoked")
    assert status == 401
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"www-authenticate"] == b'Bearer realm="agentwharf"'
    assert orjson.loads(body) == {"error_code": "UNAUTHENTICATED", "message": "The token is invalid, expired or revoked"}


@pytest.mark.parametrize("accept", ["text/html", "text/html,application/xhtml+xml,*/*;q=0.8"])
def test_a_browser_opening_a_page_gets_the_sign_in_form(accept):
    status, headers, body = answer("GET", accept)
    assert status == 401
    assert headers[b"content-type"] == b"text/html; charset=utf-8"
    assert headers[b"www-authenticate"] == b'Bearer realm="agentwharf"'
    page = body.decode()
    assert "<form" in page and 'type="password"' in page
    assert '<label for="token">Personal access token</label>' in page


def test_the_form_posts_the_token_to_signin_never_in_a_url():
    page = answer("GET", "text/html")[2].decode()
    form = page[page.index("<form"):page.index("</form>")]
    assert 'method="post"' in form and 'action="/signin"' in form
    assert 'autocomplete="off"' in form
    assert "<script>" not in page  # the page's script is a file: the pages' CSP allows no inline script


def test_the_page_returns_to_the_page_that_asked():
    sent = []

    async def send(event):
        sent.append(event)

    scope = {"type": "http", "method": "GET", "path": "/serving/endpoints/x", "query_string": b"a=1",
             "headers": [(b"accept", b"text/html")]}
    asyncio.run(send_unauthenticated(scope, send, Unauthenticated("no")))
    assert 'name="next" id="next" value="/serving/endpoints/x?a=1"' in sent[1]["body"].decode()


@pytest.mark.parametrize("bad", ["https://evil.example/", "//evil.example/x", "javascript:alert(1)", "/\\evil", "", None,
                                 "/signin?m=x", "/ok\nSet-Cookie: x"])
def test_the_next_page_is_always_a_path_on_this_platform(bad):
    assert safe_next(bad) == "/serving/"


def test_next_is_escaped_in_the_page():
    page = sign_in_page(None, '/x"><script>alert(1)</script>').decode()
    assert "<script>alert(1)" not in page and "&quot;&gt;&lt;script&gt;" in page


def test_the_page_says_what_went_wrong_in_its_own_words_only():
    # The message can carry request-derived text; the HTML page shows only its own messages.
    _, _, body = answer("GET", "text/html", "<script>alert(1)</script>")
    assert b"alert(1)" not in body
    invalid = sign_in_page("invalid").decode()
    assert 'role="alert"' in invalid and MESSAGES["invalid"] in invalid and 'aria-invalid="true"' in invalid
    assert 'role="status"' in sign_in_page("signed-out").decode()
    assert "role=" not in sign_in_page("<b>made up</b>").decode().split("<form")[0].split("</p>", 1)[1]

"""agentwharf.platform.login_page: the 401 answer, JSON for clients, a sign-in page for browsers."""

import asyncio

import orjson
import pytest

from agentwharf.auth.gatekeeper import COOKIE
from agentwharf.errors import Unauthenticated
from agentwharf.platform.login_page import send_unauthenticated


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


def test_the_form_keeps_the_token_out_of_urls_and_posts():
    page = answer("GET", "text/html")[2].decode()
    form = page[page.index("<form"):page.index("</form>")]
    # No action, no method: the script handles submit and nothing is sent with the token in it.
    assert "action=" not in form and "method=" not in form
    assert 'name="' not in form  # a named input would be serialised into a query string
    assert "event.preventDefault()" in page
    assert 'autocomplete="off"' in form


def test_the_cookie_is_the_gatekeepers_same_site_strict_and_page_wide():
    page = answer("GET", "text/html")[2].decode()
    assert f'"{COOKIE}=" + encodeURIComponent(token)' in page
    assert "SameSite=Strict" in page and "path=/" in page


def test_the_page_does_not_reflect_the_error_message():
    # The message can carry request-derived text; the HTML page is static.
    _, _, body = answer("GET", "text/html", "<script>alert(1)</script>")
    assert b"alert(1)" not in body

"""Answers the platform builds without a framework: MLflow's non-JSON errors turned into the
JSON shape, the raw answers of the HTTP protocol's own refusals, and the client request id."""

import orjson
import pytest

from agentwharf import errors
from agentwharf.platform.http_protocol import _raw_answer
from agentwharf.platform.mlflow_proxy import mlflow_error
from agentwharf.serving.gateway import body_client_request_id, client_request_id

FLASK_500 = (b"<!doctype html>\n<html lang=en>\n<title>500 Internal Server Error</title>\n<h1>Internal Server Error</h1>\n"
             b"<p>The server encountered an internal error and was unable to complete your request.</p>\n")


def test_an_html_error_page_of_mlflows_becomes_json_with_its_words():
    error = mlflow_error(500, FLASK_500)
    assert (error.http_status, error.error_code) == (500, "INTERNAL_ERROR")
    assert error.message.startswith("MLflow: 500 Internal Server Error The server encountered")
    assert "<" not in error.message


@pytest.mark.parametrize("status, code, cls", [(401, "UNAUTHENTICATED", errors.Unauthenticated),
                                               (403, "PERMISSION_DENIED", errors.PermissionDenied),
                                               (404, "ENDPOINT_NOT_FOUND", errors.RouteNotFound),
                                               (503, "TEMPORARILY_UNAVAILABLE", errors.Unavailable),
                                               (418, "BAD_REQUEST", errors.ForeignError)])
def test_plain_text_errors_keep_their_status_and_get_its_code(status, code, cls):
    error = mlflow_error(status, b"Permission denied for this thing")
    assert type(error) is cls and (error.http_status, error.error_code) == (status, code)
    assert error.message == "MLflow: Permission denied for this thing"


def test_raw_refusals_are_complete_http_answers_with_a_json_body():
    answer = _raw_answer(errors.RequestTimeout("too slow"))
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 408 Request Timeout"
    assert b"content-type: application/json" in lines and b"connection: close" in lines
    assert f"content-length: {len(body)}".encode() in lines
    assert orjson.loads(body) == {"error_code": "REQUEST_TIMEOUT", "message": "too slow"}
    assert b"retry-after: 1" in _raw_answer(errors.Unavailable("busy")).split(b"\r\n\r\n")[0].split(b"\r\n")


def scope(*headers):
    return {"headers": list(headers)}


def test_the_clients_request_id_is_kept_cut_to_size_and_never_a_token():
    assert client_request_id(scope()) is None
    assert client_request_id(scope((b"x-request-id", b"abc-1"))) == "abc-1"
    assert len(client_request_id(scope((b"x-request-id", b"r" * 500)))) == 128
    for token in (b"awp_secretsecret", b"Bearer awp_x", b"aws_signed.token", b"awo_obo", b"awl_load"):
        assert client_request_id(scope((b"x-request-id", token))) == "[REDACTED]"


def test_the_sdks_client_request_id_in_the_body_is_kept_the_same_way():
    assert body_client_request_id(b'{"input": [], "client_request_id": "sdk-7"}') == "sdk-7"
    assert body_client_request_id(b'{"input": []}') is None
    assert body_client_request_id(b'{"client_request_id": 5}') is None
    assert body_client_request_id(b'{"client_request_id": ""}') is None
    assert body_client_request_id(b'["client_request_id"]') is None
    assert body_client_request_id(b'{"client_request_id": "x"') is None  # malformed: the worker says so
    assert len(body_client_request_id(b'{"client_request_id": "' + b"r" * 500 + b'"}')) == 128
    assert body_client_request_id(b'{"client_request_id": "awp_secret"}') == "[REDACTED]"

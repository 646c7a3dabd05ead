"""agentwharf.errors: one class per error code, its HTTP status, its JSON body, and the way back
from a body to the class (what a client raises)."""

import orjson
import pytest

from agentwharf import errors

DOCUMENTED = [
    (errors.InvalidParameter, 400, "INVALID_PARAMETER_VALUE"),
    (errors.PayloadTooLarge, 413, "INVALID_PARAMETER_VALUE"),
    (errors.HeadersTooLarge, 431, "INVALID_PARAMETER_VALUE"),
    (errors.BadRequest, 400, "BAD_REQUEST"),
    (errors.ResourceLimitExceeded, 400, "RESOURCE_LIMIT_EXCEEDED"),
    (errors.Unauthenticated, 401, "UNAUTHENTICATED"),
    (errors.PermissionDenied, 403, "PERMISSION_DENIED"),
    (errors.NotFound, 404, "RESOURCE_DOES_NOT_EXIST"),
    (errors.RouteNotFound, 404, "ENDPOINT_NOT_FOUND"),
    (errors.MethodNotAllowed, 405, "METHOD_NOT_ALLOWED"),
    (errors.RequestTimeout, 408, "REQUEST_TIMEOUT"),
    (errors.AlreadyExists, 409, "RESOURCE_ALREADY_EXISTS"),
    (errors.Conflict, 409, "RESOURCE_CONFLICT"),
    (errors.UnsupportedMediaType, 415, "UNSUPPORTED_MEDIA_TYPE"),
    (errors.RequestLimitExceeded, 429, "REQUEST_LIMIT_EXCEEDED"),
    (errors.ModelError, 500, "MODEL_ERROR"),
    (errors.DeploymentFailed, 500, "DEPLOYMENT_FAILED"),
    (errors.NotImplementedByPlatform, 501, "NOT_IMPLEMENTED"),
    (errors.BadGateway, 502, "BAD_GATEWAY"),
    (errors.Unavailable, 503, "TEMPORARILY_UNAVAILABLE"),
    (errors.MlflowUnavailable, 503, "TEMPORARILY_UNAVAILABLE"),
    (errors.DeadlineExceeded, 504, "DEADLINE_EXCEEDED"),
    (errors.InsufficientStorage, 507, "INSUFFICIENT_STORAGE"),
    (errors.InvalidConfiguration, 500, "INVALID_CONFIGURATION"),
    (errors.AgentwharfError, 500, "INTERNAL_ERROR"),
]


@pytest.mark.parametrize("cls, status, code", DOCUMENTED)
def test_error_class_has_documented_code_and_status(cls, status, code):
    error = cls("boom")
    assert error.error_code == code
    assert error.http_status == status
    assert isinstance(error, errors.AgentwharfError)


@pytest.mark.parametrize("cls, status, code", DOCUMENTED)
def test_error_body_is_json_with_exactly_error_code_and_message(cls, status, code):
    error = cls("it broke")
    assert error.to_json() == {"error_code": code, "message": "it broke"}
    assert orjson.loads(error.error_body()) == {"error_code": code, "message": "it broke"}


def test_every_class_of_the_tree_is_documented_here_and_in_the_module_docstring():
    tree = {cls for cls in errors._all_classes()}
    assert tree == {cls for cls, _, _ in DOCUMENTED}
    for cls in tree:
        assert cls.__name__ in errors.__doc__


def test_retryable_errors_say_when_to_retry():
    assert errors.Unavailable("x").headers() == [(b"retry-after", b"1")]
    assert errors.RequestLimitExceeded("slow down", retry_after=7.4).headers() == [(b"retry-after", b"7")]
    assert errors.DeploymentFailed("x").headers() == []
    assert errors.NotFound("x").headers() == []


@pytest.mark.parametrize("cls, status, code", DOCUMENTED)
def test_a_client_gets_back_the_class_a_server_answered(cls, status, code):
    error = errors.from_json(cls("said").to_json(), status)
    # A subclass that only narrows where the error came from (MlflowUnavailable) comes back
    # as the class that has its code; ``except`` on that class catches it either way.
    assert type(error) is cls or (issubclass(cls, type(error)) and type(error).error_code == code)
    assert error.message == "said"


def test_a_code_answered_with_another_status_still_maps_to_its_class():
    assert type(errors.from_json({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "m"}, 502)) is errors.Unavailable


def test_unknown_codes_and_bodies_that_are_not_the_json_shape_keep_what_the_server_said():
    unknown = errors.from_json({"error_code": "SOMETHING_NEW", "message": "m"}, 418)
    assert type(unknown) is errors.ForeignError
    assert (unknown.error_code, unknown.http_status, unknown.message) == ("SOMETHING_NEW", 418, "m")
    page = errors.from_json(None, 502, "<html>Bad Gateway</html>")
    assert (page.error_code, page.http_status, page.message) == ("INTERNAL_ERROR", 502, "<html>Bad Gateway</html>")


def test_status_for_known_and_unknown_codes():
    assert errors.status_for("RESOURCE_DOES_NOT_EXIST") == 404
    assert errors.status_for("SOMETHING_NEW") == 500


def test_message_is_the_exception_text():
    error = errors.NotFound("Endpoint 'x' does not exist")
    assert str(error) == "Endpoint 'x' does not exist"
    assert error.message == "Endpoint 'x' does not exist"

"""agentwharf.errors: each error's Databricks error code, HTTP status and JSON body."""

import pytest

from agentwharf import errors

DOCUMENTED = [
    (errors.InvalidParameter, 400, "INVALID_PARAMETER_VALUE"),
    (errors.ResourceLimitExceeded, 400, "RESOURCE_LIMIT_EXCEEDED"),
    (errors.Unauthenticated, 401, "UNAUTHENTICATED"),
    (errors.PermissionDenied, 403, "PERMISSION_DENIED"),
    (errors.NotFound, 404, "RESOURCE_DOES_NOT_EXIST"),
    (errors.AlreadyExists, 409, "RESOURCE_ALREADY_EXISTS"),
    (errors.UnsupportedMediaType, 415, "UNSUPPORTED_MEDIA_TYPE"),
    (errors.DeploymentFailed, 500, "DEPLOYMENT_FAILED"),
    (errors.Unavailable, 503, "TEMPORARILY_UNAVAILABLE"),
    (errors.AgentwharfError, 500, "INTERNAL_ERROR"),
]


@pytest.mark.parametrize("cls, status, code", DOCUMENTED)
def test_error_class_has_documented_code_and_status(cls, status, code):
    error = cls("boom")
    assert error.error_code == code
    assert error.http_status == status
    assert isinstance(error, errors.AgentwharfError)


@pytest.mark.parametrize("cls, status, code", DOCUMENTED)
def test_to_json_has_exactly_error_code_and_message(cls, status, code):
    assert cls("it broke").to_json() == {"error_code": code, "message": "it broke"}


def test_explicit_error_code_overrides_class_code_and_status():
    error = errors.InvalidParameter("not here", "NOT_IMPLEMENTED")
    assert error.http_status == 501
    assert error.to_json() == {"error_code": "NOT_IMPLEMENTED", "message": "not here"}
    # The override is per instance, not a change to the class.
    assert errors.InvalidParameter("x").error_code == "INVALID_PARAMETER_VALUE"


def test_unknown_error_code_maps_to_500():
    assert errors.status_for("SOMETHING_NEW") == 500
    assert errors.AgentwharfError("x", "SOMETHING_NEW").http_status == 500


def test_message_is_the_exception_text():
    error = errors.NotFound("Endpoint 'x' does not exist")
    assert str(error) == "Endpoint 'x' does not exist"
    assert error.message == "Endpoint 'x' does not exist"

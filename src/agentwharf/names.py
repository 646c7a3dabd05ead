"""Naming rules shared by the control plane and the clients, as Databricks' clients expect them.

A registered model ``main.default.echo`` at version ``3`` is served as the entity
``main-default-echo_3`` on the endpoint ``agents_main-default-echo``.
"""

from __future__ import annotations

import re

from agentwharf.errors import InvalidParameter

MAX_ENDPOINT_NAME = 63
_ENDPOINT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
_ENV_KEY = re.compile(r"^[A-Z_][A-Z0-9_]*$")


def dashed(model_name: str) -> str:
    return model_name.replace(".", "-")


def default_endpoint_name(model_name: str) -> str:
    """``agents_<catalog>-<schema>-<model>``, cut to the 63 characters an endpoint name allows."""
    return f"agents_{dashed(model_name)}"[:MAX_ENDPOINT_NAME]


def served_entity_name(model_name: str, model_version: str) -> str:
    return f"{dashed(model_name)}_{model_version}"


def check_endpoint_name(name: str) -> str:
    if not isinstance(name, str) or not _ENDPOINT_NAME.fullmatch(name):
        raise InvalidParameter(
            f"Invalid endpoint name {name!r}: use 1-{MAX_ENDPOINT_NAME} letters, digits, '-' or '_', "
            "starting with a letter or digit."
        )
    return name


def check_model_version(version: object) -> str:
    """Versions travel as strings; accept an int from Python callers but nothing else."""
    if isinstance(version, bool) or not isinstance(version, (str, int)):
        raise InvalidParameter(f"model_version must be a string such as '1', got {version!r}")
    text = str(version).strip()
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise InvalidParameter(f"model_version must be a positive integer string, got {version!r}")
    return str(int(text))


def check_environment_vars(env: object) -> dict[str, str]:
    """Keys UPPERCASE identifiers, values strings; the worker's environment is built from them."""
    if env is None:
        return {}
    if not isinstance(env, dict):
        raise InvalidParameter(f"environment_vars must be an object of string values, got {type(env).__name__}")
    for key, value in env.items():
        if not isinstance(key, str) or not _ENV_KEY.fullmatch(key):
            raise InvalidParameter(
                f"environment_vars key {key!r} is not an UPPERCASE identifier (A-Z, 0-9, _, not starting with a digit)"
            )
        if not isinstance(value, str):
            raise InvalidParameter(f"environment_vars[{key!r}] must be a string, got {type(value).__name__}")
    return dict(env)

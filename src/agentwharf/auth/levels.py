"""Permission levels: the guide's four on serving endpoints, MLflow's on registered models."""

from __future__ import annotations

from enum import Enum

from agentwharf.errors import InvalidParameter


class PermissionLevel(str, Enum):
    """What a principal may do with a serving endpoint; each level includes the ones before.

    CAN_VIEW    see the endpoint and its metadata
    CAN_QUERY   invoke it
    CAN_REVIEW  also read its traces and inference table, and give feedback
    CAN_MANAGE  also deploy, update, delete it and set its permissions
    NO_PERMISSIONS  (only as a request) remove the principal's grant
    """

    NO_PERMISSIONS = "NO_PERMISSIONS"
    CAN_VIEW = "CAN_VIEW"
    CAN_QUERY = "CAN_QUERY"
    CAN_REVIEW = "CAN_REVIEW"
    CAN_MANAGE = "CAN_MANAGE"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, needed: PermissionLevel) -> bool:
        return self.rank >= needed.rank

    @classmethod
    def parse(cls, value: str) -> PermissionLevel:
        if isinstance(value, cls):
            # str() of a str-mixin member is "PermissionLevel.X", which would not parse.
            return value
        try:
            return cls(str(value).upper())
        except ValueError:
            raise InvalidParameter(
                f"Unknown permission level {value!r}; expected one of {', '.join(level.value for level in cls)}"
            ) from None


_RANK = {level: rank for rank, level in enumerate(PermissionLevel)}

#: MLflow's registered-model permissions, weakest first. agentwharf reads USE as "may deploy".
MODEL_PERMISSIONS = ("READ", "USE", "EDIT", "MANAGE")


def parse_model_permission(value: str) -> str:
    name = str(value).upper()
    if name not in MODEL_PERMISSIONS:
        raise InvalidParameter(f"Unknown registered-model permission {value!r}; expected one of {', '.join(MODEL_PERMISSIONS)}")
    return name


def model_permission_at_least(have: str | None, needed: str) -> bool:
    if have not in MODEL_PERMISSIONS:
        return False
    return MODEL_PERMISSIONS.index(have) >= MODEL_PERMISSIONS.index(needed)

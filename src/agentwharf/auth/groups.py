"""Group membership as the permission checks need it: who belongs to which groups, directly or
through other groups. Pure functions over names; ``IdentityService`` keeps their result in
memory so a request's check stays a few dictionary lookups.

Two groups are built in, as on Databricks: ``admins`` (whoever belongs to it is an admin) and
``users`` (every user and service principal belongs to it; it has no stored members).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from agentwharf.errors import InvalidParameter

#: The ``kind`` of a group among principals (aw_principals holds all three kinds).
KIND = "group"
ADMINS = "admins"
USERS = "users"
BUILT_IN = (ADMINS, USERS)


def memberships(direct: Mapping[str, Iterable[str]], everyone: Iterable[str]) -> dict[str, frozenset[str]]:
    """Every group each principal belongs to, directly or through other groups.

    Args:
        direct: group name -> names of its direct members (users, service principals, groups).
        everyone: the users and service principals, who all belong to ``users``.

    Returns:
        principal or group name -> the groups containing it (never itself). Principals in no
        group are absent.
    """
    parents: dict[str, set[str]] = {}
    for group, members in direct.items():
        for member in members:
            parents.setdefault(member, set()).add(group)
    for name in everyone:
        parents.setdefault(name, set()).add(USERS)
    closure: dict[str, frozenset[str]] = {}
    for name in parents:
        seen: set[str] = set()
        pending = list(parents[name])
        while pending:  # a cycle cannot get in (check_no_cycle), but must not hang if it did
            group = pending.pop()
            if group not in seen and group != name:
                seen.add(group)
                pending.extend(parents.get(group, ()))
        closure[name] = frozenset(seen)
    return closure


def check_no_cycle(group: str, member: str, closure: Mapping[str, frozenset[str]]) -> None:
    """Raises InvalidParameter if making ``member`` a member of ``group`` would make a group
    contain itself (``member`` is ``group``, or already contains it)."""
    if member == group or member in closure.get(group, frozenset()):
        raise InvalidParameter(f"Group {member!r} cannot be a member of {group!r}: {group!r} is already "
                               f"{'that group' if member == group else 'a member of it'}, and a group cannot contain itself")


def members_of(group: str, closure: Mapping[str, frozenset[str]], people: Iterable[str]) -> set[str]:
    """The users and service principals (``people``) in ``group``, directly or through other groups."""
    return {name for name in people if group in closure.get(name, frozenset())}

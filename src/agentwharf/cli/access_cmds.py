"""`agentwharf users|service-principals|groups|tokens|permissions`: who may do what.

All of them call the platform's REST API with your token (AGENTWHARF_TOKEN, or the admin token
a local platform wrote to ``<home>/admin.token``).
"""

from __future__ import annotations

import datetime

import typer

from agentwharf.cli.connection import HomeOption, HostOption, JsonOption, connect
from agentwharf.cli.output import console, handle_errors, print_json, print_table
from agentwharf.client import PlatformClient

_SCIM = "/api/2.0/preview/scim/v2"


def _principal_app(kind_path: str, key: str, noun: str) -> typer.Typer:
    app = typer.Typer(help=f"{noun.capitalize()}s (admins only, except list).", no_args_is_help=True)

    @app.command("create")
    @handle_errors
    def create(name: str, admin: bool = typer.Option(False, "--admin", help="Make them a platform admin."),
               host: HostOption = None, home: HomeOption = None) -> None:
        """Create one; then give them a token with `agentwharf tokens create --for NAME`."""
        body = {key: name, **({"roles": [{"value": "admin"}]} if admin else {})}
        connect(host, home).request("POST", f"{_SCIM}/{kind_path}", json=body)
        console.print(f"Created {noun} [bold]{name}[/bold]{' (admin)' if admin else ''}.")

    @app.command("list")
    @handle_errors
    def list_(host: HostOption = None, home: HomeOption = None, as_json: JsonOption = False) -> None:
        """List them."""
        found = connect(host, home).request("GET", f"{_SCIM}/{kind_path}")["Resources"]
        if as_json:
            print_json(found)
            return
        rows = []
        for item in found:
            joined = [g["display"] for g in item.get("groups", [])]
            rows.append((item[key], item["id"], "yes" if "admins" in joined else "", "yes" if item["active"] else "no",
                         ", ".join(joined)))
        print_table(("name", "id", "admin", "active", "groups"), rows, empty=f"No {noun}s.")

    @app.command("delete")
    @handle_errors
    def delete(name: str, yes: bool = typer.Option(False, "--yes", "-y"), host: HostOption = None, home: HomeOption = None) -> None:
        """Delete one, with their tokens and grants."""
        if not yes:
            typer.confirm(f"Delete {noun} {name} and revoke their tokens?", abort=True)
        connect(host, home).request("DELETE", f"{_SCIM}/{kind_path}/{name}")
        console.print(f"Deleted {noun} {name}.")

    @app.command("deactivate")
    @handle_errors
    def deactivate(name: str, host: HostOption = None, home: HomeOption = None) -> None:
        """Stop them signing in (their tokens stop working at once); `activate` undoes it."""
        _set_active(connect(host, home), kind_path, name, False)
        console.print(f"Deactivated {noun} {name}.")

    @app.command("activate")
    @handle_errors
    def activate(name: str, host: HostOption = None, home: HomeOption = None) -> None:
        """Let a deactivated one sign in again."""
        _set_active(connect(host, home), kind_path, name, True)
        console.print(f"Activated {noun} {name}.")

    return app


def _set_active(client: PlatformClient, kind_path: str, name: str, active: bool) -> None:
    client.request("PATCH", f"{_SCIM}/{kind_path}/{name}", json={
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "active", "value": active}]})


users = _principal_app("Users", "userName", "user")
service_principals = _principal_app("ServicePrincipals", "applicationId", "service principal")
groups = typer.Typer(help="Groups of users, service principals and groups (admins only, except list). "
                          "Members of 'admins' are admins; 'users' holds everyone.", no_args_is_help=True)
tokens = typer.Typer(help="Personal access tokens.", no_args_is_help=True)


@groups.command("create")
@handle_errors
def create_group(name: str, member: list[str] = typer.Option([], "--member", "-m", help="A member's name (repeatable)."),
                 host: HostOption = None, home: HomeOption = None) -> None:
    """Create a group, optionally with members."""
    connect(host, home).request("POST", f"{_SCIM}/Groups", json={"displayName": name,
                                                                  "members": [{"display": m} for m in member]})
    console.print(f"Created group [bold]{name}[/bold].")


@groups.command("list")
@handle_errors
def list_groups(host: HostOption = None, home: HomeOption = None, as_json: JsonOption = False) -> None:
    """List groups and their direct members."""
    found = connect(host, home).request("GET", f"{_SCIM}/Groups")["Resources"]
    if as_json:
        print_json(found)
        return
    rows = [(item["displayName"], item["id"], ", ".join(m["display"] for m in item.get("members", []))) for item in found]
    print_table(("group", "id", "members"), rows, empty="No groups.")


def _change_members(client: PlatformClient, group: str, op: str, members: list[str]) -> None:
    ids = [_principal_id(client, m) for m in members]
    client.request("PATCH", f"{_SCIM}/Groups/{group}", json={
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": op, "path": "members", "value": [{"value": i} for i in ids]}]})


def _principal_id(client: PlatformClient, name: str) -> str:
    for collection in ("Users", "ServicePrincipals", "Groups"):
        key = {"Users": "userName", "ServicePrincipals": "applicationId", "Groups": "displayName"}[collection]
        found = client.request("GET", f"{_SCIM}/{collection}", params={"filter": f'{key} eq "{name}"'})["Resources"]
        exact = [r for r in found if r[key] == name]
        if exact:
            return exact[0]["id"]
    raise typer.BadParameter(f"No user, service principal or group named {name!r}")


@groups.command("add-member")
@handle_errors
def add_member(group: str, member: list[str], host: HostOption = None, home: HomeOption = None) -> None:
    """Add users, service principals or groups to a group."""
    _change_members(connect(host, home), group, "add", member)
    console.print(f"{', '.join(member)} added to {group}.")


@groups.command("remove-member")
@handle_errors
def remove_member(group: str, member: list[str], host: HostOption = None, home: HomeOption = None) -> None:
    """Remove direct members from a group."""
    _change_members(connect(host, home), group, "remove", member)
    console.print(f"{', '.join(member)} removed from {group}.")


@groups.command("delete")
@handle_errors
def delete_group(name: str, yes: bool = typer.Option(False, "--yes", "-y"), host: HostOption = None,
                 home: HomeOption = None) -> None:
    """Delete a group and its grants (its members stay)."""
    if not yes:
        typer.confirm(f"Delete group {name} and its grants?", abort=True)
    connect(host, home).request("DELETE", f"{_SCIM}/Groups/{name}")
    console.print(f"Deleted group {name}.")
permissions = typer.Typer(help="Grants on serving endpoints and registered models.", no_args_is_help=True)


def _when(ms: int) -> str:
    if ms is None or ms < 0:
        return "never"
    return datetime.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M")


@tokens.command("create")
@handle_errors
def create_token(
    lifetime: int = typer.Option(None, "--lifetime-seconds", help="Expire after this many seconds (default: never)."),
    comment: str = typer.Option(None, "--comment"),
    for_: str = typer.Option(None, "--for", help="Admins: create it for this user or service principal."),
    host: HostOption = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a token. It is printed once and never stored: keep it safe."""
    body = {"lifetime_seconds": lifetime, "comment": comment}
    client = connect(host, home)
    if for_:
        answer = client.request("POST", "/api/2.0/token-management/on-behalf-of/tokens", json={**body, "application_id": for_})
    else:
        answer = client.request("POST", "/api/2.0/token/create", json=body)
    if as_json:
        print_json(answer)
        return
    info = answer["token_info"]
    console.print(f"Token {info['token_id']} for {info['owner']}, expires {_when(info['expiry_time'])}:", highlight=False)
    print(answer["token_value"])


@tokens.command("list")
@handle_errors
def list_tokens(all_: bool = typer.Option(False, "--all", help="Admins: everyone's tokens."),
                host: HostOption = None, home: HomeOption = None, as_json: JsonOption = False) -> None:
    """List tokens (ids and metadata; values are never shown again)."""
    path = "/api/2.0/token-management/tokens" if all_ else "/api/2.0/token/list"
    found = connect(host, home).request("GET", path)["token_infos"]
    if as_json:
        print_json(found)
        return
    rows = [(t["token_id"], t["owner"], t["comment"], _when(t["creation_time"]), _when(t["expiry_time"]),
             "yes" if t.get("revoked") else "") for t in found]
    print_table(("token id", "owner", "comment", "created", "expires", "revoked"), rows, empty="No tokens.")


@tokens.command("revoke")
@handle_errors
def revoke_token(token_id: str, any_owner: bool = typer.Option(False, "--any", help="Admins: revoke anyone's token."),
                 host: HostOption = None, home: HomeOption = None) -> None:
    """Revoke a token by its id; it stops working at once."""
    client = connect(host, home)
    if any_owner:
        client.request("DELETE", f"/api/2.0/token-management/tokens/{token_id}")
    else:
        client.request("POST", "/api/2.0/token/delete", json={"token_id": token_id})
    console.print(f"Revoked token {token_id}.")


@permissions.command("grant")
@handle_errors
def grant(
    target: str = typer.Argument(..., help="A serving endpoint, or with --model a registered model or catalog[.schema] prefix."),
    principal: str = typer.Argument(..., help="User, service principal or (with --group) group name."),
    level: str = typer.Argument(..., help="Endpoints: CAN_VIEW|CAN_QUERY|CAN_REVIEW|CAN_MANAGE|NO_PERMISSIONS. "
                                          "Models: READ|USE|EDIT|MANAGE|NO_PERMISSIONS (USE = may deploy)."),
    model: bool = typer.Option(False, "--model", help="TARGET is a registered model or a catalog[.schema] prefix."),
    service_principal: bool = typer.Option(False, "--service-principal", help="PRINCIPAL is a service principal."),
    group: bool = typer.Option(False, "--group", help="PRINCIPAL is a group: its members get the level."),
    host: HostOption = None,
    home: HomeOption = None,
) -> None:
    """Grant (or with NO_PERMISSIONS remove) a permission."""
    client = connect(host, home)
    if model:
        client.request("PUT", f"/api/2.0/agentwharf/model-permissions/{target}", json={"principal": principal, "permission": level})
    else:
        key = "group_name" if group else "service_principal_name" if service_principal else "user_name"
        client.request("PATCH", f"/api/2.0/permissions/serving-endpoints/{target}",
                       json={"access_control_list": [{key: principal, "permission_level": level.upper()}]})
    console.print(f"{principal}: {level.upper()} on {'model ' if model else 'endpoint '}{target}.")


@permissions.command("list")
@handle_errors
def list_permissions(target: str, model: bool = typer.Option(False, "--model"), host: HostOption = None,
                     home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Who holds which permission on an endpoint (or with --model, a model or prefix)."""
    client = connect(host, home)
    if model:
        answer = client.request("GET", f"/api/2.0/agentwharf/model-permissions/{target}")
        rows = [(grant["principal"], grant["permission"]) for grant in answer["grants"]]
    else:
        answer = client.request("GET", f"/api/2.0/permissions/serving-endpoints/{target}")
        rows = []
        for entry in answer["access_control_list"]:
            name = entry.get("user_name") or entry.get("service_principal_name") or f"{entry.get('group_name')} (group)"
            for permission in entry["all_permissions"]:
                inherited = " (inherited)" if permission.get("inherited") else ""
                rows.append((name, permission["permission_level"] + inherited))
    if as_json:
        print_json(answer)
        return
    print_table(("principal", "permission"), rows, empty=f"No grants on {target}.")

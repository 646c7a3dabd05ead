"""agentwharf.auth.identities: principals, personal access tokens (stored only as hashes),
endpoint grants and registered-model grants, and how they reach MLflow's permission store."""


import pytest
from sqlalchemy import select, update

from agentwharf.auth import identities as identities_module
from agentwharf.auth import tokens
from agentwharf.auth.identities import (
    MAX_TOKEN_LIFETIME_SECONDS,
    IdentityService,
    TokenInfo,
    token_lifetime_from,
)
from agentwharf.auth.levels import PermissionLevel
from agentwharf.errors import AlreadyExists, InvalidParameter, NotFound
from agentwharf.store.models import (
    AccessToken,
    EndpointGrant,
    ModelPrefixGrant,
    Principal,
)

L = PermissionLevel


@pytest.fixture
def ids(db):
    return IdentityService(db, None)


@pytest.fixture
def alice(ids):
    return ids.create_principal("alice", "user")


def set_active(service: IdentityService, name: str, active: bool) -> None:
    with service.db.session() as session:
        session.execute(update(Principal).where(Principal.name == name).values(active=active))
    service.reload()


def rows(db, model):
    with db.session() as session:
        found = list(session.scalars(select(model)))
    # The built-in groups (admins, users) are rows of aw_principals from the first start on.
    return [row for row in found if not (model is Principal and row.kind == "group")]


class FakeBridge:
    """Records what IdentityService asks MLflow's permission store to do."""

    def __init__(self):
        self.calls = []
        self.model_permissions = {}
        #: groups that were granted something (MLflow roles)
        self.roles = set()

    def ensure_user(self, name, is_admin):
        self.calls.append(("ensure_user", name, is_admin))

    def delete_user(self, name):
        self.calls.append(("delete_user", name))

    def set_experiment_access(self, experiment_id, username, level):
        self.calls.append(("experiment", experiment_id, username, level))

    def set_model_permission(self, model_name, username, permission):
        self.calls.append(("model", model_name, username, permission))
        self.model_permissions[(model_name, username)] = permission

    def model_permission(self, model_name, username):
        return self.model_permissions.get((model_name, username))

    def effective_model_permission(self, model_name, username):
        return self.model_permissions.get((model_name, username))

    def set_group_experiment_access(self, experiment_id, group, level, members):
        self.roles.add(group)
        self.calls.append(("group_experiment", experiment_id, group, level, sorted(members)))

    def set_group_model_permission(self, model_name, group, permission, members):
        self.roles.add(group)
        self.calls.append(("group_model", model_name, group, permission, sorted(members)))

    def sync_group(self, group, members):
        self.calls.append(("sync_group", group, sorted(members)))

    def rename_group(self, old, new):
        self.calls.append(("rename_group", old, new))

    def delete_group(self, group):
        self.roles.discard(group)
        self.calls.append(("delete_group", group))

    def groups_with_roles(self):
        return sorted(self.roles)


@pytest.fixture
def bridge():
    return FakeBridge()


@pytest.fixture
def bridged(db, bridge):
    return IdentityService(db, bridge)


# ---- principals -------------------------------------------------------------------------------


def test_create_principal_returns_its_info(ids):
    info = ids.create_principal("alice", "user", display_name="Alice A.", created_by="admin")
    assert (info.name, info.kind, info.is_admin, info.active, info.display_name) == ("alice", "user", False, True, "Alice A.")
    assert info.id > 0 and info.created_at > 0
    assert ids.principal("alice") == info
    assert ids.active_principal("alice") == info
    [row] = rows(ids.db, Principal)
    assert row.created_by == "admin"


def test_admin_and_service_principal(ids):
    ids.create_principal("root", "user", is_admin=True)
    bot = ids.create_principal("ci-bot", "service_principal")
    assert ids.principal("root").is_admin
    assert bot.kind == "service_principal" and not bot.is_admin
    caller = bot.caller(via="pat")
    assert (caller.name, caller.kind, caller.is_admin, caller.via) == ("ci-bot", "service_principal", False, "pat")


@pytest.mark.parametrize("name", [
    "a", "A", "0", "alice", "alice@example.com", "ci-bot", "svc.bot+1", "first_last", "9lives", "a" * 128,
])
def test_valid_names(ids, name):
    assert ids.create_principal(name, "user").name == name


@pytest.mark.parametrize("name", [
    "", " alice", "alice ", "alice bob", "-alice", ".alice", "_alice", "@alice", "+alice",
    "alice\n", "alice\r\n", "\nalice", "ali\nce", "alice\x00", "alice\t",
    "a" * 129, "alice/bob", "alice:x", "alice;admin", "alice,bob", "al'ice", 'al"ice', "al<i>ce",
    "\u00e4lice", "alic\u0435",  # non-ASCII look-alikes (the last e is Cyrillic)
    None, 5, b"alice",
])
def test_bad_names_are_refused(ids, name):
    with pytest.raises(InvalidParameter, match="Invalid principal name") as caught:
        ids.create_principal(name, "user")
    assert "1-128 letters, digits" in caught.value.message
    assert caught.value.http_status == 400
    assert ids.list_principals() == []
    assert rows(ids.db, Principal) == []


@pytest.mark.parametrize("kind", ["groups", "admin", "", None, "User", "service-principal", "users"])
def test_unknown_kind_is_refused(ids, kind):
    with pytest.raises(InvalidParameter, match="Unknown principal kind") as caught:
        ids.create_principal("alice", kind)
    assert "user, service_principal, group" in caught.value.message
    assert ids.list_principals() == []


def test_duplicate_names_are_refused_across_kinds(ids, alice):
    with pytest.raises(AlreadyExists, match="'alice' already exists") as caught:
        ids.create_principal("alice", "user")
    assert caught.value.http_status == 409
    with pytest.raises(AlreadyExists):
        ids.create_principal("alice", "service_principal", is_admin=True)
    # The failed attempts changed nothing: alice is still a non-admin user.
    assert ids.principal("alice") == alice
    assert len(rows(ids.db, Principal)) == 1


def test_names_are_case_sensitive(ids, alice):
    assert ids.create_principal("Alice", "user").name == "Alice"
    assert {p.name for p in ids.list_principals()} == {"alice", "Alice"}


def test_unknown_principal_is_404(ids):
    with pytest.raises(NotFound, match="No user, service principal or group named 'ghost'") as caught:
        ids.principal("ghost")
    assert caught.value.http_status == 404
    assert ids.active_principal("ghost") is None


def test_list_principals_sorted_and_filtered(ids):
    for name, kind in [("zed", "user"), ("bot-b", "service_principal"), ("amy", "user"), ("bot-a", "service_principal")]:
        ids.create_principal(name, kind)
    assert [p.name for p in ids.list_principals()] == ["amy", "bot-a", "bot-b", "zed"]
    assert [p.name for p in ids.list_principals("user")] == ["amy", "zed"]
    assert [p.name for p in ids.list_principals("service_principal")] == ["bot-a", "bot-b"]
    assert [p.name for p in ids.list_principals("group")] == ["admins", "users"]


def test_state_survives_a_restart(db, ids, alice):
    value, info = ids.create_token("alice", None, "laptop")
    ids.set_endpoint_level("chat", "alice", L.CAN_QUERY)
    ids.grant_model("main.default", "alice", "USE", [])
    again = IdentityService(db, None)
    assert again.principal("alice") == alice
    assert again.authenticate_personal(value).token_id == info.token_id
    assert again.endpoint_level("chat", "alice") is L.CAN_QUERY
    assert again.prefix_grants() == [("main.default", "alice", "USE")]


def test_deactivated_principal_is_not_active(ids, alice):
    set_active(ids, "alice", False)
    assert ids.active_principal("alice") is None
    assert ids.principal("alice").active is False
    set_active(ids, "alice", True)
    assert ids.active_principal("alice") is not None


# ---- personal access tokens -------------------------------------------------------------------


def test_token_authenticates_its_owner(ids, alice):
    value, info = ids.create_token("alice", 3600, "laptop")
    assert value.startswith(tokens.PAT_PREFIX)
    caller = ids.authenticate_personal(value)
    assert (caller.name, caller.kind, caller.is_admin, caller.via, caller.token_id) == ("alice", "user", False, "pat", info.token_id)
    assert caller.is_personal
    assert caller.expires_at == info.expiry_time == info.creation_time + 3600 * 1000
    assert (info.principal, info.comment, info.revoked) == ("alice", "laptop", False)


def test_admin_token_carries_admin(ids):
    ids.create_principal("root", "user", is_admin=True)
    value, _ = ids.create_token("root", None, None)
    assert ids.authenticate_personal(value).is_admin


def test_store_never_holds_the_token_value(tmp_path, db, ids, alice):
    value, info = ids.create_token("alice", None, "do not leak")
    [row] = rows(db, AccessToken)
    assert row.id == info.token_id
    assert row.token_hash == tokens.hash_token(value)
    assert value not in (row.token_hash, row.id, row.comment)
    db.dispose()
    secret = value[len(tokens.PAT_PREFIX):].encode()
    for path in tmp_path.iterdir():  # the database and its WAL / shared-memory files
        if path.is_file():
            assert secret not in path.read_bytes(), path.name
    # Nor does the in-memory map: it is keyed by the hash.
    assert value not in repr(ids._tokens)


def test_token_values_are_unique_and_ids_are_not_the_value(ids, alice):
    created = [ids.create_token("alice", None, None) for _ in range(20)]
    assert len({value for value, _ in created}) == 20
    assert len({info.token_id for _, info in created}) == 20
    for value, info in created:
        assert info.token_id not in value


@pytest.mark.parametrize("token", [
    "", "awp_", "awp_nope", "alice", "awp_" + "A" * 43,
])
def test_unknown_tokens_are_refused(ids, alice, token):
    ids.create_token("alice", None, None)
    assert ids.authenticate_personal(token) is None


def test_the_hash_itself_is_not_a_token(ids, alice):
    value, _ = ids.create_token("alice", None, None)
    assert ids.authenticate_personal(tokens.hash_token(value)) is None


def test_near_misses_are_refused(ids, alice):
    value, _ = ids.create_token("alice", None, None)
    for bad in (value[:-1], value + "A", value.upper(), " " + value, value + " ", value.replace("awp_", "aws_", 1)):
        assert ids.authenticate_personal(bad) is None


def test_revoked_token_is_refused_at_once(ids, alice):
    value, info = ids.create_token("alice", None, None)
    other, _ = ids.create_token("alice", None, None)
    ids.revoke_token(info.token_id)
    assert ids.authenticate_personal(value) is None
    assert ids.authenticate_personal(other).name == "alice"
    [listed] = [t for t in ids.list_tokens("alice") if t.token_id == info.token_id]
    assert listed.revoked
    # ... also after a restart.
    assert IdentityService(ids.db, None).authenticate_personal(value) is None


def test_revoking_twice_keeps_the_first_time(ids, alice):
    _, info = ids.create_token("alice", None, None)
    ids.revoke_token(info.token_id)
    [row] = rows(ids.db, AccessToken)
    first = row.revoked_at
    ids.revoke_token(info.token_id)
    [row] = rows(ids.db, AccessToken)
    assert row.revoked_at == first


def test_revoking_an_unknown_token_is_404(ids):
    with pytest.raises(NotFound, match="No token with id 'nope'"):
        ids.revoke_token("nope")


def test_expired_token_is_refused(ids, alice, monkeypatch):
    now = 1_800_000_000_000
    monkeypatch.setattr(identities_module, "now_ms", lambda: now)
    value, info = ids.create_token("alice", 60, None)
    assert info.expiry_time == now + 60_000
    monkeypatch.setattr(identities_module, "now_ms", lambda: now + 59_999)
    assert ids.authenticate_personal(value) is not None
    monkeypatch.setattr(identities_module, "now_ms", lambda: now + 60_000)
    assert ids.authenticate_personal(value) is None
    monkeypatch.setattr(identities_module, "now_ms", lambda: now + 10**12)
    assert ids.authenticate_personal(value) is None


def test_token_without_lifetime_never_expires(ids, alice, monkeypatch):
    value, info = ids.create_token("alice", None, None)
    assert info.expiry_time is None and info.to_json()["expiry_time"] == -1
    monkeypatch.setattr(identities_module, "now_ms", lambda: 10**15)
    caller = ids.authenticate_personal(value)
    assert caller is not None and caller.expires_at is None


def test_deactivated_principals_tokens_are_refused_and_return_on_reactivation(ids, alice):
    value, _ = ids.create_token("alice", None, None)
    set_active(ids, "alice", False)
    assert ids.authenticate_personal(value) is None
    with pytest.raises(InvalidParameter, match="'alice' is deactivated"):
        ids.create_token("alice", None, None)
    set_active(ids, "alice", True)
    assert ids.authenticate_personal(value).name == "alice"


def test_token_for_unknown_principal_is_404(ids):
    with pytest.raises(NotFound):
        ids.create_token("ghost", None, None)
    assert rows(ids.db, AccessToken) == []


@pytest.mark.parametrize("lifetime", [0, -1, -3600, 1.5, 60.0, "3600", True, False, [60], float("inf"), float("nan")])
def test_bad_lifetimes_are_refused_clearly(ids, alice, lifetime):
    with pytest.raises(InvalidParameter, match="lifetime_seconds must be a positive whole number of seconds") as caught:
        ids.create_token("alice", lifetime, None)
    assert repr(lifetime) in caught.value.message
    assert rows(ids.db, AccessToken) == []


def test_lifetime_at_most_ten_years(ids, alice):
    _, info = ids.create_token("alice", MAX_TOKEN_LIFETIME_SECONDS, None)
    assert info.expiry_time - info.creation_time == MAX_TOKEN_LIFETIME_SECONDS * 1000
    with pytest.raises(InvalidParameter, match="at most 315360000 .ten years."):
        ids.create_token("alice", MAX_TOKEN_LIFETIME_SECONDS + 1, None)
    assert len(rows(ids.db, AccessToken)) == 1


def test_one_second_lifetime(ids, alice):
    _, info = ids.create_token("alice", 1, None)
    assert info.expiry_time - info.creation_time == 1000


@pytest.mark.parametrize(("sent", "lifetime"), [
    (None, None), (-1, None), ("-1", None), (" -1 ", None), (-1.0, None),
    (3600, 3600), ("3600", 3600), (" 60 ", 60), ("0", 0), ("-5", -5),
    # Not numbers: passed on unchanged, for create_token to refuse with a clear message.
    ("abc", "abc"), ("", ""), ("1.5", "1.5"), ("--5", "--5"), ("\u00b2", "\u00b2"), (1.5, 1.5),
])
def test_token_lifetime_from_what_clients_send(sent, lifetime):
    assert token_lifetime_from(sent) == lifetime


@pytest.mark.parametrize("sent", ["--5", "\u00b2", "1e3", "0x10", "abc", "1.5"])
def test_unparseable_lifetimes_end_as_a_400_not_a_crash(ids, alice, sent):
    with pytest.raises(InvalidParameter):
        ids.create_token("alice", token_lifetime_from(sent), None)


def test_list_tokens(ids, alice, monkeypatch):
    ids.create_principal("bob", "user")
    clock = iter(range(1_000_000, 2_000_000, 1000))
    monkeypatch.setattr(identities_module, "now_ms", lambda: next(clock))
    _, a1 = ids.create_token("alice", None, "one")
    _, b1 = ids.create_token("bob", 60, None)
    _, a2 = ids.create_token("alice", None, "two")
    ids.revoke_token(a1.token_id)
    assert [t.token_id for t in ids.list_tokens()] == [a1.token_id, b1.token_id, a2.token_id]
    listed = ids.list_tokens("alice")
    assert [(t.token_id, t.comment, t.revoked) for t in listed] == [(a1.token_id, "one", True), (a2.token_id, "two", False)]
    assert ids.list_tokens("bob")[0].expiry_time == b1.expiry_time
    assert ids.list_tokens("ghost") == []


def test_token_info_json_is_databricks_shaped_and_has_no_value(ids, alice):
    value, info = ids.create_token("alice", None, None)
    body = info.to_json()
    assert body == {"token_id": info.token_id, "owner": "alice", "comment": "", "creation_time": info.creation_time,
                    "expiry_time": -1, "revoked": False, "owner_id": alice.id, "created_by_id": alice.id,
                    "created_by_username": "alice"}
    assert value not in str(body) and tokens.hash_token(value) not in str(body)
    assert TokenInfo("t", "a", "c", 1, 5, True).to_json()["expiry_time"] == 5


def test_token_owner(ids, alice):
    _, info = ids.create_token("alice", None, None)
    assert ids.token_owner(info.token_id) == "alice"
    with pytest.raises(NotFound):
        ids.token_owner("ffffffffffffffff")


# ---- endpoint grants --------------------------------------------------------------------------


def test_no_grant_means_no_permissions(ids, alice):
    assert ids.endpoint_level("chat", "alice") is L.NO_PERMISSIONS
    assert ids.endpoint_level("chat", "ghost") is L.NO_PERMISSIONS
    assert ids.endpoint_grants("chat") == {}


def test_grant_change_and_remove(ids, alice):
    ids.create_principal("bob", "user")
    ids.set_endpoint_level("chat", "alice", L.CAN_MANAGE)
    ids.set_endpoint_level("chat", "bob", L.CAN_QUERY)
    assert ids.endpoint_grants("chat") == {"alice": L.CAN_MANAGE, "bob": L.CAN_QUERY}
    # A new level replaces the old one, downwards too.
    ids.set_endpoint_level("chat", "alice", L.CAN_VIEW)
    assert ids.endpoint_level("chat", "alice") is L.CAN_VIEW
    ids.set_endpoint_level("chat", "alice", L.NO_PERMISSIONS)
    assert ids.endpoint_level("chat", "alice") is L.NO_PERMISSIONS
    assert ids.endpoint_grants("chat") == {"bob": L.CAN_QUERY}
    assert [(g.endpoint_name, g.level) for g in rows(ids.db, EndpointGrant)] == [("chat", "CAN_QUERY")]
    # Removing what is not there is harmless.
    ids.set_endpoint_level("chat", "alice", L.NO_PERMISSIONS)
    assert ids.endpoint_grants("chat") == {"bob": L.CAN_QUERY}


def test_grants_are_per_endpoint(ids, alice):
    ids.set_endpoint_level("chat", "alice", L.CAN_MANAGE)
    assert ids.endpoint_level("chat2", "alice") is L.NO_PERMISSIONS
    assert ids.endpoint_level("cha", "alice") is L.NO_PERMISSIONS
    assert ids.endpoint_level("CHAT", "alice") is L.NO_PERMISSIONS


def test_grant_to_unknown_principal_is_404(ids):
    with pytest.raises(NotFound):
        ids.set_endpoint_level("chat", "ghost", L.CAN_QUERY)
    assert ids.endpoint_grants("chat") == {}


def test_endpoint_grants_is_a_copy(ids, alice):
    ids.set_endpoint_level("chat", "alice", L.CAN_VIEW)
    grants = ids.endpoint_grants("chat")
    grants["alice"] = L.CAN_MANAGE
    grants["mallory"] = L.CAN_MANAGE
    assert ids.endpoint_grants("chat") == {"alice": L.CAN_VIEW}


def test_in_memory_grants_match_the_database(db, ids, alice):
    ids.create_principal("bob", "user")
    ids.set_endpoint_level("a", "alice", L.CAN_REVIEW)
    ids.set_endpoint_level("a", "bob", L.CAN_QUERY)
    ids.set_endpoint_level("b", "bob", L.CAN_MANAGE)
    ids.set_endpoint_level("a", "bob", L.NO_PERMISSIONS)
    before = {e: ids.endpoint_grants(e) for e in ("a", "b")}
    ids.reload()
    assert {e: ids.endpoint_grants(e) for e in ("a", "b")} == before == {"a": {"alice": L.CAN_REVIEW}, "b": {"bob": L.CAN_MANAGE}}


def test_dropped_endpoint_grants_do_not_carry_over_to_a_new_endpoint_of_the_same_name(ids, alice):
    ids.set_endpoint_level("chat", "alice", L.CAN_MANAGE)
    ids.set_endpoint_level("other", "alice", L.CAN_QUERY)
    ids.drop_endpoint_grants("chat")
    assert ids.endpoint_level("chat", "alice") is L.NO_PERMISSIONS
    assert ids.endpoint_level("other", "alice") is L.CAN_QUERY
    ids.reload()
    assert ids.endpoint_level("chat", "alice") is L.NO_PERMISSIONS
    ids.drop_endpoint_grants("never-existed")


def test_experiment_mirroring_only_with_an_experiment(bridged, bridge):
    bridged.create_principal("alice", "user")
    bridge.calls.clear()
    bridged.set_endpoint_level("chat", "alice", L.CAN_REVIEW)
    bridged.set_endpoint_level("chat", "alice", L.CAN_REVIEW, experiment_id="")
    assert bridge.calls == []
    bridged.set_endpoint_level("chat", "alice", L.CAN_REVIEW, experiment_id="7")
    bridged.set_endpoint_level("chat", "alice", L.NO_PERMISSIONS, experiment_id="7")
    assert bridge.calls == [("experiment", "7", "alice", L.CAN_REVIEW), ("experiment", "7", "alice", L.NO_PERMISSIONS)]


# ---- deleting a principal ---------------------------------------------------------------------


def test_delete_principal_removes_tokens_and_grants(db, ids, alice):
    bob = ids.create_principal("bob", "user")
    alice_token, _ = ids.create_token("alice", None, None)
    bob_token, _ = ids.create_token("bob", None, None)
    ids.set_endpoint_level("chat", "alice", L.CAN_MANAGE)
    ids.set_endpoint_level("chat", "bob", L.CAN_QUERY)
    ids.grant_model("main.default", "alice", "USE", [])
    ids.grant_model("main", "bob", "READ", [])

    ids.delete_principal("alice")

    with pytest.raises(NotFound):
        ids.principal("alice")
    assert ids.authenticate_personal(alice_token) is None
    assert ids.endpoint_grants("chat") == {"bob": L.CAN_QUERY}
    assert ids.prefix_grants() == [("main", "bob", "READ")]
    with db.session() as session:
        assert session.scalars(select(AccessToken.principal_id)).all() == [bob.id]
        assert session.scalars(select(EndpointGrant.principal_id)).all() == [bob.id]
        assert session.scalars(select(ModelPrefixGrant.principal_id)).all() == [bob.id]
        assert session.scalars(select(Principal.name).where(Principal.kind != "group")).all() == ["bob"]
    assert ids.authenticate_personal(bob_token).name == "bob"


def test_a_new_principal_of_the_same_name_inherits_nothing(ids, alice):
    old_token, _ = ids.create_token("alice", None, None)
    ids.set_endpoint_level("chat", "alice", L.CAN_MANAGE)
    ids.grant_model("main", "alice", "MANAGE", [])
    ids.delete_principal("alice")
    ids.create_principal("alice", "user")
    assert ids.authenticate_personal(old_token) is None
    assert ids.endpoint_level("chat", "alice") is L.NO_PERMISSIONS
    assert ids.prefix_grants() == []
    assert ids.list_tokens("alice") == []


def test_delete_unknown_principal_is_404(ids):
    with pytest.raises(NotFound):
        ids.delete_principal("ghost")


def test_principal_changes_reach_mlflow(bridged, bridge):
    bridged.create_principal("alice", "user")
    bridged.create_principal("root", "user", is_admin=True)
    bridged.delete_principal("alice")
    assert bridge.calls == [("ensure_user", "alice", False), ("ensure_user", "root", True), ("delete_user", "alice")]


def test_refused_principals_never_reach_mlflow(bridged, bridge):
    bridged.create_principal("alice", "user")
    bridge.calls.clear()
    for name, kind in [("alice", "user"), ("bad name", "user"), ("bob", "team"), ("admins", "group")]:
        with pytest.raises((InvalidParameter, AlreadyExists)):
            bridged.create_principal(name, kind)
    assert bridge.calls == []


# ---- registered-model grants ------------------------------------------------------------------


@pytest.mark.parametrize(("name", "is_prefix"), [
    ("main", True),
    ("main.default", True),
    ("my-catalog.my_schema", True),
    ("main.default.model", False),
    ("main.default.model.extra", False),
    ("main.", False),
    (".default", False),
    ("main..default", False),
    ("", False),
    (".", False),
    ("main default", False),
    ("main.default\n", False),
    ("main\n", False),
    ("main/default", False),
    ("main.*", False),
    ("*", False),
])
def test_prefix_detection(name, is_prefix):
    assert IdentityService.is_prefix(name) is is_prefix


def test_prefix_grant_is_stored_replaced_and_revoked(ids, alice):
    ids.grant_model("main.default", "alice", "use", [])
    assert ids.prefix_grants() == [("main.default", "alice", "USE")]
    ids.grant_model("main.default", "alice", "MANAGE", [])
    assert ids.prefix_grants() == [("main.default", "alice", "MANAGE")]
    ids.grant_model("main", "alice", "READ", [])
    assert sorted(ids.prefix_grants()) == [("main", "alice", "READ"), ("main.default", "alice", "MANAGE")]
    ids.grant_model("main.default", "alice", None, [])
    assert ids.prefix_grants() == [("main", "alice", "READ")]


def test_full_model_name_is_not_a_prefix_grant(ids, alice):
    ids.grant_model("main.default.bot", "alice", "USE", ["main.default.bot"])
    assert ids.prefix_grants() == []


@pytest.mark.parametrize("permission", ["CAN_QUERY", "NO_PERMISSIONS", "OWNER", ""])
def test_bad_model_permission_is_refused_before_anything_changes(bridged, bridge, permission):
    bridged.create_principal("alice", "user")
    bridge.calls.clear()
    for target in ("main.default", "main.default.bot"):
        with pytest.raises(InvalidParameter, match="Unknown registered-model permission"):
            bridged.grant_model(target, "alice", permission, ["main.default.bot"])
    assert bridge.calls == [] and bridged.prefix_grants() == []


def test_model_grant_to_unknown_principal_is_404(bridged, bridge):
    with pytest.raises(NotFound):
        bridged.grant_model("main.default", "ghost", "USE", ["main.default.bot"])
    assert bridge.calls == [] and bridged.prefix_grants() == []


def test_prefix_grant_copies_onto_each_matching_model_only(bridged, bridge):
    bridged.create_principal("alice", "user")
    bridge.calls.clear()
    names = ["main.default.a", "main.default.b", "main.defaultx.c", "main.other.d", "mainx.default.e", "main.default",
             "other.default.f"]
    bridged.grant_model("main.default", "alice", "USE", names)
    assert bridge.calls == [("model", "main.default.a", "alice", "USE"), ("model", "main.default.b", "alice", "USE")]
    bridge.calls.clear()
    bridged.grant_model("main", "alice", "READ", names)
    assert [c[1] for c in bridge.calls] == ["main.default.a", "main.default.b", "main.defaultx.c", "main.other.d",
                                            "main.default"]


def test_full_name_grant_touches_exactly_that_model(bridged, bridge):
    bridged.create_principal("alice", "user")
    bridge.calls.clear()
    bridged.grant_model("main.default.a", "alice", "EDIT", ["main.default.a", "main.default.b"])
    bridged.grant_model("main.default.a", "alice", None, ["main.default.a", "main.default.b"])
    assert bridge.calls == [("model", "main.default.a", "alice", "EDIT"), ("model", "main.default.a", "alice", None)]


def test_revoking_a_prefix_revokes_it_on_matching_models(bridged, bridge):
    bridged.create_principal("alice", "user")
    bridged.grant_model("main.default", "alice", "USE", ["main.default.a"])
    bridge.calls.clear()
    bridged.grant_model("main.default", "alice", None, ["main.default.a", "main.x.b"])
    assert bridge.calls == [("model", "main.default.a", "alice", None)]
    assert bridged.prefix_grants() == []


def test_models_created_later_get_the_prefix_grants(bridged, bridge):
    bridged.create_principal("alice", "user")
    bridged.create_principal("bob", "user")
    bridged.grant_model("main.default", "alice", "USE", [])
    bridged.grant_model("main", "bob", "READ", [])
    bridged.grant_model("other", "bob", "MANAGE", [])
    bridge.calls.clear()
    bridged.apply_prefix_grants("main.default.new")
    assert sorted(bridge.calls) == [("model", "main.default.new", "alice", "USE"), ("model", "main.default.new", "bob", "READ")]
    bridge.calls.clear()
    bridged.apply_prefix_grants("main.defaults.new")
    assert bridge.calls == [("model", "main.defaults.new", "bob", "READ")]
    bridge.calls.clear()
    bridged.apply_prefix_grants("mainframe.x.y")
    assert bridge.calls == []


def test_without_a_bridge_model_permissions_are_unknown(ids, alice):
    ids.grant_model("main.default.a", "alice", "USE", ["main.default.a"])
    ids.apply_prefix_grants("main.default.a")
    assert ids.model_permission("main.default.a", "alice") is None


def test_model_permission_asks_mlflow(bridged, bridge):
    bridged.create_principal("alice", "user")
    bridged.grant_model("main.default", "alice", "USE", ["main.default.a"])
    assert bridged.model_permission("main.default.a", "alice") == "USE"
    assert bridged.model_permission("main.default.b", "alice") is None


# ---- the real MLflow basic-auth store --------------------------------------------------------


@pytest.fixture
def mlflow_bridge(tmp_path):
    from agentwharf.auth.mlflow_bridge import MlflowAuthBridge

    bridge = MlflowAuthBridge(f"sqlite:///{tmp_path}/auth.db")
    yield bridge
    bridge.dispose()


@pytest.fixture
def real(db, mlflow_bridge):
    return IdentityService(db, mlflow_bridge)


def test_mlflow_users_follow_principals(real, mlflow_bridge):
    store = mlflow_bridge.store
    real.create_principal("alice", "user")
    real.create_principal("root", "user", is_admin=True)
    assert store.has_user("alice") and not store.get_user("alice").is_admin
    assert store.get_user("root").is_admin
    # Their MLflow password is random: nobody signs in to MLflow directly with an empty or guessed one.
    assert not store.authenticate_user("alice", "")
    assert not store.authenticate_user("alice", "alice")
    real.delete_principal("alice")
    assert not store.has_user("alice")
    # Deleting again (MLflow side already gone) is harmless for the bridge.
    mlflow_bridge.delete_user("alice")


def test_existing_mlflow_user_is_adopted_with_the_platforms_admin_flag(real, mlflow_bridge):
    mlflow_bridge.store.create_user("carol", "Passw0rd!Passw0rd!", is_admin=True)
    real.create_principal("carol", "user", is_admin=False)
    assert not mlflow_bridge.store.get_user("carol").is_admin


def test_mlflow_model_permissions_follow_prefix_grants(real, mlflow_bridge):
    real.create_principal("alice", "user")
    real.grant_model("main.default", "alice", "USE", ["main.default.a", "main.other.b"])
    assert real.model_permission("main.default.a", "alice") == "USE"
    assert real.model_permission("main.other.b", "alice") is None
    real.apply_prefix_grants("main.default.later")
    assert real.model_permission("main.default.later", "alice") == "USE"
    real.grant_model("main.default", "alice", "MANAGE", ["main.default.a"])
    assert real.model_permission("main.default.a", "alice") == "MANAGE"
    real.grant_model("main.default", "alice", None, ["main.default.a", "main.default.never-granted"])
    assert real.model_permission("main.default.a", "alice") is None
    assert real.model_permission("main.default.later", "alice") == "USE"  # not in the list given


def test_mlflow_per_model_grant_and_revoke(real):
    real.create_principal("alice", "user")
    real.grant_model("main.default.bot", "alice", "READ", [])
    assert real.model_permission("main.default.bot", "alice") == "READ"
    real.grant_model("main.default.bot", "alice", None, [])
    assert real.model_permission("main.default.bot", "alice") is None
    real.grant_model("main.default.bot", "alice", None, [])  # revoking nothing is fine


def test_mlflow_experiment_access_follows_endpoint_levels(real, mlflow_bridge):
    from mlflow.exceptions import MlflowException

    store = mlflow_bridge.store
    real.create_principal("alice", "user")

    def experiment_permission():
        try:
            return store.get_experiment_permission("42", "alice").permission
        except MlflowException:
            return None

    real.set_endpoint_level("chat", "alice", L.CAN_QUERY, "42")
    assert experiment_permission() is None  # querying shows no traces
    real.set_endpoint_level("chat", "alice", L.CAN_REVIEW, "42")
    assert experiment_permission() == "EDIT"
    real.set_endpoint_level("chat", "alice", L.CAN_MANAGE, "42")
    assert experiment_permission() == "MANAGE"
    real.set_endpoint_level("chat", "alice", L.CAN_VIEW, "42")
    assert experiment_permission() is None  # a downgrade takes the traces away
    real.set_endpoint_level("chat", "alice", L.CAN_REVIEW, "42")
    real.set_endpoint_level("chat", "alice", L.NO_PERMISSIONS, "42")
    assert experiment_permission() is None

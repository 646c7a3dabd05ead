"""Groups: membership (nested, built-in ``admins`` and ``users``), what a member may do on an
endpoint, and how group grants reach MLflow's permission store (as MLflow roles)."""

import pytest

from agentwharf.auth import groups
from agentwharf.auth.identities import IdentityService
from agentwharf.auth.levels import PermissionLevel
from agentwharf.errors import AlreadyExists, InvalidParameter, NotFound

L = PermissionLevel


@pytest.fixture
def ids(db):
    service = IdentityService(db, None)
    for name in ("alice", "bob"):
        service.create_principal(name, "user")
    service.create_principal("ci-bot", "service_principal")
    service.create_principal("data-team", "group")
    return service


# ---- the pure closure ---------------------------------------------------------------------------


def test_memberships_expand_nested_groups_and_put_everyone_in_users():
    closure = groups.memberships({"eng": ["alice", "data"], "data": ["bob"], "admins": ["eng"]}, ["alice", "bob", "carol"])
    assert closure["bob"] == {"data", "eng", "admins", "users"}
    assert closure["alice"] == {"eng", "admins", "users"}
    assert closure["carol"] == {"users"}
    assert closure["data"] == {"eng", "admins"}
    assert "admins" not in closure


def test_memberships_survive_a_cycle_in_stored_data():
    closure = groups.memberships({"a": ["b"], "b": ["a"]}, [])
    assert closure == {"a": {"b"}, "b": {"a"}}


@pytest.mark.parametrize(("group", "member"), [("a", "a"), ("b", "a")])
def test_cycles_are_refused(group, member):
    closure = groups.memberships({"a": ["b"]}, [])
    with pytest.raises(InvalidParameter, match="cannot contain itself"):
        groups.check_no_cycle(group, member, closure)


# ---- membership in the service ------------------------------------------------------------------


def test_built_in_groups_exist_and_admins_are_their_members(ids):
    assert [g.name for g in ids.list_principals("group")] == ["admins", "data-team", "users"]
    root = ids.create_principal("root", "user", is_admin=True)
    assert root.is_admin and root.groups == {"admins", "users"}
    assert [m.name for m in ids.direct_members("admins")] == ["root"]
    assert {m.name for m in ids.direct_members("users")} == {"alice", "bob", "ci-bot", "root"}
    assert ids.group_members("users") == {"alice", "bob", "ci-bot", "root"}


def test_adding_to_admins_makes_an_admin_and_removing_unmakes(ids):
    ids.change_members("admins", add=["alice"])
    assert ids.principal("alice").is_admin
    ids.change_members("admins", remove=["alice"])
    assert not ids.principal("alice").is_admin


def test_admin_through_a_nested_group(ids):
    ids.change_members("admins", add=["data-team"])
    ids.change_members("data-team", add=["bob", "ci-bot"])
    assert ids.principal("bob").is_admin and ids.principal("ci-bot").is_admin
    assert not ids.principal("data-team").is_admin  # a group is never an admin itself
    ids.change_members("data-team", remove=["bob"])
    assert not ids.principal("bob").is_admin


def test_change_members_add_remove_replace(ids):
    ids.change_members("data-team", add=["alice", "bob"])
    assert [m.name for m in ids.direct_members("data-team")] == ["alice", "bob"]
    ids.change_members("data-team", add=["alice"])  # twice is once
    ids.change_members("data-team", add=["ci-bot"], replace_all=True)
    assert [m.name for m in ids.direct_members("data-team")] == ["ci-bot"]
    assert [g.name for g in ids.direct_groups("ci-bot")] == ["data-team", "users"]
    ids.change_members("data-team", remove=["ci-bot"])
    assert ids.direct_members("data-team") == []


def test_membership_errors_change_nothing(ids):
    ids.create_principal("eng", "group")
    ids.change_members("eng", add=["data-team"])
    with pytest.raises(InvalidParameter, match="cannot contain itself"):
        ids.change_members("data-team", add=["alice", "eng"])
    with pytest.raises(NotFound, match="ghost"):
        ids.change_members("data-team", add=["alice", "ghost"])
    with pytest.raises(NotFound, match="is a user"):
        ids.change_members("alice", add=["bob"])
    with pytest.raises(InvalidParameter, match="'users' always holds every user"):
        ids.change_members("users", add=["alice"])
    assert ids.direct_members("data-team") == []


def test_an_admin_cannot_take_away_their_own_admin_rights(ids):
    ids.create_principal("root", "user", is_admin=True)
    with pytest.raises(InvalidParameter, match="your own admin rights"):
        ids.change_members("admins", remove=["root"], keep_admin="root")
    with pytest.raises(InvalidParameter, match="your own admin rights"):
        ids.change_members("admins", add=["alice"], replace_all=True, keep_admin="root")
    assert ids.principal("root").is_admin
    # Through a nested group the same.
    ids.change_members("data-team", add=["bob"])
    ids.change_members("admins", add=["data-team"])
    with pytest.raises(InvalidParameter, match="your own admin rights"):
        ids.change_members("data-team", remove=["bob"], keep_admin="bob")
    ids.change_members("data-team", remove=["bob"], keep_admin="root")
    assert not ids.principal("bob").is_admin


def test_groups_share_the_name_space_and_built_ins_stay(ids):
    with pytest.raises(AlreadyExists):
        ids.create_principal("alice", "group")
    with pytest.raises(AlreadyExists):
        ids.create_principal("data-team", "user")
    for name in groups.BUILT_IN:
        with pytest.raises(InvalidParameter, match="built-in"):
            ids.delete_principal(name)
        with pytest.raises(InvalidParameter, match="built-in"):
            ids.update_principal(name, new_name="other")
    assert ids.create_principal("Data Engineers", "group").name == "Data Engineers"
    for bad in (" lead", "trail ", "a\tb", "x" * 129):
        with pytest.raises(InvalidParameter, match="Invalid principal name"):
            ids.create_principal(bad, "group")


def test_groups_hold_no_tokens_and_cannot_sign_in(ids):
    with pytest.raises(InvalidParameter, match="is a group"):
        ids.create_token("data-team", None, None)
    assert ids.active_principal("data-team") is None


def test_rename_a_group_keeps_its_grants_and_members(ids):
    ids.change_members("data-team", add=["alice"])
    ids.set_endpoint_level("chat", "data-team", L.CAN_QUERY)
    ids.update_principal("data-team", new_name="analysts", display_name="analysts")
    assert ids.endpoint_level("chat", "alice") is L.CAN_QUERY
    assert ids.endpoint_grants("chat") == {"analysts": L.CAN_QUERY}
    with pytest.raises(InvalidParameter, match="userName cannot be changed"):
        ids.update_principal("alice", new_name="alicia")


def test_deleting_a_group_drops_its_grants_and_memberships(ids):
    ids.change_members("data-team", add=["alice"])
    ids.set_endpoint_level("chat", "data-team", L.CAN_MANAGE)
    ids.delete_principal("data-team")
    assert ids.endpoint_level("chat", "alice") is L.NO_PERMISSIONS
    assert [g.name for g in ids.direct_groups("alice")] == ["users"]


# ---- endpoint levels through groups -------------------------------------------------------------


def test_a_member_gets_the_strongest_of_its_own_and_its_groups_levels(ids):
    ids.create_principal("eng", "group")
    ids.change_members("eng", add=["data-team"])
    ids.change_members("data-team", add=["alice"])
    ids.set_endpoint_level("chat", "alice", L.CAN_VIEW)
    assert ids.endpoint_level("chat", "alice") is L.CAN_VIEW
    ids.set_endpoint_level("chat", "eng", L.CAN_QUERY)
    assert ids.endpoint_level("chat", "alice") is L.CAN_QUERY  # through data-team, inside eng
    ids.set_endpoint_level("chat", "data-team", L.CAN_REVIEW)
    assert ids.endpoint_level("chat", "alice") is L.CAN_REVIEW
    ids.set_endpoint_level("chat", "alice", L.CAN_MANAGE)
    assert ids.endpoint_level("chat", "alice") is L.CAN_MANAGE  # her own is stronger
    assert ids.endpoint_level("chat", "bob") is L.NO_PERMISSIONS
    assert ids.endpoint_level("other", "alice") is L.NO_PERMISSIONS
    ids.change_members("data-team", remove=["alice"])
    ids.set_endpoint_level("chat", "alice", L.NO_PERMISSIONS)
    assert ids.endpoint_level("chat", "alice") is L.NO_PERMISSIONS


def test_granting_users_grants_everyone_present_and_future(ids):
    ids.set_endpoint_level("chat", "users", L.CAN_QUERY)
    assert ids.endpoint_level("chat", "ci-bot") is L.CAN_QUERY
    ids.create_principal("later", "user")
    assert ids.endpoint_level("chat", "later") is L.CAN_QUERY


def test_group_levels_survive_a_restart(db, ids):
    ids.change_members("data-team", add=["bob"])
    ids.set_endpoint_level("chat", "data-team", L.CAN_QUERY)
    again = IdentityService(db, None)
    assert again.endpoint_level("chat", "bob") is L.CAN_QUERY
    assert again.principal("bob").groups == {"data-team", "users"}


def test_deactivated_principals_cannot_sign_in_at_once(ids):
    token, _ = ids.create_token("alice", None, None)
    assert ids.authenticate_personal(token).name == "alice"
    ids.update_principal("alice", active=False)
    assert ids.authenticate_personal(token) is None
    ids.update_principal("alice", active=True)
    assert ids.authenticate_personal(token).name == "alice"
    with pytest.raises(InvalidParameter, match="active must be true or false"):
        ids.update_principal("alice", active="no")


# ---- MLflow: group grants are role permissions, members are role assignments ----------------


@pytest.fixture
def real(db, tmp_path):
    from agentwharf.auth.mlflow_bridge import MlflowAuthBridge

    bridge = MlflowAuthBridge(f"sqlite:///{tmp_path}/auth.db")
    service = IdentityService(db, bridge)
    for name in ("alice", "bob"):
        service.create_principal(name, "user")
    service.create_principal("data-team", "group")
    yield service
    bridge.dispose()


def test_a_group_model_grant_reaches_its_members_and_follows_membership(real):
    real.change_members("data-team", add=["alice"])
    real.grant_model("main.default.bot", "data-team", "USE", [])
    assert real.model_permission("main.default.bot", "alice") == "USE"
    assert real.model_permission("main.default.bot", "bob") is None
    assert real.model_grant("main.default.bot", "data-team") == "USE"
    assert real.model_grant("main.default.bot", "alice") is None  # not hers: her group's
    real.change_members("data-team", add=["bob"], remove=["alice"])
    assert real.model_permission("main.default.bot", "bob") == "USE"
    assert real.model_permission("main.default.bot", "alice") is None


def test_strongest_of_own_and_group_model_grants_and_own_grant_survives(real):
    real.change_members("data-team", add=["alice"])
    real.grant_model("main.default.bot", "alice", "READ", [])
    real.grant_model("main.default.bot", "data-team", "MANAGE", [])
    assert real.model_permission("main.default.bot", "alice") == "MANAGE"
    real.grant_model("main.default.bot", "data-team", None, [])
    assert real.model_permission("main.default.bot", "alice") == "READ"  # her own was never overwritten


def test_nested_groups_and_prefix_grants_to_groups(real):
    real.create_principal("eng", "group")
    real.change_members("eng", add=["data-team"])
    real.change_members("data-team", add=["bob"])
    real.grant_model("main.team", "eng", "USE", ["main.team.a", "main.other.b"])
    assert real.model_permission("main.team.a", "bob") == "USE"
    assert real.model_permission("main.other.b", "bob") is None
    real.apply_prefix_grants("main.team.later")
    assert real.model_permission("main.team.later", "bob") == "USE"
    real.create_principal("carol", "user")
    real.change_members("data-team", add=["carol"])
    assert real.model_permission("main.team.later", "carol") == "USE"


def test_group_endpoint_levels_reach_the_experiment(real):
    store = real.bridge.store
    real.change_members("data-team", add=["alice"])
    real.set_endpoint_level("chat", "data-team", L.CAN_REVIEW, "42")
    alice = store.get_user("alice")
    assert store.get_role_permission_for_resource(alice.id, "experiment", "42", real.bridge.workspace).name == "EDIT"
    real.set_endpoint_level("chat", "data-team", L.NO_PERMISSIONS, "42")
    assert store.get_role_permission_for_resource(alice.id, "experiment", "42", real.bridge.workspace) is None


def test_deleting_or_renaming_a_group_moves_its_role(real):
    real.change_members("data-team", add=["alice"])
    real.grant_model("main.default.bot", "data-team", "EDIT", [])
    real.update_principal("data-team", new_name="analysts")
    assert real.model_permission("main.default.bot", "alice") == "EDIT"
    assert real.bridge.groups_with_roles() == ["analysts"]
    real.delete_principal("analysts")
    assert real.model_permission("main.default.bot", "alice") is None
    assert real.bridge.groups_with_roles() == []


def test_admin_flag_in_mlflow_follows_admins_membership(real):
    store = real.bridge.store
    real.change_members("admins", add=["data-team"])
    real.change_members("data-team", add=["bob"])
    assert store.get_user("bob").is_admin
    real.change_members("data-team", remove=["bob"])
    assert not store.get_user("bob").is_admin


def test_a_restart_brings_roles_in_step(db, real):
    real.change_members("data-team", add=["alice"])
    real.grant_model("main.default.bot", "data-team", "USE", [])
    # A membership change MLflow missed (its store was out of reach, say) is repaired at start.
    role = real.bridge._roles["data-team"]
    alice = real.bridge.store.get_user("alice")
    real.bridge.store.unassign_role_from_user(alice.id, role)
    assert real.model_permission("main.default.bot", "alice") is None
    IdentityService(db, real.bridge).sync_mlflow()
    assert real.model_permission("main.default.bot", "alice") == "USE"


def test_concurrent_changes_neither_fail_nor_lose_members(ids):
    from concurrent.futures import ThreadPoolExecutor

    names = [f"p{i}" for i in range(12)]
    for name in names:
        ids.create_principal(name, "user")
    with ThreadPoolExecutor(6) as pool:
        # The same member added twice at once, and many members at once: all land, no error.
        list(pool.map(lambda n: ids.change_members("data-team", add=[n, "alice"]), names))
    assert {m.name for m in ids.direct_members("data-team")} == {"alice", *names}


def test_the_same_name_created_twice_at_once_is_one_principal_and_one_409(ids):
    from concurrent.futures import ThreadPoolExecutor

    def create(_):
        try:
            ids.create_principal("twin", "user")
            return "created"
        except AlreadyExists:
            return "exists"

    with ThreadPoolExecutor(4) as pool:
        outcomes = sorted(pool.map(create, range(4)))
    assert outcomes == ["created", "exists", "exists", "exists"]

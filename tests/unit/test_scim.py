"""agentwharf.control.scim: SCIM list queries (filter, sort, paging, attributes) and PatchOp,
as Databricks' clients send them."""

import pytest

from agentwharf.control import scim
from agentwharf.errors import InvalidParameter

PEOPLE = [
    {"id": "3", "userName": "Bob@example.com", "displayName": "Bob", "active": True, "emails": [{"value": "bob@example.com"}]},
    {"id": "12", "userName": "alice", "displayName": "Alice A.", "active": False},
    {"id": "5", "userName": "carol@team.org", "displayName": "Carol", "active": True,
     "groups": [{"value": "7", "display": "data-team"}]},
]


def ids(expression: str) -> list[str]:
    matches = scim.parse_filter(expression)
    return [p["id"] for p in PEOPLE if matches(p)]


@pytest.mark.parametrize(("expression", "expected"), [
    ('userName eq "alice"', ["12"]),
    ('USERNAME EQ "ALICE"', ["12"]),  # names and strings ignore case
    ('displayName eq "Alice A."', ["12"]),
    ('userName co "example"', ["3"]),
    ('userName sw "c"', ["5"]),
    ('userName ew ".org"', ["5"]),
    ('userName ne "alice"', ["3", "5"]),
    ("emails pr", ["3"]),
    ('emails.value eq "bob@example.com"', ["3"]),
    ('emails eq "bob@example.com"', ["3"]),
    ('groups.display eq "data-team"', ["5"]),
    ("id eq 12", ["12"]),
    ('id eq "12"', ["12"]),
    ("active eq false", ["12"]),
    ('active eq "true"', []),  # a string is not a boolean
    ('userName sw "b" or active eq false', ["3", "12"]),
    ('userName co "a" and active eq true', ["3", "5"]),
    ('userName co "a" and (active eq false or displayName eq "Carol")', ["12", "5"]),
    ("not (active eq true)", ["12"]),
    ('displayName eq "Say \\"hi\\""', []),
    ('urn:ietf:params:scim:schemas:core:2.0:User:userName eq "alice"', ["12"]),
    ("", ["3", "12", "5"]),
])
def test_filters(expression, expected):
    assert ids(expression) == expected


@pytest.mark.parametrize(("expression", "says"), [
    ("userName eq", "unexpected end"),
    ('userName like "a"', "unknown operator 'like'"),
    ('(userName eq "a"', "unexpected end"),
    ("userName eq alice", "quote strings"),
    ('"a" eq userName', "expected an attribute"),
    ('userName eq "a" junk', "unexpected text"),
    ('not userName eq "a"', r"'not' must be followed by '\('"),
    ('user-name eq "a"', "Invalid SCIM attribute path"),
])
def test_bad_filters_say_what_is_wrong(expression, says):
    with pytest.raises(InvalidParameter, match=says) as caught:
        scim.parse_filter(expression)
    assert caught.value.http_status == 400


def test_sort_by_attribute_and_order():
    assert [p["id"] for p in scim.sort(PEOPLE, "userName", None)] == ["12", "3", "5"]
    assert [p["id"] for p in scim.sort(PEOPLE, "userName", "descending")] == ["5", "3", "12"]
    assert [p["id"] for p in scim.sort(PEOPLE, "id", "ascending")] == ["3", "5", "12"]  # numerically
    assert [p["id"] for p in scim.sort(PEOPLE, "emails", "descending")] == ["3", "12", "5"]  # missing last
    assert scim.sort(PEOPLE, None, None) == PEOPLE
    with pytest.raises(InvalidParameter, match="sortOrder"):
        scim.sort(PEOPLE, "userName", "sideways")


@pytest.mark.parametrize(("start", "count", "ids_", "answered_start"), [
    (1, 2, ["a", "b"], 1),
    (3, 2, ["c", "d"], 3),
    (5, 2, ["e"], 5),
    (6, 2, [], 6),      # past the end: an empty page (the SDK stops on it)
    (500, 100, [], 500),
    (0, 2, ["a", "b"], 1),   # below 1 counts as 1
    (-4, 2, ["a", "b"], 1),
    (1, 0, [], 1),
    (1, -1, [], 1),
])
def test_paging_is_one_based(start, count, ids_, answered_start):
    items = [{"id": x} for x in "abcde"]
    shown, start_index = scim.page(items, start, count)
    assert [r["id"] for r in shown] == ids_ and start_index == answered_start


def test_paging_caps_the_page_size():
    items = [{"id": str(i)} for i in range(scim.MAX_COUNT + 5)]
    shown, _ = scim.page(items, 1, 10**9)
    assert len(shown) == scim.MAX_COUNT


def test_list_response_shape():
    assert scim.list_response([{"id": "1"}], 7, 3) == {
        "schemas": [scim.LIST_SCHEMA], "totalResults": 7, "startIndex": 3, "itemsPerPage": 1, "Resources": [{"id": "1"}]}


@pytest.mark.parametrize(("raw", "value"), [(None, 9), ("", 9), ("4", 4), ("-2", -2)])
def test_int_params(raw, value):
    assert scim.int_param(raw, "count", 9) == value


def test_int_param_refuses_text():
    with pytest.raises(InvalidParameter, match="count must be a whole number"):
        scim.int_param("ten", "count", 9)


def test_attributes_and_excluded_attributes():
    bob = PEOPLE[0]
    assert scim.project(bob, "userName", None) == {"id": "3", "userName": "Bob@example.com"}
    assert scim.project(bob, "USERNAME, emails.value", None) == {"id": "3", "userName": "Bob@example.com",
                                                                 "emails": [{"value": "bob@example.com"}]}
    assert scim.project(bob, None, "emails,active,id") == {"id": "3", "userName": "Bob@example.com", "displayName": "Bob"}
    assert scim.project(bob, None, None) is bob


# ---- PatchOp ---------------------------------------------------------------------------------

NAMES = {"members": "members", "displayname": "displayName", "active": "active", "entitlements": "entitlements"}


def patch(resource, *operations):
    return scim.apply(resource, scim.operations({"schemas": [scim.PATCH_SCHEMA], "Operations": list(operations)}), NAMES)


def test_add_and_remove_members_as_databricks_documents_them():
    group = {"displayName": "team", "members": [{"value": "1", "display": "a"}]}
    added = patch(group, {"op": "add", "value": {"members": [{"value": "2"}, {"value": "1"}]}})
    assert [m["value"] for m in added["members"]] == ["1", "2"]
    removed = patch(added, {"op": "remove", "path": 'members[value eq "1"]'})
    assert [m["value"] for m in removed["members"]] == ["2"]
    assert group["members"] == [{"value": "1", "display": "a"}]  # the input is not changed


def test_remove_with_values_replace_and_clear():
    group = {"members": [{"value": "1"}, {"value": "2"}, {"value": "3"}]}
    assert patch(group, {"op": "Remove", "path": "members", "value": [{"value": "2"}]})["members"] == [{"value": "1"}, {"value": "3"}]
    assert patch(group, {"op": "replace", "path": "members", "value": [{"value": "9"}]})["members"] == [{"value": "9"}]
    assert patch(group, {"op": "remove", "path": "members"})["members"] == []
    assert patch(group, {"op": "add", "path": "members", "value": "4"})["members"][-1] == {"value": "4"}


def test_single_valued_attributes():
    user = {"displayName": "A", "active": True}
    assert patch(user, {"op": "replace", "path": "active", "value": [{"value": "false"}]})["active"] == [{"value": "false"}]
    assert patch(user, {"op": "replace", "value": {"displayName": "B", "active": False}}) == {"displayName": "B", "active": False}
    assert patch(user, {"op": "remove", "path": "displayName"})["displayName"] is None


@pytest.mark.parametrize(("operation", "says"), [
    ({"op": "move", "path": "active", "value": True}, "op must be add, remove or replace"),
    ({"op": "remove"}, "remove needs a path"),
    ({"op": "add", "value": [1]}, "value must be an object"),
    ({"op": "replace", "path": "active"}, "replace needs a value"),
    ({"op": "replace", "path": "userName", "value": "x"}, "'userName' cannot be changed here"),
    ({"op": "add", "path": "members", "value": [{"id": "1"}]}, "must be objects with a 'value'"),
    ({"op": "replace", "path": 'active[value eq "x"]', "value": True}, "single-valued"),
    ({"op": "add", "path": 5, "value": 1}, "path must be a string"),
    ({"op": "add", "path": "members[", "value": 1}, "not a path agentwharf understands"),
])
def test_bad_operations_are_named(operation, says):
    with pytest.raises(InvalidParameter, match=says):
        patch({"members": [], "active": True}, operation)


@pytest.mark.parametrize("body", [{}, {"Operations": []}, {"Operations": "add"}, {"Operations": [5]}])
def test_a_patch_needs_operations(body):
    with pytest.raises(InvalidParameter):
        scim.operations(body)


@pytest.mark.parametrize(("value", "expected"), [(True, True), ("false", False), ("TRUE", True),
                                                  ([{"value": "false"}], False), ([{"value": True}], True)])
def test_booleans_as_clients_send_them(value, expected):
    assert scim.as_bool(value, "active") is expected


@pytest.mark.parametrize("value", ["no", 0, None, [], [{"value": "x"}], {"value": True}])
def test_bad_booleans(value):
    with pytest.raises(InvalidParameter, match="active must be true or false"):
        scim.as_bool(value, "active")

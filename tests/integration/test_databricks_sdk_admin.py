"""databricks-sdk 0.156.0's admin half, unchanged, against agentwharf (issue 18): users, groups,
service principals, tokens, token management, permissions and serving endpoints, each method
called for real from the SDK's own venv (databricks/sdk_admin_calls.py), and the README's
conformance table checked against what the calls did and against the SDK's own list of methods.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from pathlib import Path

import mlflow
import pytest

from tests.integration.client_venvs import client_venv
from tests.integration.platform_process import wait_until
from tests.integration.test_databricks_clients import SDK_PACKAGES

pytestmark = pytest.mark.timeout(900)

ROOT = Path(__file__).resolve().parents[2]
TABLE_ROW = re.compile(r"^\| `(\w+)\.(\w+)` \| (works|refused \(501\)|client side)")


@pytest.fixture(scope="module")
def admin_script(platform, logged):
    """Runs the admin script once; its findings are what the tests below read."""
    suffix = uuid.uuid4().hex[:6]
    model = f"main.sdk.admin{suffix}"
    for _ in range(2):
        mlflow.register_model(logged["info"], model)
    python = client_venv(".venv-databricks", SDK_PACKAGES)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(platform.home.parent),
           "DATABRICKS_HOST": platform.base_url, "DATABRICKS_TOKEN": platform.token}
    done = subprocess.run([str(python), str(ROOT / "tests/integration/databricks/sdk_admin_calls.py"),
                           json.dumps({"model": model, "suffix": suffix})], capture_output=True, text=True, env=env, timeout=800)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-6000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return {**found, "suffix": suffix, "model": model}


def readme_table() -> dict[str, str]:
    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        match = TABLE_ROW.match(line)
        if match:
            rows[f"{match[1]}.{match[2]}"] = match[3]
    return rows


def test_the_readme_table_covers_every_method_and_says_what_each_did(admin_script):
    table = readme_table()
    methods = {f"{service}.{m}" for service, names in admin_script["methods"].items() for m in names}
    assert set(table) == methods, "README table and the SDK's methods differ"
    outcomes = admin_script["outcomes"]
    assert set(outcomes) == methods, f"not called: {sorted(methods - set(outcomes))}"
    for call, said in table.items():
        did = outcomes[call]
        if said == "works":
            assert did == "ok", (call, did)
        elif said == "refused (501)":
            assert isinstance(did, dict) and did.get("status") == 501, (call, did)
            assert "Not supported by agentwharf" in did["message"], (call, did)
            assert did["seconds"] < 5, (call, did)  # answered at once: no retries, no hang
        else:
            assert "client side" in (did if isinstance(did, str) else next(iter(did))), (call, did)
    counts = {said: sum(1 for s in table.values() if s == said) for said in set(table.values())}
    print("conformance table:", counts)


def test_users_page_filter_sort_and_project(admin_script):
    seen, suffix = admin_script["seen"], admin_script["suffix"]
    assert seen["listed_users"] == seen["listed_unique"] >= 150 and seen["listed_has_all_150"]
    assert seen["raw_page"]["startIndex"] == 101 and seen["raw_page"]["itemsPerPage"] == min(100, seen["raw_page"]["totalResults"] - 100)
    assert seen["past_the_end"] == {"itemsPerPage": 0, "resources": 0}
    assert seen["filter_eq"] == [f"page007-{suffix}@example.com"]
    assert seen["filter_display_eq"] == [f"page008-{suffix}@example.com"]
    assert seen["filter_co"] == 150
    assert seen["filter_sw"] == [f"page019-{suffix}@example.com", f"page018-{suffix}@example.com", f"page017-{suffix}@example.com"]
    assert seen["attributes"] == [[f"page009-{suffix}@example.com", None, None]]
    assert seen["excluded"] == [[f"page009-{suffix}@example.com", None]]
    assert seen["bad_filter"] == "InvalidParameterValue"
    print(f"150 users created in {seen['create_150_seconds']}s, listed in {seen['list_seconds']}s")
    assert seen["create_150_seconds"] < 60 and seen["list_seconds"] < 10


def test_users_update_patch_delete_and_deactivation(admin_script):
    seen = admin_script["seen"]
    assert seen["me"] == {"user_name": "admin", "groups": ["admins"]}
    assert seen["after_update"] == {"display_name": "Alice Updated", "given_name": "Alice",
                                    "entitlements": ["allow-cluster-create", "workspace-access"],
                                    "roles": ["arn:aws:iam::1:instance-profile/x"]}
    assert seen["deleted_user_get"] == "ResourceDoesNotExist"
    # Deactivated: the token stops at once; reactivated: it works again.
    assert (seen["alice_me_before"], seen["alice_deactivated"], seen["alice_reactivated"]) == (
        admin_script["seen"]["get_by_id"], "Unauthenticated", "ok")
    assert seen["alice_may_not_list_others"] == 1  # herself
    assert seen["alice_may_not_create"] == "PermissionDenied"


def test_service_principals_and_groups(admin_script):
    seen, suffix = admin_script["seen"], admin_script["suffix"]
    assert seen["sp"] == {"application_id_is_uuid": True, "display_name": f"ci bot {suffix}"}
    assert seen["sp_filter"] == [f"ci bot {suffix}"]
    assert seen["sp_active_after_patch"] is False
    assert seen["sp_after_update"] == [f"ci bot {suffix} renamed", True]
    assert seen["deleted_sp_get"] == "ResourceDoesNotExist"
    alice = f"page000-{suffix}@example.com"
    # alice, the nested group and the service principal (named by its application id).
    assert set(seen["team_members"]) >= {alice, f"inner-{suffix}"} and len(seen["team_members"]) == 3
    assert seen["team_members_after_remove"] == sorted([alice, f"inner-{suffix}"])
    assert seen["cycle"] == "InvalidParameterValue"
    assert seen["groups_filter"] == [f"data-team-{suffix}"]
    assert seen["builtin_groups"] == ["admins", "users"]
    assert seen["alice_groups"] == [f"data-team-{suffix}"]
    assert seen["renamed_group"] == [f"renamed-{suffix}", [f"page002-{suffix}@example.com"]]
    assert seen["deleted_group_get"] == "ResourceDoesNotExist"
    assert seen["delete_admins"] == "InvalidParameterValue"


def test_endpoint_permissions_name_groups_and_mark_inherited_entries(admin_script):
    seen, suffix = admin_script["seen"], admin_script["suffix"]
    team, carol = f"data-team-{suffix}", f"page002-{suffix}@example.com"
    inherited = ["CAN_MANAGE", True, ["/serving-endpoints/"]]
    assert seen["levels"] == ["CAN_VIEW", "CAN_QUERY", "CAN_MANAGE"]  # CAN_REVIEW is agentwharf's, unknown to the SDK
    acl = {name: (kind, perms) for name, kind, perms in seen["acl"]}
    assert acl["admin"] == ("user", [["CAN_MANAGE", False, []]])  # the creator
    assert acl["admins"] == ("group", [inherited])
    assert acl[team] == ("group", [["CAN_QUERY", False, []]])
    assert acl[carol] == ("user", [["CAN_VIEW", False, []]])
    assert next(kind for name, (kind, _) in acl.items() if name not in ("admin", "admins", team, carol)) == "sp"
    assert seen["permissions_get"] == seen["permissions_by_name"]
    after = {name: perms for name, _, perms in seen["acl_after_set"]}
    assert after == {"admin": [["CAN_MANAGE", False, []]], "admins": [inherited], team: [["CAN_QUERY", False, []]]}
    assert seen["other_object_type"] == "NotImplemented"
    # Members of the group may query, directly or through a nested group; others may not.
    assert seen["alice_queries"] == "ok"
    assert seen["bob_queries_through_nested_group"] == "ok"
    assert seen["carol_queries"] == "PermissionDenied"
    assert seen["alice_reads_logs"] == "PermissionDenied"  # logs are for CAN_MANAGE


def test_serving_endpoints_through_the_sdk(admin_script, http):
    seen, (e1, e2) = admin_script["seen"], admin_script["entities"]
    assert seen["created"] == {"ready": "READY", "config_update": "NOT_UPDATING"}
    assert seen["other_ready"] == "READY"
    assert seen["deleted_endpoint_get"] == "ResourceDoesNotExist"
    assert len(seen["listed_endpoints"]) == 2
    assert seen["query_served_model_name"] == e1
    assert seen["bad_query"] == "InvalidParameterValue"
    assert seen["messages_to_responses_agent"] == "InvalidParameterValue"
    assert seen["openai_responses"] == "Echo: via openai"
    assert seen["tags"] == [["stage", "test"]]
    assert seen["routes"] == sorted([[e1, 0], [e2, 100]])
    assert seen["served_after_update"] == e2
    assert seen["external_model"]["name"] == "gpt-4o" and seen["external_model"]["task"] == "llm/v1/chat"
    assert "sk-sdk-test" not in json.dumps(seen)  # the key never comes back
    assert seen["ai_gateway"]["usage_tracking_config"] == {"enabled": True}
    assert seen["ai_gateway"]["rate_limits"] == [{"calls": 1000, "key": "user", "renewal_period": "minute"}]
    # Logs: the worker's current run; build logs: the model load, ending when it was ready.
    assert "ready on" in seen["logs"] and "models:/" in seen["logs"]
    assert "environment" in seen["build_logs"]  # the environment build first
    assert "loading models:/" in seen["build_logs"] and seen["build_logs"].rstrip().splitlines()[-1].endswith(".sock")
    assert seen["unknown_entity_logs"] == "ResourceDoesNotExist"
    metrics = seen["metrics"]
    label = f'endpoint_name="sdk-admin-{admin_script["suffix"]}"'
    count = int(re.search(rf"^request_count_total\{{{label}\}} (\d+)$", metrics, re.M)[1])
    assert count >= 8
    assert re.search(rf'^request_latency_ms_bucket\{{{label},le="\+Inf"\}} {count}$', metrics, re.M)
    assert re.search(rf"^request_4xx_count_total\{{{label}\}} [1-9]", metrics, re.M)  # the bad query
    assert re.search(rf"^provisioned_concurrent_requests_total\{{{label}\}} [1-9]", metrics, re.M)
    assert "sdk-admin-b-" not in metrics


def test_every_query_shape_reached_the_agent_and_the_inference_table(admin_script, http, platform):
    """The SDK's query drops a Responses answer's output (its response type has no such field),
    so what the agent answered is read back from the inference table."""
    endpoint = f"sdk-admin-{admin_script['suffix']}"

    def rows():
        answer = http.get(f"/api/2.0/serving-endpoints/{endpoint}/inference-table", params={"max_results": 100})
        return answer.json().get("rows", []) if answer.status_code == 200 else []

    wanted = {"list input", "string input", "with system"}
    found = wait_until(lambda: (r := rows()) and wanted <= {json.loads(row["response"])["output"][0]["content"][0]["text"][6:]
                                                              for row in r if row["status_code"] == 200} and r,
                       timeout=60, message="the queries in the inference table")
    tagged = [row for row in found if row["client_request_id"] == f"sdk-query-{admin_script['suffix']}"]
    assert len(tagged) == 1 and tagged[0]["status_code"] == 200


def test_tokens_and_token_management(admin_script):
    seen = admin_script["seen"]
    assert seen["token_lifetime_ms"] == 3600 * 1000
    assert seen["token_listed"] and seen["token_comment"] == "renamed"
    assert (seen["token_works"], seen["token_after_delete"]) == ("ok", "Unauthenticated")
    assert seen["scoped_token"] == "NotImplemented"
    assert len(seen["obo_by_name"]) == 1 and seen["obo_by_name"] == seen["obo_by_id"]
    assert seen["obo_info"]["comment"] == "ci" and seen["obo_info"]["owner_id"].isdigit()
    assert seen["obo_comment"] == "ci renamed"
    assert (seen["obo_works"], seen["obo_after_delete"]) == ("ok", "Unauthenticated")
    assert seen["token_acl"] == [["users", ["CAN_USE"]]]

"""Run inside the databricks-sdk venv: a Databricks admin's script, unchanged, against agentwharf.

Calls every method of serving_endpoints, users, groups, service_principals, tokens,
token_management, permissions and current_user (the ones agentwharf serves and the ones it
refuses) and prints one JSON object: what each call did (``outcomes``: "ok", or the refusal's
status and message), what the calls returned (``seen``), and the methods each service has
(``methods``, for the README's table). Uses DATABRICKS_HOST and DATABRICKS_TOKEN (an admin's).

argv[1]: JSON {"model": a registered model with versions 1 and 2, "suffix": unique text}
"""

import concurrent.futures
import json
import sys
import time
from datetime import timedelta

from databricks.sdk import WorkspaceClient
from databricks.sdk.common.types.fieldmask import FieldMask
from databricks.sdk.errors import platform as errors
from databricks.sdk.service import iam, serving, settings

ARGS = json.loads(sys.argv[1])
MODEL, SUFFIX = ARGS["model"], ARGS["suffix"]
SERVICES = ("serving_endpoints", "users", "groups", "service_principals", "tokens", "token_management", "permissions",
            "current_user")
PATCH = [iam.PatchSchema.URN_IETF_PARAMS_SCIM_API_MESSAGES_2_0_PATCH_OP]

w = WorkspaceClient()
outcomes: dict[str, object] = {}
seen: dict[str, object] = {}


def works(label: str, fn, *args, **kwargs):
    """A call agentwharf serves: it must succeed (the script stops with its error otherwise)."""
    value = fn(*args, **kwargs)
    outcomes.setdefault(label, "ok")
    return value


def refused(label: str, fn, *args, **kwargs) -> None:
    """A call agentwharf refuses: it must answer 501 naming the feature, at once."""
    started = time.monotonic()
    try:
        fn(*args, **kwargs)
    except errors.NotImplemented as error:
        outcomes[label] = {"status": 501, "message": str(error), "seconds": round(time.monotonic() - started, 2)}
    except Exception as error:  # recorded, so the test names the call that misbehaved
        outcomes[label] = {"unexpected": f"{type(error).__name__}: {error}"}
    else:
        outcomes[label] = {"unexpected": "it succeeded"}


def status_of(fn, *args, **kwargs) -> str:
    try:
        fn(*args, **kwargs)
    except Exception as error:
        return type(error).__name__
    return "ok"


def client_for(token: str) -> WorkspaceClient:
    return WorkspaceClient(host=w.config.host, token=token)


# ---- current user, users: paging, filters, attributes --------------------------------------------

me = works("current_user.me", w.current_user.me)
seen["me"] = {"user_name": me.user_name, "groups": sorted(g.display for g in me.groups or [])}

started = time.monotonic()
names = [f"page{i:03d}-{SUFFIX}@example.com" for i in range(150)]
with concurrent.futures.ThreadPoolExecutor(4) as pool:
    created = list(pool.map(lambda n: works("users.create", w.users.create, user_name=n, display_name=n.split("@")[0]), names))
seen["create_150_seconds"] = round(time.monotonic() - started, 2)
started = time.monotonic()
listed = works("users.list", lambda: list(w.users.list(count=100)))
seen["list_seconds"] = round(time.monotonic() - started, 2)
seen["listed_users"] = len(listed)
seen["listed_unique"] = len({u.id for u in listed})
seen["listed_has_all_150"] = set(names) <= {u.user_name for u in listed}
raw = w.api_client.do("GET", "/api/2.0/preview/scim/v2/Users", query={"startIndex": 101, "count": 100})
seen["raw_page"] = {k: raw[k] for k in ("totalResults", "startIndex", "itemsPerPage")}
past = w.api_client.do("GET", "/api/2.0/preview/scim/v2/Users", query={"startIndex": 500, "count": 100})
seen["past_the_end"] = {"itemsPerPage": past["itemsPerPage"], "resources": len(past.get("Resources", []))}
seen["filter_eq"] = [u.user_name for u in w.users.list(filter=f'userName eq "page007-{SUFFIX}@example.com"')]
seen["filter_display_eq"] = [u.user_name for u in w.users.list(filter=f'displayName eq "page008-{SUFFIX}"')]
seen["filter_co"] = len(list(w.users.list(filter=f'userName co "{SUFFIX}"')))
seen["filter_sw"] = [u.user_name for u in w.users.list(filter=f'userName sw "page01" and userName co "{SUFFIX}"',
                                                         sort_by="userName", sort_order=iam.ListSortOrder.DESCENDING)][:3]
projected = list(w.users.list(filter=f'userName eq "page009-{SUFFIX}@example.com"', attributes="id,userName"))
seen["attributes"] = [(u.user_name, u.display_name, u.active) for u in projected]
excluded = list(w.users.list(filter=f'userName eq "page009-{SUFFIX}@example.com"', excluded_attributes="displayName"))
seen["excluded"] = [(u.user_name, u.display_name) for u in excluded]
refused_filter = status_of(lambda: list(w.users.list(filter="userName like 'x'")))
seen["bad_filter"] = refused_filter

alice = created[0]
got = works("users.get", w.users.get, alice.id)
seen["get_by_id"] = got.user_name
works("users.update", w.users.update, alice.id, user_name=alice.user_name, display_name="Alice Updated", active=True,
      entitlements=[iam.ComplexValue(value="workspace-access")], name=iam.Name(given_name="Alice", family_name="A"))
works("users.patch", w.users.patch, alice.id, schemas=PATCH, operations=[
    iam.Patch(op=iam.PatchOp.ADD, path="entitlements", value=[{"value": "allow-cluster-create"}]),
    iam.Patch(op=iam.PatchOp.ADD, path="roles", value=[{"value": "arn:aws:iam::1:instance-profile/x"}])])
after = w.users.get(alice.id)
seen["after_update"] = {"display_name": after.display_name, "given_name": after.name.given_name if after.name else None,
                        "entitlements": sorted(e.value for e in after.entitlements or []),
                        "roles": [r.value for r in after.roles or []]}
works("users.delete", w.users.delete, created[-1].id)
seen["deleted_user_get"] = status_of(w.users.get, created[-1].id)
for method in ("get_permission_levels", "get_permissions"):
    refused(f"users.{method}", getattr(w.users, method))
refused("users.set_permissions", w.users.set_permissions, access_control_list=[])
refused("users.update_permissions", w.users.update_permissions, access_control_list=[])

# Deactivating a user stops their token at once; reactivating brings it back.
alice_token = w.token_management.create_obo_token(application_id=alice.user_name, lifetime_seconds=3600).token_value
as_alice = client_for(alice_token)
seen["alice_me_before"] = as_alice.current_user.me().user_name
w.users.patch(alice.id, schemas=PATCH, operations=[iam.Patch(op=iam.PatchOp.REPLACE, path="active", value=[{"value": "false"}])])
seen["alice_deactivated"] = status_of(as_alice.current_user.me)
w.users.patch(alice.id, schemas=PATCH, operations=[iam.Patch(op=iam.PatchOp.REPLACE, path="active", value=True)])
seen["alice_reactivated"] = status_of(as_alice.current_user.me)
seen["alice_may_not_list_others"] = len(list(as_alice.users.list()))
seen["alice_may_not_create"] = status_of(as_alice.users.create, user_name=f"mallory-{SUFFIX}@example.com")

# ---- service principals ------------------------------------------------------------------------------

sp = works("service_principals.create", w.service_principals.create, display_name=f"ci bot {SUFFIX}",
           entitlements=[iam.ComplexValue(value="allow-cluster-create")])
seen["sp"] = {"application_id_is_uuid": len(sp.application_id or "") == 36, "display_name": sp.display_name}
works("service_principals.get", w.service_principals.get, sp.id)
seen["sp_filter"] = [s.display_name for s in works("service_principals.list", lambda: list(
    w.service_principals.list(filter=f'displayName eq "ci bot {SUFFIX}"')))]
works("service_principals.patch", w.service_principals.patch, sp.id, schemas=PATCH,
      operations=[iam.Patch(op=iam.PatchOp.REPLACE, path="active", value="false")])  # the SDK drops value=False
seen["sp_active_after_patch"] = w.service_principals.get(sp.id).active
works("service_principals.update", w.service_principals.update, sp.id, application_id=sp.application_id,
      display_name=f"ci bot {SUFFIX} renamed", active=True)
seen["sp_after_update"] = (w.service_principals.get(sp.id).display_name, w.service_principals.get(sp.id).active)
spare_sp = w.service_principals.create(display_name=f"spare {SUFFIX}")
works("service_principals.delete", w.service_principals.delete, spare_sp.id)
seen["deleted_sp_get"] = status_of(w.service_principals.get, spare_sp.id)

# ---- groups ----------------------------------------------------------------------------------------

bob, carol = created[1], created[2]
team = works("groups.create", w.groups.create, display_name=f"data-team-{SUFFIX}", members=[iam.ComplexValue(value=alice.id)])
inner = w.groups.create(display_name=f"inner-{SUFFIX}", members=[iam.ComplexValue(value=bob.id)])
works("groups.patch", w.groups.patch, team.id, schemas=PATCH, operations=[
    iam.Patch(op=iam.PatchOp.ADD, value={"members": [{"value": sp.id}, {"value": inner.id}]})])
seen["team_members"] = sorted(m.display for m in works("groups.get", w.groups.get, team.id).members or [])
w.groups.patch(team.id, schemas=PATCH, operations=[iam.Patch(op=iam.PatchOp.REMOVE, path=f'members[value eq "{sp.id}"]')])
seen["team_members_after_remove"] = sorted(m.display for m in w.groups.get(team.id).members or [])
seen["cycle"] = status_of(w.groups.patch, inner.id, schemas=PATCH,
                          operations=[iam.Patch(op=iam.PatchOp.ADD, path="members", value=[{"value": team.id}])])
seen["groups_filter"] = [g.display_name for g in works("groups.list", lambda: list(
    w.groups.list(filter=f'displayName sw "data-team-{SUFFIX}"')))]
seen["builtin_groups"] = sorted(g.display_name for g in w.groups.list(filter='displayName eq "admins" or displayName eq "users"'))
seen["alice_groups"] = sorted(g.display for g in w.users.get(alice.id).groups or [])
spare = w.groups.create(display_name=f"spare-{SUFFIX}")
works("groups.update", w.groups.update, spare.id, display_name=f"renamed-{SUFFIX}", members=[iam.ComplexValue(value=carol.id)])
renamed = w.groups.get(spare.id)
seen["renamed_group"] = (renamed.display_name, [m.display for m in renamed.members or []])
works("groups.delete", w.groups.delete, spare.id)
seen["deleted_group_get"] = status_of(w.groups.get, spare.id)
admins = next(iter(w.groups.list(filter='displayName eq "admins"')))
seen["delete_admins"] = status_of(w.groups.delete, admins.id)

# ---- serving endpoints -----------------------------------------------------------------------------

name, other = f"sdk-admin-{SUFFIX}", f"sdk-admin-b-{SUFFIX}"
entity_v1 = serving.ServedEntityInput(entity_name=MODEL, entity_version="1", workload_size="Small", scale_to_zero_enabled=False)
endpoint = works("serving_endpoints.create_and_wait", w.serving_endpoints.create_and_wait, name,
                 config=serving.EndpointCoreConfigInput(name=name, served_entities=[entity_v1]),
                 tags=[serving.EndpointTag(key="team", value="sdk")], timeout=timedelta(minutes=5))
seen["created"] = {"ready": endpoint.state.ready.value, "config_update": endpoint.state.config_update.value}
e1 = endpoint.config.served_entities[0].name
works("serving_endpoints.create", w.serving_endpoints.create, other,
      config=serving.EndpointCoreConfigInput(name=other, served_entities=[entity_v1]))
waited = works("serving_endpoints.wait_get_serving_endpoint_not_updating", w.serving_endpoints.wait_get_serving_endpoint_not_updating,
               other, timeout=timedelta(minutes=5))
seen["other_ready"] = waited.state.ready.value
seen["listed_endpoints"] = sorted(e.name for e in works("serving_endpoints.list", lambda: list(w.serving_endpoints.list()))
                                  if e.name in (name, other))
works("serving_endpoints.get", w.serving_endpoints.get, name)

# Queries, in every shape an agent endpoint takes.
answer = works("serving_endpoints.query", w.serving_endpoints.query, name, input=[{"role": "user", "content": "list input"}],
               client_request_id=f"sdk-query-{SUFFIX}")
seen["query_served_model_name"] = answer.served_model_name
w.serving_endpoints.query(name, input="string input")
# A ResponsesAgent takes Responses input; chat messages are refused with the route that takes
# them (ChatAgent and ChatModel endpoints take messages: test_interfaces).
seen["messages_to_responses_agent"] = status_of(w.serving_endpoints.query, name, messages=[
    serving.ChatMessage(role=serving.ChatMessageRole.USER, content="chat input")])
w.serving_endpoints.query(name, input=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "with system"}],
                          usage_context={"team": "sdk"})
seen["bad_query"] = status_of(w.serving_endpoints.query, name, inputs={"x": 1})
seen["openai_responses"] = works("serving_endpoints.get_open_ai_client", w.serving_endpoints.get_open_ai_client
                                 ).responses.create(model=name, input="via openai").output_text

works("serving_endpoints.patch", w.serving_endpoints.patch, name, add_tags=[serving.EndpointTag(key="stage", value="test")],
      delete_tags=["team"])
seen["tags"] = sorted((t.key, t.value) for t in w.serving_endpoints.get(name).tags or [])

# Permissions, by id as the SDK sends them (by name too), with groups.
levels = works("serving_endpoints.get_permission_levels", w.serving_endpoints.get_permission_levels, endpoint.id)
seen["levels"] = [level.permission_level.value for level in levels.permission_levels if level.permission_level]
acl = serving.ServingEndpointAccessControlRequest
works("serving_endpoints.set_permissions", w.serving_endpoints.set_permissions, endpoint.id, access_control_list=[
    acl(group_name=team.display_name, permission_level=serving.ServingEndpointPermissionLevel.CAN_QUERY),
    acl(user_name=carol.user_name, permission_level=serving.ServingEndpointPermissionLevel.CAN_VIEW)])
works("serving_endpoints.update_permissions", w.serving_endpoints.update_permissions, endpoint.id, access_control_list=[
    acl(service_principal_name=sp.application_id, permission_level=serving.ServingEndpointPermissionLevel.CAN_MANAGE)])
perms = works("serving_endpoints.get_permissions", w.serving_endpoints.get_permissions, endpoint.id)


def acl_entries(permissions) -> list:
    return sorted([e.user_name or e.group_name or e.service_principal_name,
                   "group" if e.group_name else "sp" if e.service_principal_name else "user",
                   [(p.permission_level.value, bool(p.inherited), p.inherited_from_object or []) for p in e.all_permissions]]
                  for e in permissions.access_control_list)


seen["acl"] = acl_entries(perms)
seen["permissions_get"] = acl_entries(works("permissions.get", w.permissions.get, "serving-endpoints", endpoint.id))
seen["permissions_by_name"] = acl_entries(w.permissions.get("serving-endpoints", name))
works("permissions.get_permission_levels", w.permissions.get_permission_levels, "serving-endpoints", endpoint.id)
works("permissions.update", w.permissions.update, "serving-endpoints", endpoint.id, access_control_list=[
    iam.AccessControlRequest(user_name=carol.user_name, permission_level=iam.PermissionLevel.CAN_QUERY)])
works("permissions.set", w.permissions.set, "serving-endpoints", endpoint.id, access_control_list=[
    iam.AccessControlRequest(group_name=team.display_name, permission_level=iam.PermissionLevel.CAN_QUERY)])
seen["acl_after_set"] = acl_entries(w.permissions.get("serving-endpoints", endpoint.id))
seen["other_object_type"] = status_of(w.permissions.get, "clusters", "0123-456789-abc")

# A member of the group (through a nested group too) may query; someone outside may not.
bob_token = w.token_management.create_obo_token(application_id=bob.user_name, lifetime_seconds=3600).token_value
carol_token = w.token_management.create_obo_token(application_id=carol.user_name, lifetime_seconds=3600).token_value
question = [{"role": "user", "content": "as a member"}]
seen["alice_queries"] = status_of(as_alice.serving_endpoints.query, name, input=question)
seen["bob_queries_through_nested_group"] = status_of(client_for(bob_token).serving_endpoints.query, name, input=question)
seen["carol_queries"] = status_of(client_for(carol_token).serving_endpoints.query, name, input=question)
seen["alice_reads_logs"] = status_of(as_alice.serving_endpoints.logs, name, e1)

# A second version, then traffic, through the SDK's waiters.
entity_v2 = serving.ServedEntityInput(entity_name=MODEL, entity_version="2", workload_size="Small", scale_to_zero_enabled=False)
current = w.serving_endpoints.get(name)
e2 = None
works("serving_endpoints.update_config", w.serving_endpoints.update_config, name, served_entities=[entity_v1, entity_v2],
      traffic_config=serving.TrafficConfig(routes=[serving.Route(served_model_name=e1, traffic_percentage=100),
                                                   serving.Route(served_model_name=f"{e1[:-2]}_2", traffic_percentage=0)]))
updated = w.serving_endpoints.wait_get_serving_endpoint_not_updating(name, timeout=timedelta(minutes=5))
e2 = next(e.name for e in updated.config.served_entities if e.entity_version == "2")
final = works("serving_endpoints.update_config_and_wait", w.serving_endpoints.update_config_and_wait, name,
              served_entities=[entity_v1, entity_v2], timeout=timedelta(minutes=5),
              traffic_config=serving.TrafficConfig(routes=[serving.Route(served_entity_name=e1, traffic_percentage=0),
                                                           serving.Route(served_entity_name=e2, traffic_percentage=100)]))
seen["routes"] = sorted((r.served_model_name, r.traffic_percentage) for r in final.config.traffic_config.routes)
seen["served_after_update"] = w.serving_endpoints.query(name, input=[{"role": "user", "content": "v2?"}]).served_model_name

# Logs, build logs and metrics.
seen["logs"] = works("serving_endpoints.logs", w.serving_endpoints.logs, name, e1).logs
seen["build_logs"] = works("serving_endpoints.build_logs", w.serving_endpoints.build_logs, name, e2).logs
seen["unknown_entity_logs"] = status_of(w.serving_endpoints.logs, name, "nope")
metrics = works("serving_endpoints.export_metrics", w.serving_endpoints.export_metrics, name)
seen["metrics"] = metrics.contents.read().decode()

# AI gateway settings (rate limits, usage tracking) on an agent endpoint, and an LLM endpoint
# (an external model: created, read and deleted; nothing here calls its provider).
gateway = works("serving_endpoints.put_ai_gateway", w.serving_endpoints.put_ai_gateway, name,
                usage_tracking_config=serving.AiGatewayUsageTrackingConfig(enabled=True),
                rate_limits=[serving.AiGatewayRateLimit(calls=1000, renewal_period=serving.AiGatewayRateLimitRenewalPeriod.MINUTE,
                                                        key=serving.AiGatewayRateLimitKey.USER)])
seen["ai_gateway"] = gateway.as_dict()
llm_name = f"llm-{SUFFIX}"
works("serving_endpoints.create", w.serving_endpoints.create, llm_name, config=serving.EndpointCoreConfigInput(
    name=llm_name, served_entities=[serving.ServedEntityInput(name="gpt", external_model=serving.ExternalModel(
        name="gpt-4o", provider=serving.ExternalModelProvider.OPENAI, task="llm/v1/chat",
        openai_config=serving.OpenAiConfig(openai_api_base="http://127.0.0.1:9/v1", openai_api_key_plaintext="sk-sdk-test")))]))
llm = w.serving_endpoints.get(llm_name)
seen["external_model"] = llm.config.served_entities[0].external_model.as_dict()
works("serving_endpoints.delete", w.serving_endpoints.delete, llm_name)

# What agentwharf does not serve: 501, naming it, at once.
refused("serving_endpoints.put", w.serving_endpoints.put, name, rate_limits=[
    serving.RateLimit(calls=10, renewal_period=serving.RateLimitRenewalPeriod.MINUTE)])
refused("serving_endpoints.update_notifications", w.serving_endpoints.update_notifications, name,
        email_notifications=serving.EmailNotifications(on_update_failure=["ops@example.com"]))
refused("serving_endpoints.patch_telemetry_config", w.serving_endpoints.patch_telemetry_config, name,
        telemetry_config=serving.TelemetryConfig())
refused("serving_endpoints.get_open_api", w.serving_endpoints.get_open_api, name)
pt = serving.PtEndpointCoreConfig(served_entities=[serving.PtServedModel(entity_name="system.ai.llama", provisioned_model_units=1)])
refused("serving_endpoints.create_provisioned_throughput_endpoint", w.serving_endpoints.create_provisioned_throughput_endpoint,
        f"pt-{SUFFIX}", pt)
refused("serving_endpoints.create_provisioned_throughput_endpoint_and_wait",
        w.serving_endpoints.create_provisioned_throughput_endpoint_and_wait, f"pt-{SUFFIX}", pt)
refused("serving_endpoints.update_provisioned_throughput_endpoint_config",
        w.serving_endpoints.update_provisioned_throughput_endpoint_config, name, pt)
refused("serving_endpoints.update_provisioned_throughput_endpoint_config_and_wait",
        w.serving_endpoints.update_provisioned_throughput_endpoint_config_and_wait, name, pt)
refused("serving_endpoints.http_request", w.serving_endpoints.http_request, conn="github",
        method=serving.ExternalFunctionRequestHttpMethod.GET, path="/user")
try:
    w.serving_endpoints.get_langchain_chat_open_ai_client(name)
    outcomes["serving_endpoints.get_langchain_chat_open_ai_client"] = "client side"
except ImportError as error:  # needs langchain-openai, which this venv does not install
    outcomes["serving_endpoints.get_langchain_chat_open_ai_client"] = {"client side": str(error)}

works("serving_endpoints.delete", w.serving_endpoints.delete, other)
seen["deleted_endpoint_get"] = status_of(w.serving_endpoints.get, other)

# ---- tokens ---------------------------------------------------------------------------------------

mine = works("tokens.create", w.tokens.create, comment=f"sdk {SUFFIX}", lifetime_seconds=3600)
seen["token_lifetime_ms"] = mine.token_info.expiry_time - mine.token_info.creation_time
seen["token_listed"] = mine.token_info.token_id in {t.token_id for t in works("tokens.list", w.tokens.list)}
works("tokens.update", w.tokens.update, mine.token_info.token_id, settings.PublicTokenInfo(comment="renamed"), FieldMask(["comment"]))
seen["token_comment"] = next(t.comment for t in w.tokens.list() if t.token_id == mine.token_info.token_id)
seen["token_works"] = status_of(client_for(mine.token_value).current_user.me)
works("tokens.delete", w.tokens.delete, mine.token_info.token_id)
seen["token_after_delete"] = status_of(client_for(mine.token_value).current_user.me)
seen["scoped_token"] = status_of(w.tokens.create, comment="scoped", scopes=["sql"])

obo = works("token_management.create_obo_token", w.token_management.create_obo_token, application_id=sp.application_id,
            lifetime_seconds=600, comment="ci")
obo_id = obo.token_info.token_id
seen["obo_by_name"] = [t.token_id for t in works("token_management.list", w.token_management.list,
                                                   created_by_username=sp.application_id)]
seen["obo_by_id"] = [t.token_id for t in w.token_management.list(created_by_id=int(sp.id))]
info = works("token_management.get", w.token_management.get, obo_id).token_info
seen["obo_info"] = {"owner_id": str(info.owner_id), "created_by_username": info.created_by_username, "comment": info.comment}
works("token_management.update_token_management", w.token_management.update_token_management, obo_id,
      settings.TokenInfo(comment="ci renamed"), FieldMask(["comment"]))
seen["obo_comment"] = w.token_management.get(obo_id).token_info.comment
seen["obo_works"] = status_of(client_for(obo.token_value).current_user.me)
token_acl = works("token_management.get_permissions", w.token_management.get_permissions)
seen["token_acl"] = [(e.group_name, [p.permission_level.value for p in e.all_permissions]) for e in token_acl.access_control_list]
works("token_management.get_permission_levels", w.token_management.get_permission_levels)
refused("token_management.set_permissions", w.token_management.set_permissions, access_control_list=[])
refused("token_management.update_permissions", w.token_management.update_permissions, access_control_list=[])
works("token_management.delete", w.token_management.delete, obo_id)
seen["obo_after_delete"] = status_of(client_for(obo.token_value).current_user.me)

works("serving_endpoints.delete", w.serving_endpoints.delete, name)
works("groups.delete", w.groups.delete, inner.id)

print(json.dumps({"outcomes": outcomes, "seen": seen, "entities": [e1, e2],
                  "methods": {s: sorted(m for m in dir(getattr(w, s)) if not m.startswith("_")) for s in SERVICES}}))

"""agentwharf.auth.gatekeeper (and mlflow_plugin): who is calling, and what each kind of
credential may reach. Written as an attacker probes the front door."""


import orjson
import base64

import pytest

from agentwharf.auth import mlflow_plugin
from agentwharf.auth.caller import Caller
from agentwharf.auth.gatekeeper import COOKIE, LOADER, Gatekeeper, bearer_token
from agentwharf.auth.identities import IdentityService
from agentwharf.auth.levels import PermissionLevel
from agentwharf.auth.scopes import SERVING_ENDPOINTS, SUPPORTED_SCOPES
from agentwharf.auth.tokens import LOAD_PREFIX, OBO_PREFIX, SYSTEM_PREFIX, TokenSigner
from agentwharf.errors import PermissionDenied, Unauthenticated

L = PermissionLevel
KEY = b"s" * 32


def scope(*headers: tuple[str, str]) -> dict:
    return {"type": "http", "method": "GET", "headers": [(k.encode(), v.encode("latin-1")) for k, v in headers]}


def auth(token: str) -> dict:
    return scope(("authorization", f"Bearer {token}"))


@pytest.fixture
def ids(db):
    service = IdentityService(db, None)
    service.create_principal("root", "user", is_admin=True)
    service.create_principal("alice", "user")
    service.create_principal("bot", "service_principal")
    return service


class Live:
    """The endpoint/entity pairs being served, and who asked."""

    def __init__(self):
        self.pairs = {("chat", "chat-1")}
        self.asked = []

    def __call__(self, endpoint, entity, token):
        assert token.startswith("aws_")
        self.asked.append((endpoint, entity))
        return (endpoint, entity) in self.pairs


@pytest.fixture
def live():
    return Live()


@pytest.fixture
def signer():
    return TokenSigner(KEY)


@pytest.fixture
def gate(ids, signer, live):
    return Gatekeeper(ids, signer, live)


def system_token(signer, endpoint="chat", entity="chat-1", res=("llm",)):
    return signer.mint(SYSTEM_PREFIX, {"ep": endpoint, "ent": entity, "res": sorted(res)}, None)


def obo_token(signer, user="alice", scopes=(SERVING_ENDPOINTS,), lifetime=300):
    return signer.mint(OBO_PREFIX, {"sub": user, "sc": list(scopes)}, lifetime)


def pat(ids, name="alice"):
    return ids.create_token(name, None, None)[0]


# ---- reading the bearer token -----------------------------------------------------------------


@pytest.mark.parametrize(("header", "token"), [
    ("Bearer abc", "abc"),
    ("bearer abc", "abc"),
    ("BEARER abc", "abc"),
    ("Bearer   abc  ", "abc"),
    ("Bearer awp_x-y_z", "awp_x-y_z"),
    ("Bearer aws_eyJ.sig", "aws_eyJ.sig"),
])
def test_bearer_header(header, token):
    assert bearer_token(scope(("authorization", header))) == token


@pytest.mark.parametrize("header", [
    "", "Bearer", "Bearer ", "Bearer    ", "Token abc", "abc", "Bearerabc", "Basic", "Basic !!not-base64!!",
    "Basic " + base64.b64encode(b"alice:").decode(), "Basic " + base64.b64encode(b"alice").decode(),
    "Digest username=admin", "awp_abc",
])
def test_anything_but_a_bearer_token_or_a_basic_password_is_no_token(header):
    assert bearer_token(scope(("authorization", header))) is None


@pytest.mark.parametrize("user", ["token", "alice", ""])
def test_a_basic_password_is_the_token_whatever_the_user_name(user):
    # MLflow's clients (and its gateway:/ judges) send MLFLOW_TRACKING_USERNAME/PASSWORD as Basic.
    header = "Basic " + base64.b64encode(f"{user}:awp_abc:def".encode()).decode()
    assert bearer_token(scope(("authorization", header))) == "awp_abc:def"


def test_mlflows_default_admin_password_is_still_no_way_in(gate):
    with pytest.raises(Unauthenticated):
        gate.authenticate(scope(("authorization", "Basic " + base64.b64encode(b"admin:password").decode())))


def test_no_headers_no_token():
    assert bearer_token(scope()) is None
    assert bearer_token(scope(("accept", "text/html"), ("x-token", "awp_abc"))) is None


def test_cookie_for_the_browser():
    assert bearer_token(scope(("cookie", f"{COOKIE}=awp_abc"))) == "awp_abc"
    assert bearer_token(scope(("cookie", f"theme=dark; {COOKIE}=awp_abc; lang=en"))) == "awp_abc"
    assert bearer_token(scope(("cookie", f"theme=dark;{COOKIE}=aws_a.b"))) == "aws_a.b"


@pytest.mark.parametrize("cookie", [
    f"{COOKIE}=", f"{COOKIE}", f"x{COOKIE}=awp_abc", f"{COOKIE}x=awp_abc", "agentwharf=awp_abc", "token=awp_abc", "",
    f"{COOKIE.upper()}=awp_abc",
])
def test_cookies_that_are_not_the_token(cookie):
    assert bearer_token(scope(("cookie", cookie))) is None


def test_first_non_empty_cookie_of_that_name_wins():
    assert bearer_token(scope(("cookie", f"{COOKIE}=; {COOKIE}=second"))) == "second"
    assert bearer_token(scope(("cookie", f"{COOKIE}=first; {COOKIE}=second"))) == "first"


def test_an_authorization_header_wins_over_the_cookie_in_either_order():
    assert bearer_token(scope(("cookie", f"{COOKIE}=from-cookie"), ("authorization", "Bearer from-header"))) == "from-header"
    assert bearer_token(scope(("authorization", "Bearer from-header"), ("cookie", f"{COOKIE}=from-cookie"))) == "from-header"


def test_a_non_bearer_authorization_does_not_fall_back_to_the_cookie():
    # Explicit credentials are what count (Basic a:b is the token "b"), never replaced by a cookie.
    assert bearer_token(scope(("authorization", "Basic YTpi"), ("cookie", f"{COOKIE}=awp_abc"))) == "b"
    assert bearer_token(scope(("cookie", f"{COOKIE}=awp_abc"), ("authorization", "Basic YTpi"))) == "b"
    assert bearer_token(scope(("authorization", "Digest x"), ("cookie", f"{COOKIE}=awp_abc"))) is None


def test_the_first_authorization_header_counts():
    assert bearer_token(scope(("authorization", "Bearer one"), ("authorization", "Bearer two"))) == "one"
    assert bearer_token(scope(("authorization", "Basic x"), ("authorization", "Bearer two"))) is None


# ---- authenticate: personal access tokens -----------------------------------------------------


def test_no_token_is_401(gate):
    with pytest.raises(Unauthenticated, match="Authentication required") as caught:
        gate.authenticate(scope())
    assert caught.value.http_status == 401
    with pytest.raises(Unauthenticated):
        gate.authenticate(scope(("authorization", "Basic YWRtaW46YWRtaW4=")))


def test_personal_token(gate, ids):
    value, info = ids.create_token("alice", 60, None)
    caller = gate.authenticate(auth(value))
    assert caller == Caller(name="alice", kind="user", is_admin=False, via="pat", token_id=info.token_id,
                            expires_at=info.expiry_time)
    assert gate.authenticate(scope(("cookie", f"{COOKIE}={value}"))) == caller


@pytest.mark.parametrize("token", ["awp_", "awp_unknown", "awp_" + "A" * 43])
def test_unknown_personal_token_is_401(gate, ids, token):
    pat(ids)
    with pytest.raises(Unauthenticated, match="invalid, expired or revoked"):
        gate.authenticate(auth(token))


def test_revoked_personal_token_stops_at_once(gate, ids):
    value, info = ids.create_token("alice", None, None)
    assert gate.authenticate(auth(value)).name == "alice"
    ids.revoke_token(info.token_id)
    with pytest.raises(Unauthenticated):
        gate.authenticate(auth(value))


def test_deleted_principals_token_is_401(gate, ids):
    value = pat(ids)
    ids.delete_principal("alice")
    with pytest.raises(Unauthenticated):
        gate.authenticate(auth(value))


@pytest.mark.parametrize("token", ["dapi0123456789abcdef", "eyJhbGciOiJIUzI1NiJ9.e30.sig", "admin", "x" * 500,
                                   "aws_", "awo_nodot", "awl_a.b", "\xe9\xe9\xe9", "aws_a.\xe9"])
def test_foreign_or_garbage_tokens_are_401_never_a_crash(gate, token):
    with pytest.raises(Unauthenticated):
        gate.authenticate(auth(token))


def test_401_messages_never_echo_the_token(gate, signer, ids):
    forged = system_token(signer)[:-3] + "AAA"
    bad = [forged, "awp_secretvalue", obo_token(signer, lifetime=-1), system_token(signer, entity="gone")]
    for token in bad:
        with pytest.raises(Unauthenticated) as caught:
            gate.authenticate(auth(token))
        assert token not in caught.value.message
        assert token[4:] not in caught.value.message


# ---- authenticate: signed tokens --------------------------------------------------------------


def test_system_credential_of_a_live_entity(gate, signer, live):
    caller = gate.authenticate(auth(system_token(signer, res=("llm", "reranker"))))
    assert caller.via == "system" and caller.name == "system:chat/chat-1"
    assert caller.kind == "service_principal" and not caller.is_admin and not caller.is_personal
    assert caller.endpoints == frozenset({"llm", "reranker"})
    assert caller.scopes == frozenset() and caller.expires_at is None
    assert live.asked == [("chat", "chat-1")]


def test_system_credential_dies_with_its_entity(gate, signer, live):
    token = system_token(signer)
    gate.authenticate(auth(token))
    live.pairs.clear()
    with pytest.raises(Unauthenticated, match="no longer served"):
        gate.authenticate(auth(token))
    live.pairs.add(("chat", "chat-2"))  # another entity of the same endpoint does not revive it
    with pytest.raises(Unauthenticated):
        gate.authenticate(auth(token))


def test_system_credential_of_another_platform_is_401(gate):
    with pytest.raises(Unauthenticated, match="signature"):
        gate.authenticate(auth(system_token(TokenSigner(b"o" * 32))))


def test_system_credential_cannot_widen_its_endpoints(gate, signer):
    token = system_token(signer, res=("llm",))
    forged = signer.mint(SYSTEM_PREFIX, {"ep": "chat", "ent": "chat-1", "res": ["llm", "secret"]}, None)
    assert forged != token
    prefix, payload = token[:4], forged[4:].rpartition(".")[0]
    with pytest.raises(Unauthenticated):
        gate.authenticate(auth(f"{prefix}{payload}.{token.rpartition('.')[2]}"))


def test_system_credential_relabelled_as_obo_or_pat_fails(gate, signer, ids, live):
    token = signer.mint(SYSTEM_PREFIX, {"ep": "chat", "ent": "chat-1", "res": ["llm"], "sub": "root", "sc": [SERVING_ENDPOINTS]}, None)
    for relabelled in (OBO_PREFIX + token[4:], LOAD_PREFIX + token[4:], "awp_" + token[4:]):
        with pytest.raises(Unauthenticated):
            gate.authenticate(auth(relabelled))


def test_system_claims_naming_a_user_do_not_make_it_that_user(gate, signer):
    token = signer.mint(SYSTEM_PREFIX, {"ep": "chat", "ent": "chat-1", "res": ["llm"], "sub": "root"}, None)
    caller = gate.authenticate(auth(token))
    assert caller.name == "system:chat/chat-1" and not caller.is_admin
    assert gate.endpoint_level(caller, "chat") is L.NO_PERMISSIONS


def test_on_behalf_of_token(gate, signer):
    caller = gate.authenticate(auth(obo_token(signer, scopes=(SERVING_ENDPOINTS, "dashboards.genie"))))
    assert (caller.name, caller.kind, caller.is_admin, caller.via) == ("alice", "user", False, "obo")
    assert caller.scopes == frozenset({SERVING_ENDPOINTS, "dashboards.genie"})
    assert not caller.is_personal
    assert caller.expires_at is not None and caller.token_id is None


def test_on_behalf_of_token_expires(gate, signer):
    with pytest.raises(Unauthenticated, match="expired"):
        gate.authenticate(auth(obo_token(signer, lifetime=-1)))


def test_on_behalf_of_token_of_a_deleted_or_deactivated_user_is_401(gate, signer, ids):
    from sqlalchemy import update

    from agentwharf.store.models import Principal

    token = obo_token(signer)
    with ids.db.session() as session:
        session.execute(update(Principal).where(Principal.name == "alice").values(active=False))
    ids.reload()
    with pytest.raises(Unauthenticated, match="no longer exists or is deactivated"):
        gate.authenticate(auth(token))
    ids.delete_principal("alice")
    with pytest.raises(Unauthenticated, match="no longer exists"):
        gate.authenticate(auth(token))
    with pytest.raises(Unauthenticated):
        gate.authenticate(auth(obo_token(signer, user="")))
    with pytest.raises(Unauthenticated):
        gate.authenticate(auth(signer.mint(OBO_PREFIX, {"sc": [SERVING_ENDPOINTS]}, 300)))


def test_on_behalf_of_a_user_of_the_same_name_as_a_system_caller(gate, signer):
    with pytest.raises(Unauthenticated):
        gate.authenticate(auth(obo_token(signer, user="system:chat/chat-1")))


def test_load_credential(gate, signer):
    caller = gate.authenticate(auth(signer.mint(LOAD_PREFIX, {"key": "chat/chat-1"}, 120)))
    assert (caller.name, caller.via, caller.is_admin) == (LOADER, "load", False)
    assert caller.expires_at is not None
    with pytest.raises(Unauthenticated, match="expired"):
        gate.authenticate(auth(signer.mint(LOAD_PREFIX, {"key": "chat/chat-1"}, -1)))


def test_entity_live_is_only_asked_about_system_credentials(gate, signer, ids, live):
    gate.authenticate(auth(pat(ids)))
    gate.authenticate(auth(obo_token(signer)))
    gate.authenticate(auth(signer.mint(LOAD_PREFIX, {"key": "x"}, 60)))
    assert live.asked == []


# ---- what each credential may reach -----------------------------------------------------------


def test_personal_levels_come_from_grants(gate, ids):
    ids.set_endpoint_level("chat", "alice", L.CAN_QUERY)
    alice = gate.authenticate(auth(pat(ids)))
    assert gate.endpoint_level(alice, "chat") is L.CAN_QUERY
    assert gate.endpoint_level(alice, "other") is L.NO_PERMISSIONS
    gate.require_endpoint(alice, "chat", L.CAN_VIEW)
    gate.require_endpoint(alice, "chat", L.CAN_QUERY)
    with pytest.raises(PermissionDenied, match="'alice' lacks CAN_REVIEW on serving endpoint 'chat'") as caught:
        gate.require_endpoint(alice, "chat", L.CAN_REVIEW)
    assert caught.value.http_status == 403
    with pytest.raises(PermissionDenied):
        gate.require_endpoint(alice, "other", L.CAN_VIEW)


def test_grant_changes_apply_to_a_caller_already_signed_in(gate, ids):
    alice = gate.authenticate(auth(pat(ids)))
    ids.set_endpoint_level("chat", "alice", L.CAN_MANAGE)
    gate.require_endpoint(alice, "chat", L.CAN_MANAGE)
    ids.set_endpoint_level("chat", "alice", L.NO_PERMISSIONS)
    with pytest.raises(PermissionDenied):
        gate.require_endpoint(alice, "chat", L.CAN_VIEW)


def test_admins_manage_every_endpoint(gate, ids):
    root = gate.authenticate(auth(pat(ids, "root")))
    for endpoint in ("chat", "anything", "never-created"):
        assert gate.endpoint_level(root, endpoint) is L.CAN_MANAGE
        gate.require_endpoint(root, endpoint, L.CAN_MANAGE)


def test_service_principals_follow_grants_too(gate, ids):
    ids.set_endpoint_level("chat", "bot", L.CAN_REVIEW)
    bot = gate.authenticate(auth(pat(ids, "bot")))
    assert gate.endpoint_level(bot, "chat") is L.CAN_REVIEW


def test_system_credential_queries_exactly_its_declared_endpoints(gate, signer, ids):
    caller = gate.authenticate(auth(system_token(signer, res=("llm", "reranker"))))
    for endpoint in ("llm", "reranker"):
        assert gate.endpoint_level(caller, endpoint) is L.CAN_QUERY
        gate.require_endpoint(caller, endpoint, L.CAN_QUERY)
        gate.require_endpoint(caller, endpoint, L.CAN_VIEW)
        for above in (L.CAN_REVIEW, L.CAN_MANAGE):
            with pytest.raises(PermissionDenied):
                gate.require_endpoint(caller, endpoint, above)
    # Not its own endpoint, nor any other, even one everybody may query.
    ids.set_endpoint_level("public", "alice", L.CAN_QUERY)
    for endpoint in ("chat", "public", "llm2", "LLM", ""):
        assert gate.endpoint_level(caller, endpoint) is L.NO_PERMISSIONS
        with pytest.raises(PermissionDenied):
            gate.require_endpoint(caller, endpoint, L.CAN_VIEW)


def test_system_credential_without_declared_endpoints_reaches_nothing(gate, signer):
    caller = gate.authenticate(auth(signer.mint(SYSTEM_PREFIX, {"ep": "chat", "ent": "chat-1"}, None)))
    assert caller.endpoints == frozenset()
    assert gate.endpoint_level(caller, "chat") is L.NO_PERMISSIONS


def test_load_credential_reaches_no_endpoint(gate, signer, ids):
    caller = gate.authenticate(auth(signer.mint(LOAD_PREFIX, {"key": "x"}, 60)))
    ids.set_endpoint_level("chat", "alice", L.CAN_QUERY)
    assert gate.endpoint_level(caller, "chat") is L.NO_PERMISSIONS
    # Even if someone created a principal with the loader's name and granted it.
    assert gate.endpoint_level(Caller(name=LOADER, kind="service_principal", is_admin=True, via="load"), "chat") is L.NO_PERMISSIONS


@pytest.mark.parametrize(("granted", "expected"), [
    (L.NO_PERMISSIONS, L.NO_PERMISSIONS),
    (L.CAN_VIEW, L.CAN_VIEW),
    (L.CAN_QUERY, L.CAN_QUERY),
    (L.CAN_REVIEW, L.CAN_QUERY),
    (L.CAN_MANAGE, L.CAN_QUERY),
])
def test_on_behalf_of_is_capped_at_query_and_at_what_the_user_has(gate, signer, ids, granted, expected):
    ids.set_endpoint_level("chat", "alice", granted)
    caller = gate.authenticate(auth(obo_token(signer)))
    assert gate.endpoint_level(caller, "chat") is expected


def test_on_behalf_of_an_admin_only_queries(gate, signer):
    caller = gate.authenticate(auth(obo_token(signer, user="root")))
    assert caller.is_admin  # who they are ...
    assert gate.endpoint_level(caller, "chat") is L.CAN_QUERY  # ... but not what a worker may do with it
    for above in (L.CAN_REVIEW, L.CAN_MANAGE):
        with pytest.raises(PermissionDenied):
            gate.require_endpoint(caller, "chat", above)


@pytest.mark.parametrize("scopes", [(), ("dashboards.genie",), ("sql", "vectorsearch.vector-search-indexes"),
                                    ("serving",), ("serving.serving-endpoints-extra",), ("SERVING.SERVING-ENDPOINTS",)])
def test_on_behalf_of_without_the_serving_scope_reaches_nothing(gate, signer, ids, scopes):
    ids.set_endpoint_level("chat", "alice", L.CAN_MANAGE)
    for user in ("alice", "root"):
        caller = gate.authenticate(auth(obo_token(signer, user=user, scopes=scopes)))
        assert gate.endpoint_level(caller, "chat") is L.NO_PERMISSIONS


def test_serving_is_the_only_scope_that_unlocks_anything():
    assert SUPPORTED_SCOPES == frozenset({SERVING_ENDPOINTS}) and SERVING_ENDPOINTS == "serving.serving-endpoints"


# ---- personal-only and admin-only actions -----------------------------------------------------


def test_require_personal(gate, signer, ids):
    gate.require_personal(gate.authenticate(auth(pat(ids))), "create tokens")
    minted = [system_token(signer), obo_token(signer, user="root"), signer.mint(LOAD_PREFIX, {"key": "x"}, 60)]
    for token, via in zip(minted, ("system", "obo", "load"), strict=True):
        caller = gate.authenticate(auth(token))
        with pytest.raises(PermissionDenied, match=f"A {via} credential cannot be used to deploy models") as caught:
            gate.require_personal(caller, "deploy models")
        assert caught.value.http_status == 403


def test_require_admin(gate, signer, ids):
    gate.require_admin(gate.authenticate(auth(pat(ids, "root"))), "create users")
    for token in (pat(ids, "alice"), pat(ids, "bot"), obo_token(signer, user="root"), system_token(signer),
                  signer.mint(LOAD_PREFIX, {"key": "x"}, 60)):
        caller = gate.authenticate(auth(token))
        with pytest.raises(PermissionDenied, match="Only an admin may create users"):
            gate.require_admin(caller, "create users")


def test_caller_is_personal_only_for_pats():
    assert Caller("a", "user", False).is_personal
    for via in ("system", "obo", "load", "PAT", ""):
        assert not Caller("a", "user", True, via=via).is_personal


# ---- MLflow's side: only the platform may speak to MLflow's server ----------------------------


@pytest.fixture
def flask_app(monkeypatch):
    flask = pytest.importorskip("flask")
    monkeypatch.setenv(mlflow_plugin.SECRET_ENV, "per-start-secret")
    monkeypatch.setenv(mlflow_plugin.ADMIN_ENV, "agentwharf-platform")
    return flask.Flask(__name__)


def plugin(app, headers):
    with app.test_request_context("/api/2.0/mlflow/experiments/search", headers=headers):
        return mlflow_plugin.authenticate()


def test_mlflow_plugin_names_the_caller_the_platform_vouches_for(flask_app):
    answer = plugin(flask_app, {mlflow_plugin.SECRET_HEADER: "per-start-secret", mlflow_plugin.PRINCIPAL_HEADER: "alice"})
    assert answer.type == "basic" and answer.username == "alice"


def test_mlflow_plugin_treats_the_bare_secret_as_the_platform(flask_app):
    answer = plugin(flask_app, {mlflow_plugin.SECRET_HEADER: "per-start-secret"})
    assert answer.username == "agentwharf-platform"


@pytest.mark.parametrize("headers", [
    {},
    {mlflow_plugin.PRINCIPAL_HEADER: "admin"},
    {mlflow_plugin.SECRET_HEADER: "", mlflow_plugin.PRINCIPAL_HEADER: "admin"},
    {mlflow_plugin.SECRET_HEADER: "per-start-secre", mlflow_plugin.PRINCIPAL_HEADER: "admin"},
    {mlflow_plugin.SECRET_HEADER: "per-start-secrets"},
    {mlflow_plugin.SECRET_HEADER: "PER-START-SECRET"},
    {mlflow_plugin.SECRET_HEADER: "per-start-secret\xe9"},
    {"Authorization": "Basic YWRtaW46cGFzc3dvcmQ="},  # MLflow's default admin/password
])
def test_mlflow_plugin_refuses_anyone_without_the_secret(flask_app, headers):
    answer = plugin(flask_app, headers)
    assert answer.status_code == 401
    assert orjson.loads(answer.get_data())["error_code"] == "UNAUTHENTICATED"


def test_mlflow_plugin_without_a_configured_secret_refuses_everyone(flask_app, monkeypatch):
    monkeypatch.setenv(mlflow_plugin.SECRET_ENV, "")
    assert plugin(flask_app, {mlflow_plugin.SECRET_HEADER: ""}).status_code == 401
    monkeypatch.delenv(mlflow_plugin.SECRET_ENV)
    assert plugin(flask_app, {mlflow_plugin.SECRET_HEADER: ""}).status_code == 401

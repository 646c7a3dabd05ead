"""agentwharf.auth.tokens and home_secrets: personal tokens are random and kept only as hashes;
signed tokens cannot be forged, altered, relabelled or used past their expiry."""

import base64
import hashlib
import hmac
import os
import stat
import time
from types import SimpleNamespace

import orjson
import pytest

from agentwharf.auth import home_secrets, tokens
from agentwharf.auth.tokens import (
    LOAD_PREFIX,
    OBO_PREFIX,
    PAT_PREFIX,
    SYSTEM_PREFIX,
    InvalidSignedToken,
    TokenSigner,
)

KEY = b"k" * 32


@pytest.fixture
def signer():
    return TokenSigner(KEY)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def split(token: str) -> tuple[str, str, str]:
    prefix, rest = token[:4], token[4:]
    payload, _, signature = rest.rpartition(".")
    return prefix, payload, signature


def claims_of(token: str) -> dict:
    _, payload, _ = split(token)
    return orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def signed_with(key: bytes, prefix: str, payload: str) -> str:
    """A token as the platform would sign it, for payloads the platform would never mint."""
    signature = b64(hmac.new(key, f"{prefix}{payload}".encode(), hashlib.sha256).digest())
    return f"{prefix}{payload}.{signature}"


# ---- personal access tokens -------------------------------------------------------------------


def test_personal_tokens_are_prefixed_random_and_url_safe():
    values = {tokens.new_personal_token() for _ in range(200)}
    assert len(values) == 200
    for value in values:
        assert value.startswith(PAT_PREFIX)
        body = value[len(PAT_PREFIX):]
        # 32 random bytes, base64url without padding: 43 characters.
        assert len(body) == 43
        assert set(body) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_personal_token_prefix_is_not_a_signed_prefix():
    # The gatekeeper routes on the prefix: a PAT must never be mistaken for a signed token.
    assert PAT_PREFIX not in tokens.SIGNED_PREFIXES
    assert len({PAT_PREFIX, *tokens.SIGNED_PREFIXES}) == 1 + len(tokens.SIGNED_PREFIXES)
    assert all(len(p) == 4 for p in (PAT_PREFIX, *tokens.SIGNED_PREFIXES))


def test_hash_is_sha256_hex_and_does_not_contain_the_token():
    value = tokens.new_personal_token()
    digest = tokens.hash_token(value)
    assert digest == hashlib.sha256(value.encode()).hexdigest()
    assert len(digest) == 64
    assert value not in digest and value[len(PAT_PREFIX):] not in digest
    assert tokens.hash_token(value) == digest  # stable
    assert tokens.hash_token(value + "x") != digest


def test_hash_handles_any_text_a_header_can_carry():
    # Headers are decoded as latin-1; hashing must not fail on them.
    assert len(tokens.hash_token("awp_\xe9\xff")) == 64


def test_token_ids_and_signing_keys_are_random():
    assert len({tokens.new_token_id() for _ in range(100)}) == 100
    assert all(len(tokens.new_token_id()) == 16 for _ in range(5))
    key = tokens.new_signing_key()
    assert isinstance(key, bytes) and len(key) == 32
    assert key != tokens.new_signing_key()


# ---- signed tokens: round trip ----------------------------------------------------------------


@pytest.mark.parametrize("prefix", [SYSTEM_PREFIX, OBO_PREFIX, LOAD_PREFIX])
def test_mint_and_verify_round_trip(signer, prefix):
    token = signer.mint(prefix, {"sub": "alice", "sc": ["serving.serving-endpoints"]}, 60)
    assert token.startswith(prefix)
    got_prefix, claims = signer.verify(token)
    assert got_prefix == prefix
    assert claims["sub"] == "alice" and claims["sc"] == ["serving.serving-endpoints"]
    assert claims["exp"] == pytest.approx(time.time() + 60, abs=5)
    assert claims["iat"] <= time.time()


def test_mint_does_not_modify_the_callers_claims(signer):
    claims = {"sub": "alice"}
    signer.mint(OBO_PREFIX, claims, 60)
    assert claims == {"sub": "alice"}


def test_system_tokens_without_lifetime_are_deterministic_and_never_expire(signer, monkeypatch):
    claims = {"ep": "chat", "ent": "main-default-bot_1", "res": ["llm"]}
    first = signer.mint(SYSTEM_PREFIX, claims, None)
    second = TokenSigner(KEY).mint(SYSTEM_PREFIX, dict(claims), None)
    # A worker's system credential is the same on every start.
    assert first == second
    assert "exp" not in claims_of(first) and "iat" not in claims_of(first)
    # Far in the future, it still verifies.
    monkeypatch.setattr(tokens, "time", SimpleNamespace(time=lambda: time.time() + 100 * 365 * 24 * 3600))
    assert signer.verify(first) == (SYSTEM_PREFIX, claims)


def test_system_tokens_differ_per_endpoint_entity_and_key(signer):
    base = signer.mint(SYSTEM_PREFIX, {"ep": "a", "ent": "e", "res": ["x"]}, None)
    assert signer.mint(SYSTEM_PREFIX, {"ep": "b", "ent": "e", "res": ["x"]}, None) != base
    assert signer.mint(SYSTEM_PREFIX, {"ep": "a", "ent": "f", "res": ["x"]}, None) != base
    assert signer.mint(SYSTEM_PREFIX, {"ep": "a", "ent": "e", "res": ["y"]}, None) != base
    assert TokenSigner(b"other-key" * 4).mint(SYSTEM_PREFIX, {"ep": "a", "ent": "e", "res": ["x"]}, None) != base


def test_tokens_with_lifetime_differ_over_time(signer, monkeypatch):
    now = time.time()
    monkeypatch.setattr(tokens, "time", SimpleNamespace(time=lambda: now))
    first = signer.mint(OBO_PREFIX, {"sub": "a"}, 300)
    monkeypatch.setattr(tokens, "time", SimpleNamespace(time=lambda: now + 2))
    assert signer.mint(OBO_PREFIX, {"sub": "a"}, 300) != first


# ---- signed tokens: expiry --------------------------------------------------------------------


def test_expired_token_is_rejected(signer, monkeypatch):
    now = 1_700_000_000.0
    monkeypatch.setattr(tokens, "time", SimpleNamespace(time=lambda: now))
    token = signer.mint(OBO_PREFIX, {"sub": "alice"}, 300)
    monkeypatch.setattr(tokens, "time", SimpleNamespace(time=lambda: now + 299.5))
    assert signer.verify(token)[1]["sub"] == "alice"
    monkeypatch.setattr(tokens, "time", SimpleNamespace(time=lambda: now + 300))
    with pytest.raises(InvalidSignedToken, match="expired"):
        signer.verify(token)
    monkeypatch.setattr(tokens, "time", SimpleNamespace(time=lambda: now + 86400))
    with pytest.raises(InvalidSignedToken, match="expired"):
        signer.verify(token)


def test_negative_lifetime_is_born_expired(signer):
    with pytest.raises(InvalidSignedToken, match="expired"):
        signer.verify(signer.mint(LOAD_PREFIX, {"key": "ep/e"}, -1))


def test_extending_expiry_breaks_the_signature(signer):
    token = signer.mint(OBO_PREFIX, {"sub": "alice"}, -10)
    prefix, _, signature = split(token)
    claims = claims_of(token)
    claims["exp"] = time.time() + 10**9
    forged = f"{prefix}{b64(orjson.dumps(claims))}.{signature}"
    with pytest.raises(InvalidSignedToken, match="signature"):
        signer.verify(forged)


# ---- signed tokens: tampering -----------------------------------------------------------------


def test_tampered_payload_is_rejected(signer):
    token = signer.mint(SYSTEM_PREFIX, {"ep": "a", "ent": "e", "res": ["allowed"]}, None)
    prefix, _, signature = split(token)
    forged_claims = {"ep": "a", "ent": "e", "res": ["allowed", "secret"]}
    forged = f"{prefix}{b64(orjson.dumps(forged_claims))}.{signature}"
    with pytest.raises(InvalidSignedToken, match="signature does not verify"):
        signer.verify(forged)


def test_every_single_character_change_is_rejected(signer):
    token = signer.mint(OBO_PREFIX, {"sub": "alice", "sc": ["serving.serving-endpoints"]}, 300)
    alphabet = "AZaz09-_"
    for i in range(4, len(token)):
        if token[i] == ".":
            continue
        replacement = next(c for c in alphabet if c != token[i])
        with pytest.raises(InvalidSignedToken):
            signer.verify(token[:i] + replacement + token[i + 1:])


def test_tampered_or_missing_signature_is_rejected(signer):
    token = signer.mint(OBO_PREFIX, {"sub": "alice"}, 300)
    prefix, payload, signature = split(token)
    for bad in (f"{prefix}{payload}.", f"{prefix}{payload}.{signature[:-1]}", f"{prefix}{payload}.{signature}x",
                f"{prefix}{payload}.{signature[::-1]}", f"{prefix}{payload}.{'A' * len(signature)}"):
        with pytest.raises(InvalidSignedToken, match="signature"):
            signer.verify(bad)


def test_token_from_another_platform_is_rejected(signer):
    other = TokenSigner(b"x" * 32).mint(OBO_PREFIX, {"sub": "admin"}, 300)
    with pytest.raises(InvalidSignedToken, match="signature"):
        signer.verify(other)


@pytest.mark.parametrize("to_prefix", [OBO_PREFIX, LOAD_PREFIX])
def test_relabelling_a_system_token_fails(signer, to_prefix):
    token = signer.mint(SYSTEM_PREFIX, {"ep": "a", "ent": "e", "res": ["x"], "sub": "admin"}, None)
    relabelled = to_prefix + token[len(SYSTEM_PREFIX):]
    with pytest.raises(InvalidSignedToken, match="signature"):
        signer.verify(relabelled)


@pytest.mark.parametrize(("source", "target"), [(OBO_PREFIX, SYSTEM_PREFIX), (LOAD_PREFIX, OBO_PREFIX),
                                                (LOAD_PREFIX, SYSTEM_PREFIX), (OBO_PREFIX, LOAD_PREFIX)])
def test_relabelling_between_any_two_kinds_fails(signer, source, target):
    token = signer.mint(source, {"sub": "alice", "key": "k"}, 300)
    with pytest.raises(InvalidSignedToken):
        signer.verify(target + token[4:])


@pytest.mark.parametrize("token", [
    "", "aws_", "aws_nodot", "awp_abc.def", "Bearer aws_x.y", "dapi0123456789abcdef", "xyz_abc.def",
    "AWS_abc.def", " aws_abc.def", "aws",
])
def test_not_platform_signed(signer, token):
    with pytest.raises(InvalidSignedToken, match="not a platform-signed token"):
        signer.verify(token)


@pytest.mark.parametrize("token", ["aws_abc.\xe9", "aws_\xe9.abc", "aws_abc.\u20ac\u20ac", "awo_.\xff", "awl_\x00.\x00"])
def test_non_ascii_garbage_is_rejected_not_crashing(signer, token):
    # A header may carry any latin-1 character; verify must answer 401, never raise TypeError.
    with pytest.raises(InvalidSignedToken):
        signer.verify(token)


def test_empty_payload_with_valid_signature_is_malformed(signer):
    with pytest.raises(InvalidSignedToken, match="malformed"):
        signer.verify(signed_with(KEY, OBO_PREFIX, ""))


@pytest.mark.parametrize("payload", [
    b64(b"not json"), b64(b"[1, 2]"), b64(b'"string"'), b64(b"null"), b64(b"42"), "a",  # "a" is not base64
])
def test_signed_but_malformed_payload_is_rejected(signer, payload):
    with pytest.raises(InvalidSignedToken, match="malformed"):
        signer.verify(signed_with(KEY, OBO_PREFIX, payload))


def test_payload_containing_dots_still_splits_on_the_last_dot(signer):
    # The signature never contains '.', so the last '.' separates it from the payload.
    token = signed_with(KEY, LOAD_PREFIX, "a.b." + b64(b'{"key": "x"}'))
    with pytest.raises(InvalidSignedToken, match="malformed"):
        signer.verify(token)


def test_error_messages_never_echo_the_token(signer):
    token = signer.mint(OBO_PREFIX, {"sub": "alice"}, 300)
    for bad in (token[:-2] + "zz", "aws_" + token[4:], signer.mint(OBO_PREFIX, {"sub": "alice"}, -1)):
        with pytest.raises(InvalidSignedToken) as caught:
            signer.verify(bad)
        assert bad not in str(caught.value)
        assert split(bad)[2] not in str(caught.value)


# ---- home secrets -----------------------------------------------------------------------------


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_private_key_is_created_once_with_mode_0600(tmp_path):
    path = tmp_path / "secrets" / "signing.key"
    key = home_secrets.private_key(path)
    assert len(key) == 32
    assert mode(path) == 0o600
    assert path.read_bytes() == key
    # Second start: the same key, so tokens minted before a restart still verify.
    assert home_secrets.private_key(path) == key
    assert home_secrets.private_key(tmp_path / "other.key") != key


def test_private_key_size(tmp_path):
    assert len(home_secrets.private_key(tmp_path / "k", size=64)) == 64


def test_write_private_tightens_an_existing_world_readable_file(tmp_path):
    path = tmp_path / "admin.token"
    path.write_text("old")
    path.chmod(0o644)
    home_secrets.write_private(path, b"awp_new")
    assert path.read_bytes() == b"awp_new"
    assert mode(path) == 0o600


def test_write_private_is_not_subject_to_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        home_secrets.write_private(tmp_path / "t", b"x")
    finally:
        os.umask(old)
    assert mode(tmp_path / "t") == 0o600

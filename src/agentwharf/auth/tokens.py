"""Bearer tokens: personal access tokens kept as hashes, and short-lived signed tokens.

Personal access tokens (``awp_...``) carry 256 random bits. They are stored only as a SHA-256
digest: a slow password hash (bcrypt, PBKDF2) exists to make guessing *low-entropy* secrets
expensive, and nobody can guess 256 random bits however fast the hash is. A fast hash keeps
the check on every request to microseconds, and the store never holds a usable token.

Signed tokens are minted by the platform for its workers and never stored:

* ``aws_`` system credential: invokes exactly the serving endpoints a model declared.
* ``awo_`` on-behalf-of-user token: the caller's identity, limited to the declared API scopes,
  valid for minutes.
* ``awl_`` load credential: lets a starting worker read its model from MLflow, for minutes.
* ``awm_`` monitor credential: online scoring's judges call LLM endpoints with it; valid for
  the platform run that minted it (its ``boot`` claim), never in a sandboxed scorer.

Their body is JSON signed with HMAC-SHA256 under a key that lives in the platform's home.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

import orjson

PAT_PREFIX = "awp_"
SYSTEM_PREFIX = "aws_"
OBO_PREFIX = "awo_"
LOAD_PREFIX = "awl_"
MONITOR_PREFIX = "awm_"
SIGNED_PREFIXES = (SYSTEM_PREFIX, OBO_PREFIX, LOAD_PREFIX, MONITOR_PREFIX)


def new_personal_token() -> str:
    return PAT_PREFIX + secrets.token_urlsafe(32)


def new_token_id() -> str:
    return secrets.token_hex(8)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_signing_key() -> bytes:
    return secrets.token_bytes(32)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class InvalidSignedToken(Exception):
    """Malformed, forged or expired; the message says which, for the 401 body."""


class TokenSigner:
    def __init__(self, key: bytes):
        self._key = key

    def mint(self, prefix: str, claims: dict, lifetime_seconds: float | None) -> str:
        body = dict(claims)
        if lifetime_seconds is not None:
            # Without a lifetime the token is a pure function of its claims, so a worker's
            # system credential is the same on every start (its spec does not change).
            body["iat"] = int(time.time())
            body["exp"] = time.time() + lifetime_seconds
        payload = _b64(orjson.dumps(body))
        return f"{prefix}{payload}.{self._sign(prefix, payload)}"

    def verify(self, token: str) -> tuple[str, dict]:
        """The token's prefix and claims.

        Raises:
            InvalidSignedToken: not one of ours, tampered with, or past its expiry.
        """
        prefix = token[:4]
        if prefix not in SIGNED_PREFIXES or "." not in token:
            raise InvalidSignedToken("not a platform-signed token")
        payload, _, signature = token[4:].rpartition(".")
        # Bytes, not str: compare_digest raises TypeError on non-ASCII text, and a header may
        # carry any latin-1 character.
        if not hmac.compare_digest(signature.encode(), self._sign(prefix, payload).encode()):
            raise InvalidSignedToken("token signature does not verify")
        try:
            claims = orjson.loads(_unb64(payload))
        except (ValueError, orjson.JSONDecodeError):
            raise InvalidSignedToken("token payload is malformed") from None
        if not isinstance(claims, dict):
            raise InvalidSignedToken("token payload is malformed")
        expires = claims.get("exp")
        if expires is not None and time.time() >= float(expires):
            raise InvalidSignedToken("token has expired")
        return prefix, claims

    def _sign(self, prefix: str, payload: str) -> str:
        # The prefix is signed too, so a token of one kind cannot be relabelled as another.
        return _b64(hmac.new(self._key, f"{prefix}{payload}".encode(), hashlib.sha256).digest())

"""The per-request cost of agentwharf's auth check, measured in-process.

The HTTP comparison (agentwharf vs agentwharf-no-auth under wrk) shows the effect at the
system level but is noisy on a shared 2-core machine; this times exactly what the gateway does
per request: resolve the bearer token to a caller and look up their level on the endpoint.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from agentwharf.auth.gatekeeper import Gatekeeper
from agentwharf.auth.identities import IdentityService
from agentwharf.auth.levels import PermissionLevel
from agentwharf.auth.tokens import OBO_PREFIX, TokenSigner, new_signing_key
from agentwharf.store.database import Database, migrate


def _scope(token: str) -> dict:
    return {"headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                        (b"authorization", f"Bearer {token}".encode())]}


def measure(iterations: int = 200_000) -> dict[str, float]:
    """Microseconds per check, for a personal access token and for an on-behalf-of token."""
    with tempfile.TemporaryDirectory(prefix="awbench-auth-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'auth.db'}"
        migrate(url)
        db = Database(url)
        identities = IdentityService(db, bridge=None)
        identities.create_principal("alice", "user")
        token, _ = identities.create_token("alice", None, "bench")
        identities.set_endpoint_level("echo", "alice", PermissionLevel.CAN_QUERY)
        signer = TokenSigner(new_signing_key())
        gatekeeper = Gatekeeper(identities, signer, lambda ep, ent, token: True)
        obo = signer.mint(OBO_PREFIX, {"sub": "alice", "sc": ["serving.serving-endpoints"]}, 300)
        results = {}
        for label, value in (("personal access token", token), ("on-behalf-of token", obo)):
            scope = _scope(value)
            started = time.perf_counter()
            for _ in range(iterations):
                caller = gatekeeper.authenticate(scope)
                gatekeeper.require_endpoint(caller, "echo", PermissionLevel.CAN_QUERY)
            results[label] = (time.perf_counter() - started) / iterations * 1e6
        # Minting the per-request on-behalf-of token (models with a UserAuthPolicy).
        started = time.perf_counter()
        for _ in range(iterations):
            signer.mint(OBO_PREFIX, {"sub": "alice", "sc": ["serving.serving-endpoints"]}, 300)
        results["minting an on-behalf-of token"] = (time.perf_counter() - started) / iterations * 1e6
        db.dispose()
        return results

"""MLflow's AI Gateway settings, as environment variables for its server and the platform.

Its own module, with no imports, because ``agentwharf up`` computes them before it launches
MLflow's server, and that launch waits for nothing it does not need (``early_start``).
"""

from __future__ import annotations

#: MLflow's own settings for its gateway code in a process (its server's, and the platform's,
#: see ``llm.runtime``): where its keys are decrypted and which providers it may reach.
KEK_VARIABLE = "MLFLOW_CRYPTO_KEK_PASSPHRASE"


def gateway_environment(kek_passphrase: str, allow_private: bool, route_timeout: float) -> dict[str, str]:
    """MLflow's variables for its AI Gateway: the home's key-encryption passphrase; whether
    providers on private addresses and plain http are allowed (self-hosted model servers);
    and aiohttp's total timeout, which agentwharf keeps out of the way (it bounds a call itself,
    first chunk and gaps for streams, so a long stream that keeps moving is not cut)."""
    env = {KEK_VARIABLE: kek_passphrase, "MLFLOW_GATEWAY_ROUTE_TIMEOUT_SECONDS": str(int(max(3600, route_timeout)))}
    if allow_private:
        env["MLFLOW_GATEWAY_API_BASE_ALLOW_PRIVATE_IPS"] = "true"
        env["MLFLOW_GATEWAY_API_BASE_ALLOWED_SCHEMES"] = "http,https"
    return env

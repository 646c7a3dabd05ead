"""One TLS context per process, for every HTTP client agentwharf makes.

httpx builds a new ``SSLContext`` for each client and loads certifi's CA bundle into it:
~50-90 ms of CPU each time on the reference machine. The platform makes half a dozen clients
as it starts (MLflow's proxy and registry, the console's MLflow calls, rollouts, alert
deliveries), which was ~0.3 s of ``agentwharf up`` after MLflow's server answered, and
``agentwharf.agents`` made one per call. The context is httpx's own default (certifi's CAs,
``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` honoured), made once; an ``SSLContext`` is safe to share
between clients and threads.
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def tls_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()

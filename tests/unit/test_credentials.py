"""agentwharf.credentials: what a deployed agent's code can read, and only where it exists."""

import asyncio
import contextvars
import threading

import pytest

from agentwharf import credentials
from agentwharf.credentials import (
    CREDENTIAL_VARIABLES,
    Credentials,
    NoCredentials,
    system_credentials,
    system_environment,
    user_credentials,
)

HOST = "http://127.0.0.1:8710"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in (*CREDENTIAL_VARIABLES, "DATABRICKS_HOST", "AGENTWHARF_HOST"):
        monkeypatch.delenv(name, raising=False)


# ---- the model's own (system) credential ------------------------------------------------------


def test_system_credentials_from_the_workers_environment(monkeypatch):
    for key, value in system_environment(HOST, "aws_payload.sig").items():
        monkeypatch.setenv(key, value)
    creds = system_credentials()
    assert creds == Credentials(HOST, "aws_payload.sig")
    assert creds.headers == {"Authorization": "Bearer aws_payload.sig"}


def test_system_environment_is_what_databricks_clients_read():
    assert system_environment(HOST, "aws_t.s") == {"DATABRICKS_HOST": HOST, "DATABRICKS_TOKEN": "aws_t.s",
                                                   "AGENTWHARF_HOST": HOST, "AGENTWHARF_TOKEN": "aws_t.s"}


def test_no_system_credential_says_how_to_get_one():
    with pytest.raises(NoCredentials) as caught:
        system_credentials()
    message = str(caught.value)
    assert "no system credential" in message
    assert "DatabricksServingEndpoint" in message and "resources" in message


@pytest.mark.parametrize("token", [
    "", "awp_personal", "awo_onbehalf.sig", "awl_load.sig", "dapi0123", "AWS_upper.sig", " aws_x.y",
])
def test_only_a_system_token_counts_as_the_system_credential(monkeypatch, token):
    # A personal, on-behalf-of or Databricks token in the environment is not the model's own.
    monkeypatch.setenv("DATABRICKS_HOST", HOST)
    monkeypatch.setenv("DATABRICKS_TOKEN", token)
    with pytest.raises(NoCredentials):
        system_credentials()


def test_agentwharf_token_alone_is_not_read(monkeypatch):
    monkeypatch.setenv("AGENTWHARF_HOST", HOST)
    monkeypatch.setenv("AGENTWHARF_TOKEN", "aws_x.y")
    with pytest.raises(NoCredentials):
        system_credentials()


def test_credential_variables_cover_every_token_a_worker_could_inherit():
    # The platform strips these from what a worker inherits and from user-set environment_vars.
    for key in system_environment(HOST, "aws_t.s"):
        if key.endswith("_TOKEN"):
            assert key in CREDENTIAL_VARIABLES
    assert {"MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_USERNAME",
            "DATABRICKS_CLIENT_SECRET"} <= CREDENTIAL_VARIABLES
    assert "DATABRICKS_HOST" not in CREDENTIAL_VARIABLES


def test_the_platforms_store_credentials_are_never_a_workers():
    from agentwharf.credentials import platform_secret

    for name in ("AGENTWHARF_DATABASE_URL", "AGENTWHARF_S3_SECRET_ACCESS_KEY", "AGENTWHARF_S3_ACCESS_KEY_ID",
                 "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "PGPASSWORD", "MLFLOW_TRACKING_TOKEN"):
        assert platform_secret(name), name
    for name in ("PATH", "HOME", "AGENTWHARF_ENDPOINT", "MLFLOW_EXPERIMENT_ID"):
        assert not platform_secret(name), name
    # A deploy's own environment_vars may still give a model credentials of its own.
    assert "AWS_SECRET_ACCESS_KEY" not in CREDENTIAL_VARIABLES


def test_credentials_are_immutable_and_headers_fresh():
    creds = Credentials(HOST, "awo_a.b")
    with pytest.raises(AttributeError):
        creds.token = "other"
    creds.headers["Authorization"] = "Bearer tampered"
    assert creds.headers == {"Authorization": "Bearer awo_a.b"}


# ---- the caller's on-behalf-of credential -----------------------------------------------------


def test_no_user_credentials_outside_a_request():
    with pytest.raises(NoCredentials) as caught:
        user_credentials()
    message = str(caught.value)
    assert "only inside predict" in message and "UserAuthPolicy" in message and "api_scopes" in message


def test_no_credentials_is_a_runtime_error():
    assert issubclass(NoCredentials, RuntimeError)


def test_set_and_reset():
    token = credentials._set_user(Credentials(HOST, "awo_alice.sig"))
    try:
        assert user_credentials() == Credentials(HOST, "awo_alice.sig")
        assert user_credentials().headers == {"Authorization": "Bearer awo_alice.sig"}
    finally:
        credentials._reset_user(token)
    with pytest.raises(NoCredentials):
        user_credentials()


def test_nested_requests_restore_the_outer_caller():
    outer = credentials._set_user(Credentials(HOST, "awo_alice.sig"))
    inner = credentials._set_user(Credentials(HOST, "awo_bob.sig"))
    assert user_credentials().token == "awo_bob.sig"
    credentials._reset_user(inner)
    assert user_credentials().token == "awo_alice.sig"
    credentials._reset_user(outer)
    with pytest.raises(NoCredentials):
        user_credentials()


def test_setting_none_hides_an_outer_caller():
    outer = credentials._set_user(Credentials(HOST, "awo_alice.sig"))
    inner = credentials._set_user(None)
    with pytest.raises(NoCredentials):
        user_credentials()
    credentials._reset_user(inner)
    credentials._reset_user(outer)


def test_threads_do_not_see_each_others_callers():
    """The worker answers concurrent requests on a thread pool: one caller's token must never be
    visible to another request's thread."""
    barrier = threading.Barrier(8)
    seen: dict[int, str | None] = {}
    errors: list[BaseException] = []

    def request(i: int) -> None:
        try:
            reset = credentials._set_user(Credentials(HOST, f"awo_user{i}.sig"))
            try:
                barrier.wait(timeout=10)  # every thread has set its own before any reads
                seen[i] = user_credentials().token
                barrier.wait(timeout=10)
            finally:
                credentials._reset_user(reset)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=request, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert not errors
    assert seen == {i: f"awo_user{i}.sig" for i in range(8)}
    with pytest.raises(NoCredentials):
        user_credentials()


def test_a_thread_started_during_a_request_does_not_inherit_the_token():
    reset = credentials._set_user(Credentials(HOST, "awo_alice.sig"))
    try:
        found = []

        def background():
            try:
                found.append(user_credentials().token)
            except NoCredentials:
                found.append(None)

        thread = threading.Thread(target=background)
        thread.start()
        thread.join()
        assert found == [None]
    finally:
        credentials._reset_user(reset)


def test_a_thread_pool_reused_across_requests_keeps_nothing():
    from concurrent.futures import ThreadPoolExecutor

    def handle(i):
        reset = credentials._set_user(Credentials(HOST, f"awo_{i}.sig")) if i % 2 == 0 else None
        try:
            try:
                return user_credentials().token
            except NoCredentials:
                return None
        finally:
            if reset is not None:
                credentials._reset_user(reset)

    with ThreadPoolExecutor(max_workers=1) as pool:  # one thread: every request reuses it
        results = list(pool.map(handle, range(6)))
    assert results == ["awo_0.sig", None, "awo_2.sig", None, "awo_4.sig", None]


def test_concurrent_async_tasks_are_isolated():
    async def request(i: int, started: asyncio.Event, go: asyncio.Event) -> str:
        credentials._set_user(Credentials(HOST, f"awo_task{i}.sig"))
        started.set()
        await go.wait()
        return user_credentials().token

    async def main():
        go = asyncio.Event()
        events = [asyncio.Event() for _ in range(5)]
        tasks = [asyncio.create_task(request(i, events[i], go)) for i in range(5)]
        for event in events:
            await event.wait()
        go.set()
        results = await asyncio.gather(*tasks)
        # The tasks' settings never leaked into the caller's context.
        with pytest.raises(NoCredentials):
            user_credentials()
        return results

    assert asyncio.run(main()) == [f"awo_task{i}.sig" for i in range(5)]


def test_a_copied_context_sees_the_caller_but_cannot_change_it():
    reset = credentials._set_user(Credentials(HOST, "awo_alice.sig"))
    try:
        def inside():
            assert user_credentials().token == "awo_alice.sig"
            credentials._set_user(Credentials(HOST, "awo_mallory.sig"))

        contextvars.copy_context().run(inside)
        assert user_credentials().token == "awo_alice.sig"
    finally:
        credentials._reset_user(reset)

"""agentwharf.settings: the AGENTWHARF_* variables of servers and clients."""


import shutil
import tempfile
from pathlib import Path

import pydantic
import pytest

from agentwharf.settings import DEFAULT_PORT, DEFAULT_WORKER_CONCURRENCY, ClientSettings, PlatformSettings, redacted_url


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ("AGENTWHARF_HOME", "AGENTWHARF_PORT", "AGENTWHARF_HOST", "AGENTWHARF_TOKEN",
                 "AGENTWHARF_WORKLOAD_SIZES", "AGENTWHARF_DATABASE_URL", "AGENTWHARF_ARTIFACTS_URI",
                 "AGENTWHARF_S3_ENDPOINT_URL", "AGENTWHARF_S3_ACCESS_KEY_ID", "AGENTWHARF_S3_SECRET_ACCESS_KEY",
                 "AGENTWHARF_S3_REGION", "AGENTWHARF_WORKER_CONCURRENCY", "AGENTWHARF_WORKER_THREADS",
                 "AGENTWHARF_WORKER_TRANSPORT", "AGENTWHARF_WORKER_BIND_HOST"):
        monkeypatch.delenv(name, raising=False)


def test_platform_settings_read_port_and_home_from_env(monkeypatch):
    # A short home, so its run folder is inside it (a long one moves it under /tmp: see the
    # socket-path test below); pytest's own temp paths are longer under parallel processes.
    home = Path(tempfile.mkdtemp(prefix="aw-", dir="/tmp")) / "home"
    monkeypatch.setenv("AGENTWHARF_PORT", "9123")
    monkeypatch.setenv("AGENTWHARF_HOME", str(home))
    try:
        settings = PlatformSettings()
        assert settings.port == 9123
        assert settings.home == home
        assert settings.base_url == "http://127.0.0.1:9123"
        assert settings.database_uri == f"sqlite:///{home.resolve() / 'agentwharf.db'}"
        assert settings.run_dir == home.resolve() / "run"
    finally:
        shutil.rmtree(home.parent, ignore_errors=True)


def test_platform_defaults():
    settings = PlatformSettings()
    assert settings.port == DEFAULT_PORT == 8710
    assert settings.workload_sizes == {"Small": 1, "Medium": 2, "Large": 4}


def test_bad_port_in_env_is_rejected(monkeypatch):
    monkeypatch.setenv("AGENTWHARF_PORT", "not-a-port")
    with pytest.raises(pydantic.ValidationError):
        PlatformSettings()


def test_wildcard_host_is_reached_on_loopback():
    assert PlatformSettings(host="0.0.0.0", port=1).base_url == "http://127.0.0.1:1"


def test_run_dir_stays_short_for_a_very_deep_home(tmp_path):
    deep = tmp_path.joinpath(*["a-rather-long-folder-name"] * 12)
    settings = PlatformSettings(home=deep)
    assert len(str(settings.run_dir)) <= 90
    # Stable for the same home, different for another one.
    assert PlatformSettings(home=deep).run_dir == settings.run_dir
    assert PlatformSettings(home=deep / "other").run_dir != settings.run_dir


def test_a_postgresql_url_is_every_stores_and_names_the_psycopg_driver(monkeypatch, tmp_path):
    monkeypatch.setenv("AGENTWHARF_DATABASE_URL", "postgresql://aw:s%40cret@db.internal:5432/agentwharf")
    settings = PlatformSettings(home=tmp_path)
    assert settings.database_uri == "postgresql+psycopg://aw:s%40cret@db.internal:5432/agentwharf"
    assert settings.auth_database_uri == settings.database_uri  # MLflow's basic-auth store too
    assert PlatformSettings(database_url="postgres://h/db").database_uri == "postgresql+psycopg://h/db"
    assert PlatformSettings(database_url="postgresql+psycopg2://h/db").database_uri == "postgresql+psycopg2://h/db"


def test_without_a_database_url_each_store_is_a_sqlite_file_in_the_home(tmp_path):
    settings = PlatformSettings(home=tmp_path)
    assert settings.database_uri == f"sqlite:///{tmp_path.resolve() / 'agentwharf.db'}"
    assert settings.auth_database_uri == f"sqlite:///{tmp_path.resolve() / 'mlflow-auth.db'}"


@pytest.mark.parametrize("url", ["mysql://root@db/aw", "db.internal:5432", "oracle+cx://x"])
def test_a_database_other_than_sqlite_or_postgresql_is_refused(url):
    with pytest.raises(pydantic.ValidationError, match="AGENTWHARF_DATABASE_URL must be postgresql://"):
        PlatformSettings(database_url=url)


def test_redacted_url_masks_only_the_password():
    assert redacted_url("postgresql://aw:s3cret@db:5432/x") == "postgresql://aw:***@db:5432/x"
    assert redacted_url("postgresql://aw@db/x") == "postgresql://aw@db/x"
    assert redacted_url("sqlite:////tmp/a.db") == "sqlite:////tmp/a.db"


def test_s3_artifacts_give_mlflows_server_its_s3_variables(tmp_path):
    settings = PlatformSettings(home=tmp_path, artifacts_uri="s3://models/agentwharf/", s3_endpoint_url="http://minio:9000",
                                s3_access_key_id="AKIA", s3_secret_access_key="shh", s3_region="eu-west-1")
    assert settings.artifacts_destination == "s3://models/agentwharf" and settings.artifacts_in_s3
    assert settings.artifact_store_environment() == {"MLFLOW_S3_ENDPOINT_URL": "http://minio:9000", "AWS_ACCESS_KEY_ID": "AKIA",
                                                     "AWS_SECRET_ACCESS_KEY": "shh", "AWS_DEFAULT_REGION": "eu-west-1"}
    assert "shh" not in repr(settings)  # a secret setting never shows in a log of the settings
    # Keys left unset: boto3's own chain (AWS_* variables, ~/.aws, an instance role) decides.
    assert PlatformSettings(artifacts_uri="s3://models").artifact_store_environment() == {}


def test_local_artifacts_are_the_homes_folder_or_the_one_named(tmp_path):
    assert PlatformSettings(home=tmp_path).artifacts_destination == str(tmp_path.resolve() / "artifacts")
    assert PlatformSettings(home=tmp_path, artifacts_uri="/srv/artifacts").artifacts_destination == "/srv/artifacts"
    assert PlatformSettings(home=tmp_path, artifacts_uri="/srv/artifacts").artifact_store_environment() == {}


@pytest.mark.parametrize(("uri", "fragment"), [("gs://bucket/x", "must be s3://bucket/prefix or a local folder"),
                                               ("s3:///x", "names no bucket")])
def test_artifact_stores_other_than_s3_or_a_folder_are_refused(uri, fragment):
    with pytest.raises(pydantic.ValidationError, match=fragment):
        PlatformSettings(artifacts_uri=uri)


def test_workload_size_below_one_worker_is_rejected():
    with pytest.raises(pydantic.ValidationError, match="'Tiny' must have at least one worker"):
        PlatformSettings(workload_sizes={"Small": 1, "Tiny": 0})


def test_workload_sizes_from_env_json(monkeypatch):
    monkeypatch.setenv("AGENTWHARF_WORKLOAD_SIZES", '{"Small": 2}')
    assert PlatformSettings().workload_sizes == {"Small": 2}
    monkeypatch.setenv("AGENTWHARF_WORKLOAD_SIZES", '{"Small": -1}')
    with pytest.raises(pydantic.ValidationError):
        PlatformSettings()


@pytest.mark.parametrize("host, expected", [
    ("example.com:8710", "http://example.com:8710"),
    ("10.0.0.5:80/", "http://10.0.0.5:80"),
    ("https://wharf.example.com/", "https://wharf.example.com"),
    ("http://127.0.0.1:8710", "http://127.0.0.1:8710"),
])
def test_client_settings_add_scheme_to_a_bare_host(host, expected):
    assert ClientSettings(host=host).host == expected


def test_client_settings_from_env(monkeypatch):
    monkeypatch.setenv("AGENTWHARF_HOST", "wharf.local:9000")
    monkeypatch.setenv("AGENTWHARF_TOKEN", "secret")
    settings = ClientSettings()
    assert settings.host == "http://wharf.local:9000"
    assert settings.token == "secret"


@pytest.fixture
def bare_client_env(monkeypatch, tmp_path):
    """No client variable set, and a working directory without a platform home."""
    for name in ("AGENTWHARF_HOST", "AGENTWHARF_TOKEN", "AGENTWHARF_HOME", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN",
                 "DATABRICKS_HOST", "DATABRICKS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_client_default_host(bare_client_env):
    assert ClientSettings().host == f"http://127.0.0.1:{DEFAULT_PORT}"
    assert ClientSettings().resolved_token() is None


def test_client_finds_the_platform_through_mlflow_then_databricks_variables(bare_client_env):
    bare_client_env.setenv("DATABRICKS_HOST", "https://dbx.example.com/")
    bare_client_env.setenv("DATABRICKS_TOKEN", "dapi-1")
    assert (ClientSettings().host, ClientSettings().resolved_token()) == ("https://dbx.example.com", "dapi-1")
    bare_client_env.setenv("MLFLOW_TRACKING_URI", "databricks")  # not a URL: skipped
    assert ClientSettings().host == "https://dbx.example.com"
    bare_client_env.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9000")
    bare_client_env.setenv("MLFLOW_TRACKING_TOKEN", "awp_mlflow")
    assert (ClientSettings().host, ClientSettings().resolved_token()) == ("http://127.0.0.1:9000", "awp_mlflow")
    bare_client_env.setenv("AGENTWHARF_HOST", "wharf:8710")
    bare_client_env.setenv("AGENTWHARF_TOKEN", "awp_own")
    assert (ClientSettings().host, ClientSettings().resolved_token()) == ("http://wharf:8710", "awp_own")


def test_client_falls_back_to_the_url_and_token_a_local_home_recorded(bare_client_env, tmp_path):
    home = tmp_path / ".agentwharf"
    home.mkdir()
    (home / "platform.pid").write_text('{"pid": 1, "base_url": "http://127.0.0.1:8720"}')
    (home / "admin.token").write_text("awp_admin\n")
    settings = ClientSettings()
    assert (settings.host, settings.resolved_token()) == ("http://127.0.0.1:8720", "awp_admin")


def test_worker_concurrency_defaults_to_holding_a_thousand_waiting_requests():
    assert PlatformSettings().worker_concurrency == DEFAULT_WORKER_CONCURRENCY >= 1000


def test_worker_concurrency_from_env_and_by_name(monkeypatch):
    monkeypatch.setenv("AGENTWHARF_WORKER_CONCURRENCY", "300")
    assert PlatformSettings().worker_concurrency == 300
    assert PlatformSettings(worker_concurrency=7).worker_concurrency == 7


def test_worker_threads_is_still_read_as_the_concurrency(monkeypatch):
    monkeypatch.setenv("AGENTWHARF_WORKER_THREADS", "32")
    assert PlatformSettings().worker_concurrency == PlatformSettings().worker_threads == 32
    monkeypatch.setenv("AGENTWHARF_WORKER_CONCURRENCY", "64")  # the new name wins
    assert PlatformSettings().worker_concurrency == 64


def test_worker_concurrency_must_be_positive(monkeypatch):
    monkeypatch.setenv("AGENTWHARF_WORKER_CONCURRENCY", "0")
    with pytest.raises(pydantic.ValidationError):
        PlatformSettings()


def test_workers_are_reached_on_unix_sockets_unless_tcp_is_asked_for(monkeypatch):
    assert (PlatformSettings().worker_transport, PlatformSettings().worker_bind_host) == ("unix", "127.0.0.1")
    monkeypatch.setenv("AGENTWHARF_WORKER_TRANSPORT", "tcp")
    monkeypatch.setenv("AGENTWHARF_WORKER_BIND_HOST", "10.0.0.7")
    assert (PlatformSettings().worker_transport, PlatformSettings().worker_bind_host) == ("tcp", "10.0.0.7")


@pytest.mark.parametrize(("name", "value"), [("AGENTWHARF_WORKER_TRANSPORT", "udp"), ("AGENTWHARF_WORKER_BIND_HOST", "")])
def test_an_unknown_worker_transport_or_an_empty_bind_host_is_refused(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(pydantic.ValidationError):
        PlatformSettings()

"""agentwharf.settings: the AGENTWHARF_* variables of servers and clients."""


import pydantic
import pytest

from agentwharf.settings import DEFAULT_PORT, ClientSettings, PlatformSettings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ("AGENTWHARF_HOME", "AGENTWHARF_PORT", "AGENTWHARF_HOST", "AGENTWHARF_TOKEN",
                 "AGENTWHARF_WORKLOAD_SIZES", "AGENTWHARF_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_platform_settings_read_port_and_home_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("AGENTWHARF_PORT", "9123")
    monkeypatch.setenv("AGENTWHARF_HOME", str(tmp_path / "home"))
    settings = PlatformSettings()
    assert settings.port == 9123
    assert settings.home == tmp_path / "home"
    assert settings.base_url == "http://127.0.0.1:9123"
    assert settings.database_uri == f"sqlite:///{(tmp_path / 'home').resolve() / 'agentwharf.db'}"
    assert settings.run_dir == (tmp_path / "home").resolve() / "run"


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

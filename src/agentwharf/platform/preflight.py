"""What ``agentwharf up`` checks before it starts anything: that the database and the artifact
store its settings name can be used.

Without these checks a wrong password or bucket shows up minutes later, deep inside MLflow's
server or the writer's log, as a stack trace. Here it is one sentence that names the setting
and what the server said, raised as ``InvalidConfiguration`` before a process is started.
Secrets never appear in the message (a database URL is shown with its password masked).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import urlsplit

from agentwharf.errors import InvalidConfiguration
from agentwharf.settings import PlatformSettings, redacted_url

#: How long a check waits for a server that does not answer.
CONNECT_TIMEOUT_SECONDS = 10
_SERVER_EXTRA = "pip install 'agentwharf[server]'"


def check(settings: PlatformSettings) -> None:
    """Raises:
    InvalidConfiguration: the database or the artifact store cannot be used; the message
        says which setting and why.
    """
    check_database(settings)
    check_artifact_store(settings)


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def check_database(settings: PlatformSettings) -> None:
    if settings.database_url is None:
        return
    from sqlalchemy import create_engine, exc

    shown = redacted_url(settings.database_url)
    url = settings.database_uri
    if url.startswith("sqlite:///"):
        folder = Path(url[len("sqlite:///"):]).parent
        if not folder.is_dir():
            raise InvalidConfiguration(f"AGENTWHARF_DATABASE_URL names a SQLite file in {folder}, which does not exist")
        return
    try:
        engine = create_engine(url, connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS})
    except (ImportError, exc.NoSuchModuleError) as error:
        raise InvalidConfiguration(f"AGENTWHARF_DATABASE_URL ({shown}) needs a driver that is not installed "
                                   f"({_first_line(error)}): {_SERVER_EXTRA}") from None
    except exc.ArgumentError as error:
        raise InvalidConfiguration(f"AGENTWHARF_DATABASE_URL ({shown}) is not a database URL: {_first_line(error)}") from None
    try:
        with engine.connect():
            pass
    except exc.DBAPIError as error:
        raise InvalidConfiguration(f"Cannot connect to the database AGENTWHARF_DATABASE_URL names ({shown}): "
                                   f"{_first_line(error)}") from None
    finally:
        engine.dispose()


def check_artifact_store(settings: PlatformSettings) -> None:
    """For ``s3://``: the bucket exists and these credentials can write under the prefix and
    delete what they wrote (what MLflow's server will do with them)."""
    if not settings.artifacts_in_s3:
        return
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        raise InvalidConfiguration(f"AGENTWHARF_ARTIFACTS_URI is s3://..., which needs boto3: {_SERVER_EXTRA}") from None
    parts = urlsplit(settings.artifacts_uri)
    bucket, key = parts.netloc, "/".join(p for p in (parts.path.strip("/"), f".agentwharf-check-{uuid.uuid4().hex}") if p)
    env = settings.artifact_store_environment()
    client = boto3.client(
        "s3", endpoint_url=env.get("MLFLOW_S3_ENDPOINT_URL"), region_name=env.get("AWS_DEFAULT_REGION"),
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"), aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
        config=Config(connect_timeout=CONNECT_TIMEOUT_SECONDS, read_timeout=CONNECT_TIMEOUT_SECONDS,
                      retries={"max_attempts": 1}))
    where = settings.artifacts_uri + (f" at {settings.s3_endpoint_url}" if settings.s3_endpoint_url else "")
    try:
        client.put_object(Bucket=bucket, Key=key, Body=b"")
        client.delete_object(Bucket=bucket, Key=key)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        hint = {"NoSuchBucket": f"bucket {bucket!r} does not exist; create it first",
                "AccessDenied": "access denied: check AGENTWHARF_S3_ACCESS_KEY_ID / AGENTWHARF_S3_SECRET_ACCESS_KEY "
                                "and the bucket's policy",
                "InvalidAccessKeyId": "the access key is unknown to the store (AGENTWHARF_S3_ACCESS_KEY_ID)",
                "SignatureDoesNotMatch": "the secret key is wrong (AGENTWHARF_S3_SECRET_ACCESS_KEY)"}.get(code, _first_line(error))
        raise InvalidConfiguration(f"Cannot write to the artifact store {where}: {hint}") from None
    except BotoCoreError as error:
        raise InvalidConfiguration(f"Cannot reach the artifact store {where}: {_first_line(error)}") from None

"""`agentwharf llm create|list|get|delete|limit`: LLM endpoints (external models on MLflow's AI
Gateway). A key never goes on the command line, where other users of the machine and the
shell's history would see it: it is read from an environment variable or stdin, or named as a
secret already in MLflow's AI Gateway."""

from __future__ import annotations

import os
import sys
from enum import Enum

import typer

from agentwharf.cli.connection import HomeOption, HostOption, JsonOption, connect
from agentwharf.cli.output import console, fail, handle_errors, print_json, print_table

app = typer.Typer(help="LLM endpoints: a provider's model behind the platform (keys held, callers limited).",
                  no_args_is_help=True)


class Provider(str, Enum):
    """``custom``: any OpenAI-compatible server (vLLM, Ollama, llama.cpp, a hosted API)."""

    custom = "custom"
    openai = "openai"


class Task(str, Enum):
    chat = "chat"
    completions = "completions"
    embeddings = "embeddings"


def _key(api_key_env: str | None, api_key_stdin: bool, api_key_secret: str | None) -> dict:
    given = [o for o, v in (("--api-key-env", api_key_env), ("--api-key-stdin", api_key_stdin),
                            ("--api-key-secret", api_key_secret)) if v]
    if len(given) > 1:
        fail(f"give one of {', '.join(given)}")
    if api_key_env:
        value = os.environ.get(api_key_env)
        if not value:
            fail(f"--api-key-env: ${api_key_env} is not set")
        return {"openai_api_key_plaintext": value}
    if api_key_stdin:
        value = sys.stdin.readline().strip()
        if not value:
            fail("--api-key-stdin: nothing on stdin")
        return {"openai_api_key_plaintext": value}
    if api_key_secret:
        return {"openai_api_key": f"{{{{secrets/{api_key_secret}}}}}"}
    return {}


def _is_llm(endpoint: dict) -> bool:
    return str(endpoint.get("task", "")).startswith("llm/")


def _models(endpoint: dict) -> str:
    entities = endpoint.get("config", {}).get("served_entities", [])
    return ", ".join(f"{e['external_model']['provider']}/{e['external_model']['name']}" for e in entities
                     if "external_model" in e) or "-"


def _limits(endpoint: dict) -> str:
    limits = endpoint.get("ai_gateway", {}).get("rate_limits", [])
    parts = []
    for limit in limits:
        budget = " + ".join(f"{limit[k]} {k}" for k in ("calls", "tokens") if k in limit)
        parts.append(f"{budget}/min per {limit.get('principal') or limit['key']}")
    return "; ".join(parts) or "-"


@app.command()
@handle_errors
def create(
    name: str = typer.Argument(..., help="Endpoint name"),
    model: str = typer.Option(..., "--model", help="The provider's model name, such as gpt-4o-mini or llama3.1:8b"),
    api_base: str = typer.Option(None, "--api-base", help="The provider's OpenAI-compatible base URL, "
                                                           "such as http://127.0.0.1:8000/v1 (required for custom)"),
    provider: Provider = typer.Option(Provider.custom, "--provider", help="custom: any OpenAI-compatible server"),
    task: Task = typer.Option(Task.chat, "--task", help="What the model does: chat, completions or embeddings"),
    api_key_env: str = typer.Option(None, "--api-key-env", help="Read the provider's key from this environment variable"),
    api_key_stdin: bool = typer.Option(False, "--api-key-stdin", help="Read the provider's key from stdin"),
    api_key_secret: str = typer.Option(None, "--api-key-secret", help="Use this secret of MLflow's AI Gateway (scope/key)"),
    entity: str = typer.Option(None, "--entity", help="Served entity name (default: from the model name)"),
    host: HostOption = None, home: HomeOption = None, as_json: JsonOption = False,
) -> None:
    """Create an LLM endpoint; its key goes to MLflow's encrypted secret store only."""
    config = {**({"openai_api_base": api_base} if api_base else {}), **_key(api_key_env, api_key_stdin, api_key_secret)}
    served = {"external_model": {"name": model, "provider": provider.value, "task": f"llm/v1/{task.value}",
                                 "openai_config": config}}
    if entity:
        served["name"] = entity
    endpoint = connect(host, home).create_endpoint({"name": name, "config": {"served_entities": [served]}})
    if as_json:
        print_json(endpoint)
        return
    console.print(f"Created LLM endpoint {name} ({endpoint['task']}, {_models(endpoint)}).", highlight=False)
    console.print(f"  Query it: POST {endpoint['endpoint_url']}, or the openai client with "
                  f"base_url=<host>/serving-endpoints and model={name!r}", highlight=False)


@app.command("list")
@handle_errors
def list_(host: HostOption = None, home: HomeOption = None, as_json: JsonOption = False) -> None:
    """List LLM endpoints with their task, models, traffic and rate limits."""
    endpoints = [e for e in connect(host, home).list_endpoints() if _is_llm(e)]
    if as_json:
        print_json(endpoints)
        return
    rows = [(e["name"], e["task"], _models(e), _traffic(e), _limits(e)) for e in endpoints]
    print_table(("name", "task", "models", "traffic", "rate limits"), rows,
                empty="No LLM endpoints. Create one with `agentwharf llm create NAME --model M --api-base URL`.")


def _traffic(endpoint: dict) -> str:
    routes = endpoint.get("config", {}).get("traffic_config", {}).get("routes", [])
    return ", ".join(f"{r['served_model_name']}={r['traffic_percentage']}%" for r in routes) or "-"


@app.command()
@handle_errors
def get(name: str, host: HostOption = None, home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Show one LLM endpoint: models, traffic, AI gateway settings (everything with --json)."""
    endpoint = connect(host, home).get_endpoint(name)
    if not _is_llm(endpoint):
        fail(f"{name} is an agent endpoint; see `agentwharf endpoints get {name}`")
    if as_json:
        print_json(endpoint)
        return
    console.print(f"[bold]{endpoint['name']}[/]  {endpoint['task']}  your permission: {endpoint.get('permission_level')}",
                  highlight=False)
    console.print(f"  URL: {endpoint['endpoint_url']}", highlight=False)
    traffic = {r["served_model_name"]: r["traffic_percentage"]
               for r in endpoint.get("config", {}).get("traffic_config", {}).get("routes", [])}
    rows = []
    for served in endpoint.get("config", {}).get("served_entities", []):
        external = served.get("external_model", {})
        config = external.get("openai_config", {})
        rows.append((served["name"], external.get("provider"), external.get("name"), config.get("openai_api_base", "-"),
                     config.get("openai_api_key", "(stored in MLflow)"), f"{traffic.get(served['name'], 0)}%"))
    print_table(("served entity", "provider", "model", "base URL", "key", "traffic"), rows)
    gateway = endpoint.get("ai_gateway", {})
    console.print(f"  rate limits: {_limits(endpoint)}", highlight=False)
    console.print(f"  fallbacks: {'on' if gateway.get('fallback_config', {}).get('enabled') else 'off'}", highlight=False)


@app.command()
@handle_errors
def delete(name: str, yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
           host: HostOption = None, home: HomeOption = None) -> None:
    """Delete an LLM endpoint and its objects in MLflow's AI Gateway (keys it stored included)."""
    client = connect(host, home)
    if not _is_llm(client.get_endpoint(name)):
        fail(f"{name} is an agent endpoint; delete it with `agentwharf endpoints delete {name}`")
    if not yes:
        typer.confirm(f"Delete LLM endpoint {name}?", abort=True)
    client.delete_endpoint(name)
    console.print(f"Deleted LLM endpoint {name}.")


@app.command()
@handle_errors
def limit(
    name: str = typer.Argument(..., help="Endpoint name (an agent endpoint too: calls only)"),
    calls: int = typer.Option(None, "--calls", help="Calls per minute"),
    tokens: int = typer.Option(None, "--tokens", help="Tokens per minute (LLM endpoints)"),
    key: str = typer.Option("user", "--key", help="endpoint, user or service_principal"),
    principal: str = typer.Option(None, "--principal", help="The user or service principal (default: each caller)"),
    clear: bool = typer.Option(False, "--clear", help="Remove every rate limit"),
    host: HostOption = None, home: HomeOption = None, as_json: JsonOption = False,
) -> None:
    """Set one rate limit (replacing the one with the same key and principal) or clear them."""
    client = connect(host, home)
    settings = client.get_ai_gateway(name)
    limits = [] if clear else [x for x in settings.get("rate_limits", [])
                               if (x.get("key"), x.get("principal")) != (key, principal)]
    if not clear:
        if calls is None and tokens is None:
            fail("give --calls and/or --tokens, or --clear")
        new = {"key": key, "renewal_period": "minute", **({"principal": principal} if principal else {}),
               **({"calls": calls} if calls is not None else {}), **({"tokens": tokens} if tokens is not None else {})}
        limits.append(new)
    stored = client.put_ai_gateway(name, {**settings, "rate_limits": limits})
    if as_json:
        print_json(stored)
        return
    console.print(f"Rate limits of {name}: {_limits({'ai_gateway': stored})}", highlight=False)

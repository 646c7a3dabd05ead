"""The core never imports the CLI or its UI libraries: only src/agentwharf/cli/ may."""

import ast
from pathlib import Path

import agentwharf

PACKAGE_DIR = Path(agentwharf.__file__).resolve().parent
CLI_DIR = PACKAGE_DIR / "cli"
FORBIDDEN = ("typer", "rich", "agentwharf.cli")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module an ``import`` or ``from ... import`` names, relative imports resolved."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def is_forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def core_files() -> list[Path]:
    return [p for p in sorted(PACKAGE_DIR.rglob("*.py")) if CLI_DIR not in p.parents]


def test_core_does_not_import_cli_or_ui_libraries():
    files = core_files()
    assert len(files) > 20  # the walk found the package, not an empty folder
    offenders = {}
    for path in files:
        bad = sorted(
            m for m in imported_modules(path.read_text(), module_name(path), path.name == "__init__.py")
            if is_forbidden(m)
        )
        if bad:
            offenders[str(path.relative_to(PACKAGE_DIR))] = bad
    assert offenders == {}


WEB_DIR = PACKAGE_DIR / "web"
PLATFORM_DIR = PACKAGE_DIR / "platform"
WEB_ONLY = ("agentwharf.web", "jinja2", "markdown_it")


def test_only_the_platform_composes_the_web_layer():
    """The pages are an outer layer like the CLI: the core (control, serving, auth, tracing,
    store, ...) never imports them nor their template libraries; the platform (the composition
    root) mounts them."""
    files = [p for p in core_files() if WEB_DIR not in p.parents and PLATFORM_DIR not in p.parents]
    assert len(files) > 20
    offenders = {}
    for path in files:
        found = imported_modules(path.read_text(), module_name(path), path.name == "__init__.py")
        bad = sorted(m for m in found if any(m == f or m.startswith(f + ".") for f in WEB_ONLY))
        if bad:
            offenders[str(path.relative_to(PACKAGE_DIR))] = bad
    assert offenders == {}


def test_the_web_layer_does_not_reach_into_the_cli():
    files = sorted(WEB_DIR.rglob("*.py"))
    assert files
    for path in files:
        found = imported_modules(path.read_text(), module_name(path), path.name == "__init__.py")
        assert not any(is_forbidden(m) for m in found), path


def test_checker_catches_every_forbidden_import_form():
    samples = {
        "import typer": "typer",
        "import rich.console": "rich.console",
        "from rich import print": "rich",
        "from agentwharf.cli.main import main": "agentwharf.cli.main",
        "from agentwharf import cli": "agentwharf.cli",
        "from ..cli import output": "agentwharf.cli",
        "def f():\n    import typer": "typer",
    }
    for source, expected in samples.items():
        found = imported_modules(source, "agentwharf.serving.gateway")
        assert expected in found, source
        assert any(is_forbidden(m) for m in found), source


def test_checker_allows_lookalikes():
    found = imported_modules("import richer\nimport typers\nfrom agentwharf import client", "agentwharf.agents")
    assert not any(is_forbidden(m) for m in found)


#: What a worker may import besides the standard library and agentwharf: it runs inside each
#: model's own environment, which holds the model's requirements, mlflow (and what mlflow
#: depends on: pydantic, opentelemetry), and orjson (added); uvloop is optional.
WORKER_THIRD_PARTY = {"mlflow", "opentelemetry", "orjson", "pydantic", "uvloop"}


def _agentwharf_closure(start: str) -> dict[str, set[str]]:
    """Every agentwharf module ``start`` imports, directly or not, with what each imports."""

    seen: dict[str, set[str]] = {}
    todo = [start]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        path = PACKAGE_DIR.parent / (module.replace(".", "/") + ".py")
        is_package = not path.exists()
        if is_package:
            path = PACKAGE_DIR.parent / module.replace(".", "/") / "__init__.py"
        if not path.exists():
            continue  # a name imported from a module, not a module
        seen[module] = imported_modules(path.read_text(), module, is_package)
        todo += [m for m in seen[module] if m.startswith("agentwharf")]
        # A module's parent packages run first on import.
        todo += [".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)]
    return seen


def test_the_worker_imports_nothing_a_model_environment_lacks():
    import sys

    closure = _agentwharf_closure("agentwharf.serving.worker")
    assert "agentwharf.serving.interfaces.chat_agent" in closure or "agentwharf.serving.interfaces" in closure
    third_party = {name.split(".")[0] for imports in closure.values() for name in imports
                   if not name.startswith("agentwharf") and name.split(".")[0] not in sys.stdlib_module_names}
    assert third_party <= WORKER_THIRD_PARTY, sorted(third_party - WORKER_THIRD_PARTY)
    assert not any(m.startswith(("agentwharf.control", "agentwharf.platform", "agentwharf.auth", "agentwharf.store"))
                   for m in closure)


PYPROJECT = PACKAGE_DIR.parents[1] / "pyproject.toml"


def _lint_imports(config: Path) -> int:
    from importlinter.cli import lint_imports

    return lint_imports(config_filename=str(config), no_cache=True, no_logo=True)


def test_the_import_contracts_in_pyproject_hold():
    """import-linter's contracts (pyproject.toml, [tool.importlinter]): the core never imports
    the CLI or the pages; the store imports no API; databricks_compat sits on the control
    plane, never under it; the serving split's layers. ``lint-imports`` prints which import
    breaks a contract."""
    assert PYPROJECT.exists()
    assert _lint_imports(PYPROJECT) == 0


def test_import_linter_sees_a_broken_contract(tmp_path):
    # Guards the test above: the platform does import the control plane, so forbidding it fails.
    config = tmp_path / "broken.toml"
    config.write_text('[tool.importlinter]\nroot_package = "agentwharf"\n\n[[tool.importlinter.contracts]]\n'
                      'name = "deliberately broken"\ntype = "forbidden"\nsource_modules = ["agentwharf.platform"]\n'
                      'forbidden_modules = ["agentwharf.control"]\n')
    assert _lint_imports(config) == 1

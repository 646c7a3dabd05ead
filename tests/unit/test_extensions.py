"""agentwharf.extensions: every swappable part documented, every implementation matching its
Protocol, every setting real and in the README (datasette's test_plugins checks its hookspecs
the same way)."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

from agentwharf import extensions
from agentwharf.extensions import EXTENSION_POINTS
from agentwharf.settings import PlatformSettings

README = Path(__file__).resolve().parents[2] / "README.md"


def load(dotted: str):
    module, _, attribute = dotted.partition(":")
    return getattr(importlib.import_module(module), attribute)


def protocol_members(protocol: type) -> dict[str, object]:
    return {name: value for name, value in vars(protocol).items()
            if not name.startswith("_") and (inspect.isfunction(value) or isinstance(value, property))}


def conformance_problems(protocol: type, implementation: type) -> list[str]:
    """What ``implementation`` lacks or does differently from ``protocol``, in words."""
    problems = []
    init_source = inspect.getsource(implementation.__init__) if "__init__" in vars(implementation) else ""
    for name, member in protocol_members(protocol).items():
        if isinstance(member, property):
            if not hasattr(implementation, name) and f"self.{name} " not in init_source and f"self.{name}:" not in init_source:
                problems.append(f"{implementation.__name__} has no attribute {name}")
            continue
        found = getattr(implementation, name, None)
        if not callable(found):
            problems.append(f"{implementation.__name__} has no {name}()")
            continue
        if inspect.iscoroutinefunction(member) != inspect.iscoroutinefunction(found):
            problems.append(f"{implementation.__name__}.{name} is {'not ' if inspect.iscoroutinefunction(member) else ''}async")
        wanted = [p for p in inspect.signature(member).parameters.values() if p.name != "self"]
        given = [p for p in inspect.signature(found).parameters.values() if p.name != "self"]
        if [p.name for p in given[:len(wanted)]] != [p.name for p in wanted]:
            problems.append(f"{implementation.__name__}.{name}{inspect.signature(found)} does not take {[p.name for p in wanted]}")
        elif any(p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                 for p in given[len(wanted):]):
            problems.append(f"{implementation.__name__}.{name} needs more arguments than the protocol gives")
    return problems


def test_every_protocol_is_an_extension_point_and_every_point_a_protocol():
    protocols = {obj for obj in vars(extensions).values() if inspect.isclass(obj) and getattr(obj, "_is_protocol", False)
                 and obj.__module__ == extensions.__name__}
    assert protocols == {point.protocol for point in EXTENSION_POINTS}
    assert len({point.name for point in EXTENSION_POINTS}) == len(EXTENSION_POINTS) == 5
    assert {point.name for point in EXTENSION_POINTS} == {"database", "artifact store", "worker runtime", "trace sink",
                                                         "token backend"}


@pytest.mark.parametrize("point", EXTENSION_POINTS, ids=lambda p: p.name)
def test_every_point_and_every_call_is_documented(point):
    assert (point.protocol.__doc__ or "").strip(), f"{point.protocol.__name__} has no docstring"
    assert point.notes.strip() and point.implementations
    members = protocol_members(point.protocol)
    assert members, f"{point.protocol.__name__} declares no call"
    for name, member in members.items():
        doc = member.fget.__doc__ if isinstance(member, property) else member.__doc__
        assert (doc or "").strip(), f"{point.protocol.__name__}.{name} is undocumented"
    assert point.name in extensions.__doc__


@pytest.mark.parametrize("point", EXTENSION_POINTS, ids=lambda p: p.name)
def test_every_implementation_matches_its_protocol(point):
    for dotted in point.implementations:
        assert conformance_problems(point.protocol, load(dotted)) == [], dotted
    assert callable(load(point.chosen_by))


@pytest.mark.parametrize("point", [p for p in EXTENSION_POINTS if p.setting], ids=lambda p: p.name)
def test_settings_that_choose_an_implementation_are_real_and_in_the_readme(point):
    assert point.setting in PlatformSettings.model_fields
    variable = f"AGENTWHARF_{point.setting.upper()}"
    assert re.search(rf"^\| `{variable}`", README.read_text(), re.M), f"{variable} is not in README's configuration table"


def test_the_readme_lists_every_extension_point():
    text = README.read_text()
    section = text.split("## Extension points", 1)[1].split("\n## ", 1)[0]
    for point in EXTENSION_POINTS:
        assert f"**{point.name}**" in section, point.name


def test_the_conformance_check_sees_what_is_missing_or_changed():
    class Missing:
        def check_capacity(self) -> None: ...

    class Renamed:
        def check_capacity(self) -> None: ...

        async def record(self, head, record) -> None: ...

    class NotAsync:
        def check_capacity(self) -> None: ...

        def record(self, header, record) -> None: ...

    class NeedsMore:
        def check_capacity(self, now) -> None: ...

        async def record(self, header, record) -> None: ...

    class NoVersions:
        def __init__(self):
            self.other = {}

    assert conformance_problems(extensions.TraceSink, Missing) == ["Missing has no record()"]
    assert "does not take ['header', 'record']" in conformance_problems(extensions.TraceSink, Renamed)[0]
    assert conformance_problems(extensions.TraceSink, NotAsync) == ["NotAsync.record is not async"]
    assert conformance_problems(extensions.TraceSink, NeedsMore) == ["NeedsMore.check_capacity needs more arguments than the protocol gives"]
    assert "NoVersions has no attribute versions" in conformance_problems(extensions.WorkerRuntime, NoVersions)

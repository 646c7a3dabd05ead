"""SCIM 2.0 (RFC 7644) as Databricks' clients use it, over plain JSON resources: list queries
(``filter``, ``sortBy``/``sortOrder``, ``startIndex``/``count``, ``attributes``/
``excludedAttributes``) and PatchOp operations. Pure functions; the routes (``scim_routes``)
render resources and apply the result.

Attribute names are case-insensitive and string comparisons ignore case, as the RFC's core
schema says for ``userName`` and ``displayName``. Supported filter operators: ``eq ne co sw
ew pr gt ge lt le``, ``and``, ``or``, ``not (...)`` and parentheses. Paging is 1-based: the
SDK pages until it gets an empty page, so ``startIndex`` past the end must answer none.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from agentwharf.errors import InvalidParameter

LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
#: The most resources one page holds (the SDK asks for 10000 and pages on).
MAX_COUNT = 10000
#: Multi-valued attributes: lists of ``{"value": ...}`` objects.
MULTI_VALUED = ("emails", "entitlements", "roles", "members", "groups")

Resource = dict[str, Any]
Predicate = Callable[[Resource], bool]


# ---- query parameters ------------------------------------------------------------------------


def int_param(raw: str | None, name: str, default: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidParameter(f"{name} must be a whole number, got {raw!r}") from None


def page(resources: list[Resource], start_index: int, count: int) -> tuple[list[Resource], int]:
    """One page: resources from the 1-based ``start_index`` (below 1 counts as 1), at most
    ``count`` of them (negative counts as 0, above MAX_COUNT as MAX_COUNT)."""
    start = max(1, start_index)
    count = min(max(0, count), MAX_COUNT)
    return resources[start - 1:start - 1 + count], start


def list_response(resources: list[Resource], total: int, start: int) -> dict[str, Any]:
    return {"schemas": [LIST_SCHEMA], "totalResults": total, "startIndex": start, "itemsPerPage": len(resources),
            "Resources": resources}


def sort(resources: list[Resource], sort_by: str | None, sort_order: str | None) -> list[Resource]:
    """Sorted by an attribute path (``userName``, ``name.givenName``, ``emails``); resources
    without it come last."""
    order = (sort_order or "ascending").lower()
    if order not in ("ascending", "descending"):
        raise InvalidParameter(f"sortOrder must be ascending or descending, got {sort_order!r}")
    if not sort_by:
        return resources
    path = _path(sort_by)
    present = [r for r in resources if values_at(r, path)]
    present.sort(key=lambda r: min(_sort_key(v) for v in values_at(r, path)), reverse=order == "descending")
    # Resources without the attribute come last whatever the order.
    return present + [r for r in resources if not values_at(r, path)]


def _sort_key(value: Any) -> tuple:
    """Numbers (and ids, which are numeric strings) by value, before text ignoring case."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value, "")
    text = str(value)
    return (0, int(text), "") if text.isdigit() else (1, 0, text.lower())


def project(resource: Resource, attributes: str | None, excluded: str | None) -> Resource:
    """Keep only ``attributes`` (comma-separated, ``emails.value`` form allowed) or drop
    ``excluded``; ``id`` and ``schemas`` always stay."""
    if attributes:
        wanted = [_path(a) for a in attributes.split(",") if a.strip()]
        kept: Resource = {}
        for key, value in resource.items():
            subs = [p[1:] for p in wanted if p[0] == key.lower()]
            if key in ("id", "schemas") or [] in subs:
                kept[key] = value
            elif subs:
                kept[key] = _only_subattributes(value, {s[0] for s in subs})
        return kept
    if excluded:
        dropped = {_path(a)[0] for a in excluded.split(",") if a.strip()}
        return {k: v for k, v in resource.items() if k in ("id", "schemas") or k.lower() not in dropped}
    return resource


def _only_subattributes(value: Any, names: set[str]) -> Any:
    if isinstance(value, list):
        return [_only_subattributes(v, names) for v in value]
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k.lower() in names}
    return value


def _path(text: str) -> list[str]:
    """``urn:...:User:emails.value`` -> ["emails", "value"], lower case."""
    text = text.strip()
    if text.lower().startswith("urn:"):
        text = text.rsplit(":", 1)[1]
    if not re.fullmatch(r"[A-Za-z$][\w$]*(\.[A-Za-z$][\w$]*)?", text):
        raise InvalidParameter(f"Invalid SCIM attribute path {text!r}")
    return text.lower().split(".")


def values_at(resource: Resource, path: list[str]) -> list[Any]:
    """Every value at ``path`` (lower case); a multi-valued attribute gives each element's
    sub-attribute, or each element's ``value`` when no sub-attribute is named."""
    current: list[Any] = [resource]
    for i, part in enumerate(path):
        found = []
        for item in current:
            if isinstance(item, dict):
                value = next((v for k, v in item.items() if k.lower() == part), None)
                if isinstance(value, list):
                    found.extend(value)
                elif value is not None:
                    found.append(value)
        current = found
    if current and all(isinstance(v, dict) for v in current):
        current = [v.get("value") for v in current if v.get("value") is not None]
    return current


# ---- filters ---------------------------------------------------------------------------------

_TOKEN = re.compile(r'\s*(?:(?P<lpar>\()|(?P<rpar>\))|(?P<string>"(?:[^"\\]|\\.)*")|(?P<word>[^\s()"]+))')
_OPERATORS = {"eq", "ne", "co", "sw", "ew", "pr", "gt", "ge", "lt", "le"}


def parse_filter(text: str | None) -> Predicate:
    """A predicate for a SCIM filter (``userName eq "alice"``, ``displayName co "team" and
    active eq true``); None or empty: everything matches.

    Raises:
        InvalidParameter: the filter does not parse (the message says where).
    """
    if text is None or not text.strip():
        return lambda _resource: True
    tokens = _tokenize(text)
    parser = _Parser(tokens, text)
    predicate = parser.expression()
    if parser.position != len(tokens):
        raise parser.error("unexpected text")
    return predicate


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            if text[position:].strip():
                raise InvalidParameter(f"Invalid SCIM filter {text!r}: cannot read {text[position:]!r}")
            break
        kind = match.lastgroup
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


class _Parser:
    """filter := or ; or := and ("or" and)* ; and := unary ("and" unary)* ;
    unary := "not" "(" or ")" | "(" or ")" | attr op [value]"""

    def __init__(self, tokens: list[tuple[str, str]], text: str):
        self.tokens = tokens
        self.text = text
        self.position = 0

    def error(self, what: str) -> InvalidParameter:
        near = " ".join(value for _, value in self.tokens[self.position:self.position + 3]) or "the end"
        return InvalidParameter(f"Invalid SCIM filter {self.text!r}: {what} near {near!r}")

    def peek_word(self) -> str | None:
        if self.position < len(self.tokens) and self.tokens[self.position][0] == "word":
            return self.tokens[self.position][1].lower()
        return None

    def take(self) -> tuple[str, str]:
        if self.position >= len(self.tokens):
            raise self.error("unexpected end")
        token = self.tokens[self.position]
        self.position += 1
        return token

    def expression(self) -> Predicate:
        terms = [self.conjunction()]
        while self.peek_word() == "or":
            self.position += 1
            terms.append(self.conjunction())
        return terms[0] if len(terms) == 1 else (lambda r: any(t(r) for t in terms))

    def conjunction(self) -> Predicate:
        terms = [self.unary()]
        while self.peek_word() == "and":
            self.position += 1
            terms.append(self.unary())
        return terms[0] if len(terms) == 1 else (lambda r: all(t(r) for t in terms))

    def unary(self) -> Predicate:
        negate = self.peek_word() == "not"
        if negate:
            self.position += 1
        kind, value = self.take()
        if kind == "lpar":
            inner = self.expression()
            if self.take()[0] != "rpar":
                raise self.error("missing ')'")
            return (lambda r: not inner(r)) if negate else inner
        if negate:
            raise self.error("'not' must be followed by '('")
        if kind != "word":
            raise self.error("expected an attribute")
        return self.comparison(value)

    def comparison(self, attribute: str) -> Predicate:
        path = _path(attribute)
        kind, operator = self.take()
        operator = operator.lower()
        if kind != "word" or operator not in _OPERATORS:
            raise self.error(f"unknown operator {operator!r} (use one of {', '.join(sorted(_OPERATORS))})")
        if operator == "pr":
            return lambda r: bool(values_at(r, path))
        expected = _literal(*self.take(), self)
        if operator == "ne":
            return lambda r: not any(_COMPARE["eq"](v, expected) for v in values_at(r, path))
        test = _COMPARE[operator]
        return lambda r: any(test(v, expected) for v in values_at(r, path))


def _literal(kind: str, value: str, parser: _Parser) -> Any:
    if kind == "string":
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    if kind != "word":
        raise parser.error("expected a value")
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "null":
        return None
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        raise parser.error(f"{value!r} is not a value (quote strings)") from None


def _same_kind(have: Any, want: Any) -> tuple[Any, Any] | None:
    """Both sides comparable, strings case-insensitively; ids are strings compared with numbers."""
    if isinstance(want, bool) or isinstance(have, bool):
        if isinstance(have, str) and have.lower() in ("true", "false"):
            have = have.lower() == "true"
        return (have, want) if isinstance(have, bool) and isinstance(want, bool) else None
    if isinstance(want, (int, float)) and isinstance(have, str):
        return (have, str(want)) if have == str(want) else (have.lower(), str(want).lower())
    if isinstance(want, str) and isinstance(have, str):
        return have.lower(), want.lower()
    if isinstance(want, (int, float)) and isinstance(have, (int, float)):
        return have, want
    return None


def _compare(test: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(have: Any, want: Any) -> bool:
        pair = _same_kind(have, want)
        if pair is None:
            return want is None and have is None
        try:
            return test(*pair)
        except TypeError:
            return False
    return compare


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": _compare(lambda a, b: a == b),
    "co": _compare(lambda a, b: isinstance(a, str) and b in a),
    "sw": _compare(lambda a, b: isinstance(a, str) and a.startswith(b)),
    "ew": _compare(lambda a, b: isinstance(a, str) and a.endswith(b)),
    "gt": _compare(lambda a, b: a > b),
    "ge": _compare(lambda a, b: a >= b),
    "lt": _compare(lambda a, b: a < b),
    "le": _compare(lambda a, b: a <= b),
}


# ---- PatchOp ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """One PatchOp operation: ``op`` add/remove/replace, ``attribute`` (as sent) or None
    for "the resource itself", ``selector`` the values a ``[value eq "x"]`` path picks."""

    op: str
    attribute: str | None
    selector: Predicate | None
    value: Any


_PATCH_PATH = re.compile(r"\s*(?P<attribute>[A-Za-z][\w]*)\s*(?:\[(?P<filter>.*)\])?\s*", re.DOTALL)


def operations(body: dict[str, Any]) -> list[Operation]:
    """The body's ``Operations``, checked. Raises InvalidParameter naming the bad one."""
    raw = body.get("Operations", body.get("operations"))
    if not isinstance(raw, list) or not raw:
        raise InvalidParameter("A SCIM PATCH needs 'Operations': a list of {op: add|remove|replace, path, value}")
    parsed = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise InvalidParameter(f"Operations[{i}] must be an object")
        op = str(entry.get("op", "")).lower()
        if op not in ("add", "remove", "replace"):
            raise InvalidParameter(f"Operations[{i}].op must be add, remove or replace, got {entry.get('op')!r}")
        attribute, selector = _patch_path(entry.get("path"), i)
        if op == "remove" and attribute is None:
            raise InvalidParameter(f"Operations[{i}]: remove needs a path")
        if attribute is None and not isinstance(entry.get("value"), dict):
            raise InvalidParameter(f"Operations[{i}]: without a path, value must be an object of attributes")
        if op != "remove" and "value" not in entry:
            raise InvalidParameter(f"Operations[{i}]: {op} needs a value")
        parsed.append(Operation(op, attribute, selector, entry.get("value")))
    return parsed


def _patch_path(path: Any, i: int) -> tuple[str | None, Predicate | None]:
    if path is None or path == "":
        return None, None
    if not isinstance(path, str):
        raise InvalidParameter(f"Operations[{i}].path must be a string")
    text = path.rsplit(":", 1)[1] if path.lower().startswith("urn:") else path
    match = _PATCH_PATH.fullmatch(text)
    if match is None:
        raise InvalidParameter(f"Operations[{i}].path {path!r} is not a path agentwharf understands "
                               "(an attribute, or attribute[value eq \"...\"])")
    selector = parse_filter(match["filter"]) if match["filter"] is not None else None
    return match["attribute"], selector


def apply(resource: Resource, ops: Iterable[Operation], names: dict[str, str]) -> Resource:
    """The resource's writable attributes after ``ops``. ``resource`` holds them under their
    canonical names; ``names`` maps lower-case names to canonical ones (and is the list of what
    may be written: anything else is refused)."""
    result = {k: (list(v) if isinstance(v, list) else v) for k, v in resource.items()}
    for op in ops:
        if op.attribute is None:
            for key, value in op.value.items():
                _apply_one(result, op.op, _canonical(key, names), None, value)
        else:
            _apply_one(result, op.op, _canonical(op.attribute, names), op.selector, op.value)
    return result


def _canonical(name: str, names: dict[str, str]) -> str:
    key = name.rsplit(":", 1)[-1].lower()
    if key not in names:
        raise InvalidParameter(f"Attribute {name!r} cannot be changed here; changeable: {', '.join(sorted(names.values()))}")
    return names[key]


def _apply_one(resource: Resource, op: str, key: str, selector: Predicate | None, value: Any) -> None:
    multi = key.lower() in MULTI_VALUED
    if not multi:
        if selector is not None:
            raise InvalidParameter(f"{key} is single-valued; a [filter] path applies to multi-valued attributes only")
        resource[key] = None if op == "remove" else value
        return
    current = list(resource.get(key) or [])
    items = _items(key, value) if value is not None else []
    if op == "remove":
        if selector is not None:
            current = [item for item in current if not selector(item)]
        elif items:
            gone = {_value_key(i) for i in items}
            current = [item for item in current if _value_key(item) not in gone]
        else:
            current = []
    elif op == "replace" and selector is None:
        current = items
    elif op == "replace":
        current = [item for item in current if not selector(item)] + items
    else:
        known = {_value_key(i) for i in current}
        current += [i for i in items if _value_key(i) not in known]
    resource[key] = current


def _items(key: str, value: Any) -> list[dict]:
    values = value if isinstance(value, list) else [value]
    items = []
    for item in values:
        if isinstance(item, str):
            item = {"value": item}
        if not isinstance(item, dict) or not ("value" in item or "display" in item):
            raise InvalidParameter(f"{key} values must be objects with a 'value', got {item!r}")
        items.append(item)
    return items


def _value_key(item: dict) -> str:
    return str(item.get("value", item.get("display", ""))).lower()


def as_bool(value: Any, name: str) -> bool:
    """SCIM booleans as clients send them: true, "true", or Databricks' [{"value": "false"}]."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        value = value[0].get("value")
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InvalidParameter(f"{name} must be true or false, got {value!r}")

"""agentwharf.serving.routing: picking a worker pool by traffic percentage."""

import random
from collections import Counter

from agentwharf.serving.routing import EndpointRoutes, RouteTable, worker_key


def routes(*split):
    keys = {name: worker_key("ep", name) for name, _ in split}
    return EndpointRoutes("ep", keys, tuple((keys[name], pct) for name, pct in split))


def test_worker_key_joins_endpoint_and_entity():
    assert worker_key("agents_echo", "echo_1") == "agents_echo/echo_1"


def test_pick_by_draw_follows_the_percentages():
    table = routes(("a", 20), ("b", 30), ("c", 50))
    assert table.pick(0) == "ep/a"
    assert table.pick(19.999) == "ep/a"
    assert table.pick(20) == "ep/b"
    assert table.pick(49.9) == "ep/b"
    assert table.pick(50) == "ep/c"
    assert table.pick(99.999) == "ep/c"


def test_single_route_always_wins():
    table = routes(("only", 100))
    assert {table.pick(d) for d in (0, 50, 99.9)} == {"ep/only"}
    assert table.pick() == "ep/only"


def test_zero_percent_entity_is_reachable_by_name_but_never_picked():
    keys = {"old": "ep/old", "new": "ep/new"}
    table = EndpointRoutes("ep", keys, (("ep/new", 100),))
    assert table.entities["old"] == "ep/old"
    random.seed(1)
    assert {table.pick() for _ in range(200)} == {"ep/new"}


def test_no_routes_picks_nothing():
    assert EndpointRoutes("ep", {"a": "ep/a"}, ()).pick() is None
    assert EndpointRoutes("ep", {}, ()).pick(10) is None


def test_random_split_approximates_percentages():
    table = routes(("a", 10), ("b", 90))
    random.seed(12345)
    counts = Counter(table.pick() for _ in range(10_000))
    assert set(counts) == {"ep/a", "ep/b"}
    assert 800 <= counts["ep/a"] <= 1200
    assert 8800 <= counts["ep/b"] <= 9200


def test_route_table_swaps_whole_endpoint_routes():
    table = RouteTable()
    table.set(routes(("a", 100)))
    table.set(routes(("b", 100)))
    assert table.get("ep").pick() == "ep/b"
    assert table.names() == ["ep"]
    table.remove("ep")
    table.remove("ep")  # removing twice is harmless
    assert table.get("ep") is None
    assert table.names() == []

"""agentwharf.control.inference: reading the inference table with filters and cursor paging."""

import base64

import orjson
import pytest

from agentwharf.control import inference
from agentwharf.control.inference import MAX_PAGE, parse_time, query
from agentwharf.errors import InvalidParameter
from agentwharf.store.database import Database, migrate
from agentwharf.store.models import InferenceLog

BASE_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z


@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path}/x.db"
    migrate(url)
    database = Database(url)
    yield database
    database.dispose()


def insert(db, *rows):
    with db.session() as session:
        for request_id, ts, status, *rest in rows:
            endpoint = rest[0] if rest else "ep"
            session.add(InferenceLog(request_id=request_id, timestamp_ms=ts, endpoint=endpoint, status_code=status,
                                     latency_ms=1.5, request='{"q":1}', response=None, trace_id=f"tr-{request_id}"))


@pytest.fixture
def filled(db):
    # 25 rows on "ep", several sharing a timestamp, inserted out of order; 3 rows elsewhere.
    rows = []
    for i in range(25):
        status = (200, 200, 404, 500, 503)[i % 5]
        rows.append((f"r{i:02d}", BASE_MS + (i // 3) * 1000, status))
    insert(db, *reversed(rows))
    insert(db, ("x1", BASE_MS, 200, "other"), ("x2", BASE_MS + 1, 500, "other"), ("x3", BASE_MS + 2, 200, "other"))
    return db


def ids(answer):
    return [row["request_id"] for row in answer["rows"]]


def expected_order(db, endpoint="ep"):
    return ids(query(db, endpoint, max_results=str(MAX_PAGE)))


# --- parse_time ---------------------------------------------------------------------------

def test_parse_time_epoch_milliseconds():
    assert parse_time("1704067200123", "since") == 1_704_067_200_123
    assert parse_time("0", "since") == 0


def test_parse_time_iso_with_z_offset_and_naive_as_utc():
    assert parse_time("2024-01-01T00:00:00Z", "since") == BASE_MS
    assert parse_time("2024-01-01T00:00:00.250Z", "since") == BASE_MS + 250
    assert parse_time("2024-01-01T00:00:00", "since") == BASE_MS
    assert parse_time("2024-01-01", "since") == BASE_MS
    assert parse_time("2024-01-01T02:00:00+02:00", "since") == BASE_MS
    assert parse_time("2023-12-31T19:00:00-05:00", "until") == BASE_MS


def test_parse_time_empty_is_no_bound():
    assert parse_time(None, "since") is None
    assert parse_time("", "until") is None


@pytest.mark.parametrize("value", ["yesterday", "1e3", "12-3", "2024-13-01", "-5", "2024-01-01T25:00:00"])
def test_parse_time_bad_input_names_the_parameter(value):
    with pytest.raises(InvalidParameter) as raised:
        parse_time(value, "until")
    assert raised.value.http_status == 400
    assert "until" in raised.value.message and repr(value) in raised.value.message


# --- query: filters -----------------------------------------------------------------------

def test_rows_of_one_endpoint_oldest_first_with_every_column(filled):
    answer = query(filled, "ep")
    assert "next_page_token" not in answer
    assert len(answer["rows"]) == 25
    keys = [(r["timestamp_ms"], r["request_id"]) for r in answer["rows"]]
    assert keys == sorted(keys)
    assert {r["endpoint"] for r in answer["rows"]} == {"ep"}
    first = answer["rows"][0]
    assert first == {
        "request_id": "r00", "client_request_id": None, "timestamp_ms": BASE_MS, "endpoint": "ep", "served_entity": None, "model_name": None,
        "model_version": None, "status_code": 200, "latency_ms": 1.5, "caller": None, "route": None, "stream": False,
        "request": '{"q":1}', "response": None, "request_truncated": False, "response_truncated": False,
        "trace_id": "tr-r00", "error": None,
        "prompt_tokens": None, "completion_tokens": None, "total_tokens": None, "usage_estimated": None,
        "shadow_of": None,
    }
    assert ids(query(filled, "other")) == ["x1", "x2", "x3"]
    assert query(filled, "nobody") == {"rows": []}
    assert inference.count(filled, "ep") == 25 and inference.count(filled, "nobody") == 0


@pytest.mark.parametrize("status, codes", [("200", {200}), ("404", {404}), ("5xx", {500, 503}), ("5XX", {500, 503}),
                                           ("4xx", {404}), ("2xx", {200}), ("error", {404, 500, 503}), ("3xx", set())])
def test_status_filters(filled, status, codes):
    rows = query(filled, "ep", status=status)["rows"]
    assert {r["status_code"] for r in rows} == codes
    everything = query(filled, "ep")["rows"]
    assert len(rows) == sum(1 for r in everything if r["status_code"] in codes)


@pytest.mark.parametrize("status", ["ok", "5x", "x5x", "2.0"])
def test_bad_status_is_invalid(filled, status):
    with pytest.raises(InvalidParameter) as raised:
        query(filled, "ep", status=status)
    assert "status" in raised.value.message


def test_since_is_inclusive_and_until_exclusive(filled):
    rows = query(filled, "ep", since=str(BASE_MS + 1000), until=str(BASE_MS + 3000))["rows"]
    assert {r["timestamp_ms"] for r in rows} == {BASE_MS + 1000, BASE_MS + 2000}
    assert ids({"rows": rows}) == ["r03", "r04", "r05", "r06", "r07", "r08"]
    iso = query(filled, "ep", since="2024-01-01T00:00:01Z", until="2024-01-01T00:00:03")["rows"]
    assert iso == rows


def test_bad_since_is_invalid(filled):
    with pytest.raises(InvalidParameter) as raised:
        query(filled, "ep", since="last tuesday")
    assert "since" in raised.value.message


def test_out_of_range_time_is_invalid_not_a_server_error(filled):
    # All digits, so it passes as epoch milliseconds, but no database integer holds it.
    with pytest.raises(InvalidParameter) as raised:
        query(filled, "ep", since="9" * 25)
    assert "since" in raised.value.message


# --- query: paging ------------------------------------------------------------------------

@pytest.mark.parametrize("page", [1, 2, 3, 4, 7, 24, 25])
def test_pages_are_disjoint_ordered_and_complete(filled, page):
    seen, token, pages = [], None, 0
    while True:
        answer = query(filled, "ep", max_results=str(page), page_token=token)
        assert 1 <= len(answer["rows"]) <= page
        seen.extend(ids(answer))
        pages += 1
        token = answer.get("next_page_token")
        if token is None:
            break
        assert len(answer["rows"]) == page
    assert seen == expected_order(filled)
    assert len(set(seen)) == 25
    assert pages == -(-25 // page)


def test_paging_with_a_filter(filled):
    seen, token = [], None
    while True:
        answer = query(filled, "ep", status="5xx", max_results="2", page_token=token)
        seen.extend(ids(answer))
        token = answer.get("next_page_token")
        if token is None:
            break
    assert seen == ids(query(filled, "ep", status="5xx"))
    assert len(seen) == 10


def test_rows_arriving_later_show_up_on_the_next_page(filled):
    first = query(filled, "ep", max_results="20")
    insert(filled, ("r99", BASE_MS + 100_000, 200), ("a-old", BASE_MS - 5, 200))
    rest, token = [], first["next_page_token"]
    while token:
        answer = query(filled, "ep", max_results="20", page_token=token)
        rest.extend(ids(answer))
        token = answer.get("next_page_token")
    # The cursor is a position: a newer row is reached, an older one is not replayed.
    assert ids(first) == [f"r{i:02d}" for i in range(20)]
    assert rest == ["r20", "r21", "r22", "r23", "r24", "r99"]
    assert expected_order(filled)[0] == "a-old"


def test_page_token_is_the_last_rows_position(filled):
    answer = query(filled, "ep", max_results="4")
    last = answer["rows"][-1]
    decoded = orjson.loads(base64.urlsafe_b64decode(answer["next_page_token"]))
    assert decoded == [last["timestamp_ms"], last["request_id"]]


@pytest.mark.parametrize("token", ["garbage!", "bm90IGpzb24=", base64.urlsafe_b64encode(b"[1]").decode(),
                                   base64.urlsafe_b64encode(b'{"a":1}').decode(), base64.urlsafe_b64encode(b"42").decode(),
                                   base64.urlsafe_b64encode(b'["x","y"]').decode(), "%%%"])
def test_bad_page_token_is_invalid(filled, token):
    with pytest.raises(InvalidParameter) as raised:
        query(filled, "ep", page_token=token)
    assert "page_token" in raised.value.message


def test_page_token_with_an_out_of_range_position_is_invalid(filled):
    token = base64.urlsafe_b64encode(b'[99999999999999999999999999,"x"]').decode()
    with pytest.raises(InvalidParameter):
        query(filled, "ep", page_token=token)


@pytest.mark.parametrize("value", ["0", "-1", str(MAX_PAGE + 1), "abc", "1.5"])
def test_max_results_out_of_bounds_is_invalid(filled, value):
    with pytest.raises(InvalidParameter) as raised:
        query(filled, "ep", max_results=value)
    assert "max_results" in raised.value.message


def test_max_results_bounds_and_default(db):
    insert(db, *[(f"q{i:04d}", BASE_MS + i, 200) for i in range(1001)])
    default = query(db, "ep")
    assert len(default["rows"]) == 1000 and "next_page_token" in default
    assert len(query(db, "ep", max_results="")["rows"]) == 1000
    assert len(query(db, "ep", max_results="1")["rows"]) == 1
    whole = query(db, "ep", max_results=str(MAX_PAGE))
    assert len(whole["rows"]) == 1001 and "next_page_token" not in whole
    exact = query(db, "ep", max_results="1001")
    assert len(exact["rows"]) == 1001 and "next_page_token" not in exact


def test_the_cli_exports_every_column_of_the_inference_table():
    """The CLI (client-only, no store import) lists the columns for CSV and Parquet itself."""
    from agentwharf.cli.inference import COLUMNS
    from agentwharf.store.models import InferenceLog

    assert COLUMNS == [c.name for c in InferenceLog.__table__.columns]

"""Reading functions: one by id, or a filtered listing a page at a time with a next link."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest


def test_get_returns_the_function_as_created(client, created):
    result = client.simulate_get(f"/v1/functions/{created['id']}")

    assert result.status_code == 200
    assert result.json == created


def test_get_unknown_function_is_404(client):
    result = client.simulate_get("/v1/functions/nope")

    assert result.status_code == 404
    assert "nope" in result.json["description"]


def test_unknown_path_is_404_json(client):
    result = client.simulate_get("/v2/everything")

    assert result.status_code == 404
    assert set(result.json) == {"title", "description"}


def test_unsupported_method_is_405_json(client):
    result = client.simulate_request("PUT", "/v1/functions")

    assert result.status_code == 405
    assert result.json["title"]


def test_list_filters_by_name_event_source_and_event_type(client, upload):
    upload(name="a", event_source="s3", event_type="put")
    upload(name="b", event_source="s3", event_type="delete")
    upload(name="c", event_source="cron", event_type="put")

    def names(**params):
        result = client.simulate_get("/v1/functions", params=params)
        assert result.status_code == 200
        return sorted(f["name"] for f in result.json["functions"])

    assert names() == ["a", "b", "c"]
    assert names(name="b") == ["b"]
    assert names(event_source="s3") == ["a", "b"]
    assert names(event_type="put") == ["a", "c"]
    assert names(event_source="s3", event_type="put") == ["a"]
    assert names(name="zzz") == []


def test_pagination_follows_next_links_through_every_function_once(client, upload):
    for index in range(7):
        upload(name=f"f{index}", event_source="paged")

    seen = []
    url = "/v1/functions?event_source=paged&limit=3"
    pages = 0
    while url:
        path, _, query = url.partition("?")
        result = client.simulate_get(path, query_string=query)
        assert result.status_code == 200
        seen += [f["name"] for f in result.json["functions"]]
        url = result.json["next"]
        pages += 1
        if url:
            params = parse_qs(urlsplit(url).query)
            assert params["limit"] == ["3"] and params["event_source"] == ["paged"]

    assert pages == 3
    assert sorted(seen) == [f"f{index}" for index in range(7)]


def test_last_page_has_null_next(client, created):
    result = client.simulate_get("/v1/functions", params={"limit": "1"})

    assert result.json["next"] is None
    assert len(result.json["functions"]) == 1


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=1001", "limit=ten", "marker=", "name=", "colour=blue", "limit=1&limit=2"],
)
def test_bad_listing_query_is_422(client, query):
    result = client.simulate_get("/v1/functions", query_string=query)

    assert result.status_code == 422
    assert result.json["errors"]

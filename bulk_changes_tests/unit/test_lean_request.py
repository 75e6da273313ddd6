"""A plain call's request is built as requests would prepare it (resources/lean_request.py);
anything not plain is left to requests."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from bulk_changes.resources.lean_request import HeaderCache, lean_request

SESSION_HEADERS = requests.Session().headers
OURS = {"Authorization": "Basic abc", "Accept": "application/json"}


def _requests_prepares(method: str, url: str, params: Any, data: Any, headers: Any) -> Any:
    session = requests.Session()
    return session.prepare_request(
        requests.Request(method, url, params=params, data=data, headers=headers)
    )


PLAIN = [
    ("GET", "http://127.0.0.1:9/rws/api/v1/devices/8901170427893", None, None),
    ("put", "http://jasper.example.com/rws/api/v1/devices/89011", None, b'{"status": "A"}'),
    ("GET", "https://api.rev.io/v1/Services", {"search.number": "5551234", "page": 2}, None),
    ("GET", "http://h:8080/api", {"q": "a b&c=d/é", "none": None}, None),
    ("POST", "http://h:8080", None, None),
    ("PATCH", "http://h/v1/Services/7", {}, b"[]"),
]


@pytest.mark.parametrize(("method", "url", "params", "data"), PLAIN)
def test_a_plain_call_is_built_as_requests_prepares_it(
    method: str, url: str, params: Any, data: Any
) -> None:
    merged = HeaderCache().merged(SESSION_HEADERS, OURS)
    ours = lean_request(method, url, params, data, merged)
    theirs = _requests_prepares(method, url, params, data, OURS)
    assert ours is not None
    assert (ours.method, ours.url, ours.body) == (theirs.method, theirs.url, theirs.body)
    assert dict(ours.headers) == dict(theirs.headers)


NOT_PLAIN = [
    ("GET", "http://user:pw@h/api", None),  # credentials in the URL: requests makes a header
    ("GET", "http://h/api/a%20b", None),  # requests re-quotes
    ("GET", "http://h/api/a b", None),
    ("GET", "http://H/api", None),  # requests lowercases the host
    ("GET", "http://h/api?x=1", None),  # requests merges the query
    ("GET", "http://h/api", {"ids": ["1", "2"]}),  # a list: requests repeats the key
    ("GET", "http://h/api", {"flag": True}),
    ("GET", "http://.h/api", None),  # an empty label: requests refuses it
    ("GET", "http://h:99999/api", None),  # no such port: requests refuses it
    ("GET", "http://hôte/api", None),  # requests encodes the name (IDNA)
]


@pytest.mark.parametrize(("method", "url", "params"), NOT_PLAIN)
def test_a_call_requests_would_rewrite_is_left_to_requests(
    method: str, url: str, params: Any
) -> None:
    merged = HeaderCache().merged(SESSION_HEADERS, OURS)
    assert lean_request(method, url, params, None, merged) is None


def test_a_header_requests_refuses_is_refused_as_requests_refuses_it() -> None:
    with pytest.raises(requests.exceptions.InvalidHeader):
        HeaderCache().merged(SESSION_HEADERS, {"X-Bad": "a\r\nInjected: 1"})


def test_each_call_gets_its_own_headers_from_the_cache() -> None:
    cache = HeaderCache()
    first = lean_request("PUT", "http://h/a", None, b"{}", cache.merged(SESSION_HEADERS, OURS))
    second = lean_request("GET", "http://h/a", None, None, cache.merged(SESSION_HEADERS, OURS))
    assert first is not None and second is not None
    assert first.headers["Content-Length"] == "2"
    assert "Content-Length" not in second.headers

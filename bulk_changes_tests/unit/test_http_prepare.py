"""A call's request is prepared as requests' Session would prepare it, without its
merging when the session adds nothing but headers."""

from __future__ import annotations

import requests

from bulk_changes.domain.settings import RateLimit
from bulk_changes.resources.http import HttpCaller


def _caller(session: requests.Session | None = None) -> HttpCaller:
    return HttpCaller(
        system="jasper",
        account_name="acct",
        base_url="http://127.0.0.1:9/api",
        rate_limit=RateLimit(calls_per_second=5, max_in_flight=1),
        timeout_seconds=5,
        headers={"Authorization": "Basic abc"},
        secrets=[],
        session=session,
    )


def _as_session_prepares(caller: HttpCaller, *args) -> requests.PreparedRequest:
    method, url, params, data, headers = args
    return caller.session.prepare_request(
        requests.Request(method, url, params=params, data=data, headers=headers)
    )


CALLS = [
    ("get", "http://127.0.0.1:9/api/devices/1", {"page": "2", "q": "a b"}, None, {"Accept": "x"}),
    (
        "PUT",
        "http://user:pw@127.0.0.1:9/api/devices/1",
        None,
        b'{"status": "ACTIVATED"}',
        {"Content-Type": "application/json", "Authorization": "Basic abc"},
    ),
]


def test_a_request_is_prepared_as_the_session_would_prepare_it() -> None:
    caller = _caller()
    for call in CALLS:
        ours, theirs = caller._prepare(*call), _as_session_prepares(caller, *call)
        assert (ours.method, ours.url, ours.body) == (theirs.method, theirs.url, theirs.body)
        assert dict(ours.headers) == dict(theirs.headers)


def test_a_cookie_the_vendor_set_goes_back_with_the_next_request() -> None:
    session = requests.Session()
    session.trust_env = False
    session.cookies.set("affinity", "node-2", domain="127.0.0.1", path="/")
    prepared = _caller(session)._prepare(*CALLS[0])
    assert prepared.headers["Cookie"] == "affinity=node-2"

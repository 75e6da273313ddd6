"""A vendor call's request line, headers and body, as requests would prepare them, built
without requests' preparation when the call is plain.

requests' ``PreparedRequest`` re-parses and re-quotes the URL and re-validates every
header on every call: a sixth of a call's CPU in the caller under cProfile. Our calls are
nearly all alike: the account's base URL, a path of plain characters (an ICCID, an id),
at most a few plain query parameters, the same headers every time, a JSON body. For those
the request requests would send is known without its machinery, and built here; for
anything else (characters requests would quote or normalise, credentials in the URL, a
parameter list) ``None`` says: let requests prepare it. ``bulk_changes_tests`` checks the
two agree.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from requests.structures import CaseInsensitiveDict
from requests.utils import check_header_validity

# a lowercase http(s) origin and a path requests would send as it is (no %, no space, no
# query, no fragment, no user info): anything else is left to requests
_LABEL = r"[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?"
_PLAIN_URL = re.compile(
    rf"https?://{_LABEL}(?:\.{_LABEL})*(?::[0-9]{{1,5}})?(?:/[A-Za-z0-9\-._~/]*)?"
)
_NO_BODY_METHODS = ("GET", "HEAD")


@dataclass(frozen=True)
class LeanRequest:
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None


class HeaderCache:
    """The headers of a session merged with a call's, checked as requests checks them,
    once per distinct set (a client sends the same few sets all day)."""

    def __init__(self) -> None:
        self._merged: dict[tuple[object, ...], dict[str, str]] = {}

    def merged(
        self, session_headers: Mapping[str, str | bytes], headers: Mapping[str, str]
    ) -> dict[str, str] | None:
        key = (*session_headers.items(), None, *headers.items())
        found = self._merged.get(key)
        if found is None:
            merged: CaseInsensitiveDict[Any] = CaseInsensitiveDict(session_headers)
            merged.update(headers)
            for name, value in merged.items():
                if value is not None:
                    check_header_validity((name, value))
            if any(isinstance(v, bytes) for v in merged.values()):
                return None  # requests would send bytes as they are: leave it to requests
            found = {k: v for k, v in merged.items() if v is not None}
            if len(self._merged) < 64:
                self._merged[key] = found
        return dict(found)


def _plain_params(params: Mapping[str, Any] | None) -> str | None:
    """The query requests would build from ``params``; None when it is not plain."""
    if not params:
        return ""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        if not isinstance(key, str):
            return None
        if value is None:
            continue  # requests leaves such a parameter out
        if isinstance(value, bool) or not isinstance(value, str | int):
            return None
        pairs.append((key, str(value)))
    return urlencode(pairs)


def lean_request(
    method: str,
    url: str,
    params: Mapping[str, Any] | None,
    data: bytes | None,
    headers: dict[str, str] | None,
) -> LeanRequest | None:
    """The request requests would send, or None when only requests can say.
    ``headers``: already merged with the session's (``HeaderCache``); None means the
    headers were not plain."""
    if headers is None or not _PLAIN_URL.fullmatch(url):
        return None
    try:
        urlsplit(url).port  # noqa: B018 (raises for a port out of range, as requests would)
    except ValueError:
        return None
    query = _plain_params(params)
    if query is None:
        return None
    verb = method.upper()
    body = data or None  # requests sends no body for empty data
    if body is not None:
        headers["Content-Length"] = str(len(body))
    elif verb not in _NO_BODY_METHODS and "Content-Length" not in headers:
        headers["Content-Length"] = "0"
    if "/" not in url.split("://", 1)[1]:
        url += "/"  # requests sends the root path of a bare origin
    return LeanRequest(verb, f"{url}?{query}" if query else url, headers, body)

"""URL helpers for span attributes: request-target -> path and query, query redaction,
low-cardinality routes and origins (``url.path``, ``url.query``, ``http.route``,
``url.full``). Pure string functions, no OpenTelemetry imports; none of them raises on
odd input, since targets come straight from captured traffic.
"""

from __future__ import annotations

import re

__all__ = [
    "ID_PLACEHOLDER",
    "MAX_ROUTE_LEN",
    "MAX_ROUTE_SEGMENTS",
    "REDACTED",
    "REST_PLACEHOLDER",
    "origin_for_url",
    "redact_path_parameters",
    "redact_query",
    "route_of",
    "split_target",
]

REDACTED = "REDACTED"
ID_PLACEHOLDER = "{id}"
REST_PLACEHOLDER = "{rest}"
MAX_ROUTE_SEGMENTS = 16
MAX_ROUTE_LEN = 256

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_UUID_RE = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}",
    re.IGNORECASE,
)
_HEX_RE = re.compile(r"[0-9a-fA-F]{16,}")
_TOKEN_RE = re.compile(r"[A-Za-z0-9_\-]{20,}")
_HAS_DIGIT_RE = re.compile(r"[0-9]")
_HAS_LETTER_RE = re.compile(r"[A-Za-z]")
_MIN_ID_LEN = 16  # shortest non-numeric identifier (a 16-char hex string)
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def split_target(target: str) -> tuple[str, str | None]:
    """Split a request-target into (path, query); the fragment, if any, is dropped.

    - origin-form ``/p?q`` -> ``("/p", "q")``; ``/p?`` -> ``("/p", "")``; ``/p`` -> ``("/p", None)``
    - absolute-form ``http://host:8080/p?q`` -> ``("/p", "q")``; ``http://host`` -> ``("/", None)``
    - asterisk-form ``*`` (``OPTIONS *``) -> ``("*", None)``
    - authority-form ``host:443`` (``CONNECT``) and anything else that is neither of the
      above -> ``("/", None)``: it has no path.
    """
    if not target.startswith("/"):
        if target == "*":
            return "*", None
        m = _SCHEME_RE.match(target)
        if m is None:
            return "/", None
        # Skip the authority: the path starts at the first "/", "?" or "#" after it.
        rest = target[m.end() :]
        cut = len(rest)
        for ch in "/?#":
            i = rest.find(ch, 0, cut)
            if i >= 0:
                cut = i
        target = rest[cut:]
    if "#" in target:  # seldom sent: skip the copy partition would make
        target = target.partition("#")[0]
    path, sep, query = target.partition("?")
    return path or "/", query if sep else None


def redact_query(query: str, keep_values: bool = False) -> str:
    """Replace every value in a query string with ``REDACTED``, keeping keys and order.

    ``"a=1&b=&c"`` -> ``"a=REDACTED&b=REDACTED&c"``: parameters without ``=`` have no
    value and are kept as they are. Only ``&`` separates parameters (not ``;``). With
    ``keep_values=True`` the query is returned unchanged.
    """
    if keep_values or "=" not in query:
        return query
    return _redact_values(query, "&")


def _redact_values(parameters: str, separator: str) -> str:
    """``name=value`` parameters joined by separator, each value replaced by ``REDACTED``."""
    parts = parameters.split(separator)
    for i, part in enumerate(parts):
        eq = part.find("=")
        if eq >= 0:
            parts[i] = part[: eq + 1] + REDACTED
    return separator.join(parts)


def redact_path_parameters(path: str, keep_values: bool = False) -> str:
    """Replace the values of path parameters (RFC 3986 matrix parameters) with ``REDACTED``.

    ``/cart;jsessionid=0A1B/items`` -> ``/cart;jsessionid=REDACTED/items``: servlet
    containers put the session there when a client has no cookie, and a session id is a
    credential. Parameters without ``=`` are kept. With ``keep_values=True`` the path is
    returned unchanged.
    """
    if keep_values or ";" not in path:
        return path
    segments = path.split("/")
    for i, segment in enumerate(segments):
        name, sep, parameters = segment.partition(";")
        if sep:
            segments[i] = name + ";" + _redact_values(parameters, ";")
    return "/".join(segments)


def route_of(path: str) -> str:
    """A low-cardinality route for ``path``: identifier-like segments become ``{id}``.

    ``/users/1`` and ``/users/2`` both give ``/users/{id}``. A segment is an identifier
    when it is all ASCII digits; a UUID (any case, 36 chars with dashes or 32 hex); a hex
    string of 16+ chars with at least one digit; or a token of 20+ chars of
    ``[A-Za-z0-9_-]`` with both letters and digits (base64url-like ids). Other segments
    (``users``, ``v1``, ``api``, ``index.html``...) are kept as they are.

    Empty segments (trailing or doubled slashes) are kept. A query or fragment, if
    present, is dropped, and so are a segment's parameters (``/cart;jsessionid=...``
    gives ``/cart``: a route names the resource, not the session); an empty path gives
    ``/`` and a path without a leading slash gets one. The route has at most
    ``MAX_ROUTE_SEGMENTS`` segments and ``MAX_ROUTE_LEN`` characters, both counting a
    final ``{rest}`` segment that replaces whatever does not fit (``/a/b/.../{rest}``; a
    lone over-long first segment gives ``/{rest}``). The result always starts with ``/``.
    """
    if "?" in path or "#" in path:
        path = path.partition("#")[0].partition("?")[0]
    if not path.startswith("/"):
        path = "/" + path
    segments = path[1:].split("/")
    truncated = len(segments) > MAX_ROUTE_SEGMENTS
    if truncated:
        del segments[MAX_ROUTE_SEGMENTS - 1 :]
    for i, seg in enumerate(segments):
        if ";" in seg:
            seg = segments[i] = seg.partition(";")[0]
        if _is_identifier(seg):
            segments[i] = ID_PLACEHOLDER
    route = "/" + "/".join(segments)
    if not truncated and len(route) <= MAX_ROUTE_LEN:
        return route
    # Keep as many leading segments as fit before "/{rest}".
    budget = MAX_ROUTE_LEN - len(REST_PLACEHOLDER) - 1
    kept: list[str] = []
    used = 0
    for seg in segments:
        used += len(seg) + 1
        if used > budget:
            break
        kept.append(seg)
    kept.append(REST_PLACEHOLDER)
    return "/" + "/".join(kept)


def _is_identifier(seg: str) -> bool:
    if not seg.isascii():
        return False
    if seg.isdigit():
        return True
    if len(seg) < _MIN_ID_LEN:
        return False
    if _UUID_RE.fullmatch(seg):
        return True
    has_digit = _HAS_DIGIT_RE.search(seg) is not None
    if not has_digit:
        return False
    if _HEX_RE.fullmatch(seg):
        return True
    return _TOKEN_RE.fullmatch(seg) is not None and _HAS_LETTER_RE.search(seg) is not None


def origin_for_url(scheme: str, host: str, port: int | None) -> str:
    """``scheme://host[:port]``, e.g. for building ``url.full`` from a path.

    The scheme is lower-cased; the port is omitted when ``None`` or the scheme's default
    (80 for http/ws, 443 for https/wss). An IPv6 literal is put in brackets (unless it
    already is), with a zone id's ``%`` escaped as ``%25`` (RFC 6874).
    """
    scheme = scheme.lower()
    if ":" in host and not host.startswith("["):
        host = "[" + host.replace("%", "%25") + "]"
    if port is None or _DEFAULT_PORTS.get(scheme) == port:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"

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
    "absolute_target_origin",
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
_TOKEN_RE = re.compile(r"[A-Za-z0-9_\-]{20,}")
# base64's alphabet (standard or url-safe) without its padding: one character class, so a
# long segment costs a linear scan (no two runs of it in one pattern to backtrack between)
_BASE64_BODY_RE = re.compile(r"[A-Za-z0-9+/_\-]+")
# a parameter's name with an empty value rather than padded base64: endDate=, redirect_uri=
_WORD_NAME_RE = re.compile(r"[a-z]+(?:[A-Z][a-z]*)*|[a-z]+(?:_[a-z]+)*")
# API versions of 8+ characters (Kubernetes' v1alpha1, v2beta12): names, not ids
_API_VERSION_RE = re.compile(r"v[0-9]+(?:alpha|beta|rc)[0-9]*")
# an email address's domain: labels, and a top-level label of letters (not icon@2x.png's
# "png" after a digit-led label, nor a package's lodash@4.17.21)
_EMAIL_DOMAIN_RE = re.compile(r"(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}")
# files a path names by their extension: an "@" in one is a size (icon@2x.png), not an address
_FILE_SUFFIXES = (
    ".png",
    ".jpg",
    ".jpeg",
    ".gif",
    ".svg",
    ".webp",
    ".ico",
    ".css",
    ".js",
    ".map",
    ".json",
    ".html",
    ".woff",
    ".woff2",
    ".txt",
    ".xml",
)
# a JWS (three parts) or JWE (five): base64url parts, the first a JSON header ('{"' -> eyJ)
_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_\-]*(?:\.[A-Za-z0-9_\-]*){2}(?:(?:\.[A-Za-z0-9_\-]*){2})?")
# a date first: 2024-01-31, 2024-01-31T10:00:00Z, 31.01.2024, 01-31-2024
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}|[0-9]{1,2}[-.][0-9]{1,2}[-.][0-9]{4}")
_HAS_DIGIT_RE = re.compile(r"[0-9]")
_HAS_LETTER_RE = re.compile(r"[A-Za-z]")
_MIN_ID_LEN = 8  # shortest identifier that is not all digits nor an email address
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _authority_end(rest: str) -> int:
    """Where the authority at the start of ``rest`` ends: at the first "/", "?" or "#"."""
    cut = len(rest)
    for ch in "/?#":
        i = rest.find(ch, 0, cut)
        if i >= 0:
            cut = i
    return cut


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
        target = rest[_authority_end(rest) :]
    if "#" in target:  # seldom sent: skip the copy partition would make
        target = target.partition("#")[0]
    path, sep, query = target.partition("?")
    return path or "/", query if sep else None


def absolute_target_origin(target: str) -> tuple[str, str] | None:
    """The lower-cased scheme and the authority of an absolute-form request-target, whose
    authority is the request's rather than the Host header's (RFC 9112 3.2.2); userinfo is
    dropped. ``http://u:pw@example.com:8080/p`` -> ``("http", "example.com:8080")``. None
    for the other forms (``/p``, ``*``, ``host:443``) and for an empty authority.
    """
    m = _SCHEME_RE.match(target)
    if m is None:
        return None
    rest = target[m.end() :]
    authority = rest[: _authority_end(rest)].rpartition("@")[2]
    if not authority:
        return None
    return target[: m.end() - 3].lower(), authority


def redact_query(query: str, keep_values: bool = False) -> str:
    """Replace every value in a query string with ``REDACTED``, keeping keys and order.

    ``"a=1&b=&c"`` -> ``"a=REDACTED&b=REDACTED&c"``. A parameter without ``=`` is kept as
    it is (``debug``), unless it looks like an identifier or a token as ``route_of`` tells
    them (``?eyJhbGciOi...``, ``?1700000000``): then it is replaced by ``REDACTED`` whole.
    Only ``&`` separates parameters (not ``;``). With ``keep_values=True`` the query is
    returned unchanged.
    """
    if keep_values or not query:
        return query
    if "=" not in query and "&" not in query:  # one bare parameter: no split, no join
        return REDACTED if _is_identifier(query) else query
    return _redact_values(query, "&")


def _redact_values(parameters: str, separator: str) -> str:
    """``name=value`` parameters joined by separator, each value replaced by ``REDACTED``;
    a parameter without a value that looks like an identifier is replaced whole (one with
    only ``=`` after it too: base64's padding, ``dGhpcw==``)."""
    parts = parameters.split(separator)
    for i, part in enumerate(parts):
        eq = part.find("=")
        if eq < 0:
            if _is_identifier(part):
                parts[i] = REDACTED
        elif part[-1] == "=" and len(part.rstrip("=")) == eq and _is_identifier(part):
            parts[i] = REDACTED
        else:
            parts[i] = part[: eq + 1] + REDACTED
    return separator.join(parts)


def redact_path_parameters(path: str, keep_values: bool = False) -> str:
    """Replace the values of path parameters (RFC 3986 matrix parameters) with ``REDACTED``.

    ``/cart;jsessionid=0A1B/items`` -> ``/cart;jsessionid=REDACTED/items``: servlet
    containers put the session there when a client has no cookie, and a session id is a
    credential. Parameters without ``=`` are kept, unless they look like an identifier (as
    in ``redact_query``). With ``keep_values=True`` the path is returned unchanged.
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

    ``/users/1`` and ``/users/2`` both give ``/users/{id}``. A segment (ASCII) is an
    identifier when it is:

    - all digits;
    - an email address (``alice@example.com``, or with ``%40``), its domain ending in a
      label of letters and the segment not a file's name (``icon@2x.png`` is kept);
    - 8+ chars of letters and digits, with both (``ab12cd34``; a hex hash), but for an API
      version (``v1alpha1``);
    - a UUID (any case, 36 chars with dashes or 32 hex);
    - a JWT (``eyJ...``, three or five base64url parts joined by dots);
    - base64 with its ``=`` padding (8+ chars, length a multiple of 4, not all lower-case
      letters; one ``=`` after a camelCase or snake_case word is a name with an empty
      value, ``endDate=``) or with a ``+`` and both letters and digits (8+ chars);
    - a date first (``2024-01-31``, ``2024-01-31T10:00:00Z``, ``31.01.2024``);
    - a token of 20+ chars of ``[A-Za-z0-9_-]`` with both letters and digits.

    Other segments (``users``, ``v2``, ``api``, ``healthz``, ``index.html``, ``style.css``)
    are kept as they are. A word of 8+ chars with a digit in it (``oauth2callback``,
    ``python311``) becomes ``{id}`` too: the price of keeping short ids out of routes.

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
    """A path segment or a bare query parameter that names one item, or carries a secret
    or personal data: see ``route_of``. Cheap checks first: a short word or a number is
    told with no regular expression."""
    if not seg.isascii():
        return False
    if seg.isdigit():
        return True
    n = len(seg)
    if n < _MIN_ID_LEN:
        return "@" in seg and _is_email(seg)  # "%40" needs more room than that
    if seg.isalnum():  # letters, digits or both
        if not seg.isalpha():
            # both (all digits was told above), but for an API version such as v1alpha1
            return not (seg[0] == "v" and _API_VERSION_RE.fullmatch(seg))
        return n == 32 and _UUID_RE.fullmatch(seg) is not None  # 32 hex letters
    # punctuation inside: each form below holds some that a word seldom does
    if "@" in seg or "%40" in seg:
        return _is_email(seg)
    if n == 36 and _UUID_RE.fullmatch(seg):
        return True
    if seg.startswith("eyJ") and _JWT_RE.fullmatch(seg):
        return True
    if seg[-1] == "=":
        body = seg.rstrip("=")
        return (
            n % 4 == 0
            and n - len(body) <= 2
            and not body.islower()
            and _BASE64_BODY_RE.fullmatch(body) is not None
            and not (n - len(body) == 1 and _WORD_NAME_RE.fullmatch(body))
        )
    if "+" in seg:
        body = seg.rstrip("=")
        return (
            n - len(body) <= 2
            and _BASE64_BODY_RE.fullmatch(body) is not None
            and _HAS_DIGIT_RE.search(seg) is not None
            and _HAS_LETTER_RE.search(seg) is not None
        )
    if seg[0].isdigit() and _DATE_RE.match(seg):
        return True
    return (
        n >= 20
        and _TOKEN_RE.fullmatch(seg) is not None
        and _HAS_DIGIT_RE.search(seg) is not None
        and _HAS_LETTER_RE.search(seg) is not None
    )


def _is_email(seg: str) -> bool:
    """A local part, an "@" (or "%40"), then a domain: dotted labels ending in letters. A
    file's name is not one (icon@2x.png), nor a package's version (lodash@4.17.21)."""
    at = seg.find("@")
    skip = 1
    if at < 0:
        at = seg.find("%40")
        skip = 3
    if at <= 0 or seg.lower().endswith(_FILE_SUFFIXES):
        return False
    return _EMAIL_DOMAIN_RE.fullmatch(seg, at + skip) is not None


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

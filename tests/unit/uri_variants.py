"""Variants of one request that a client could send to reach a route by another spelling.

Used by the in-process differential test (gate versus MLflow's own routing) and meant to be reused
by the end-to-end test through NGINX: every variant is a (method, raw request target) pair exactly
as it would appear on the request line. The list is deterministic.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

OTHER_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")

SUFFIXES = {
    "nul": "%00",
    "newline": "%0A",
    "tab": "%09",
    "encoded space": "%20",
    "no-break space": "%C2%A0",
    "zero-width space": "%E2%80%8B",
    "byte order mark": "%EF%BB%BF",
    "non-ASCII letter": "%C3%A9",
    "invalid UTF-8": "%FF",
    "overlong slash": "%C0%AF",
    "division slash": "%E2%88%95",
    "fullwidth solidus": "%EF%BC%8F",
    "raw space": " x",
    "raw tab": "\tx",
    "raw non-ASCII": "é",
    "encoded semicolon": "%3Bx",
    "encoded question mark": "%3Fx",
    "encoded hash": "%23x",
    "double-encoded slash": "%252F",
}

QUERIES = ("?", "?a=1", "?x=/../y%2F&z=%00", "?%23", "??a")


@dataclass(frozen=True)
class Variant:
    method: str
    target: str
    kind: str


def _encode(char: str, lower: bool = False) -> str:
    encoded = "".join(f"%{byte:02X}" for byte in char.encode("utf-8"))
    return encoded.lower() if lower else encoded


def _path_variants(path: str) -> Iterator[tuple[str, str]]:
    yield "as sent", path
    for query in QUERIES:
        yield "query string", path + query
    yield "fragment", path + "#x"
    yield "fragment with dot segments", path + "#/../x"
    yield "trailing slash", path + "/"
    yield "upper case", path.upper()
    yield "lower case", path.lower()
    slashes = [index for index, char in enumerate(path) if char == "/"]
    segments = path[1:].split("/")
    for number in range(len(segments)):
        changed = list(segments)
        changed[number] = segments[number].swapcase()
        yield "segment case swapped", "/" + "/".join(changed)
        changed[number] = segments[number] + ";x=1"
        yield "semicolon parameter", "/" + "/".join(changed)
        changed[number] = "".join(_encode(char) for char in segments[number])
        yield "segment fully encoded", "/" + "/".join(changed)
    for index in slashes:
        yield "doubled slash", path[:index] + "/" + path[index:]
        yield "dot segment", path[:index] + "/." + path[index:]
        yield "dot-dot segment", path[:index] + "/x/.." + path[index:]
        yield "encoded dot segment", path[:index] + "/%2E" + path[index:]
        yield "encoded dot-dot segment", path[:index] + "/x/%2e%2E" + path[index:]
        if index:
            yield "backslash", path[:index] + "\\" + path[index + 1 :]
            yield "encoded backslash", path[:index] + "%5C" + path[index + 1 :]
            yield "encoded slash", path[:index] + "%2F" + path[index + 1 :]
            yield "encoded slash, lower case", path[:index] + "%2f" + path[index + 1 :]
    yield "dot segment at end", path + "/."
    yield "dot-dot segment at end", path + "/.."
    for index, char in enumerate(path):
        if char == "/":
            continue
        yield f"encoded {char!r}", path[:index] + _encode(char) + path[index + 1 :]
        if _encode(char) != _encode(char, lower=True):
            yield f"encoded {char!r}, lower-case hex", path[:index] + _encode(char, lower=True) + path[index + 1 :]
        yield f"double-encoded {char!r}", path[:index] + "%25" + _encode(char)[1:] + path[index + 1 :]
    for kind, suffix in SUFFIXES.items():
        yield kind, path + suffix
    for prefix, other in (("/api/", "/ajax-api/"), ("/ajax-api/", "/api/")):
        if path.startswith(prefix):
            yield "other API prefix", other + path[len(prefix) :]
    yield "absolute-form", "http://mlflow" + path
    yield "absolute-form, other scheme", "https://mlflow:443" + path
    yield "network-path reference", "//mlflow" + path
    yield "no leading slash", path[1:]
    yield "asterisk-form", "*"


def variants(method: str, path: str) -> Iterator[Variant]:
    """Every spelling of `method path` the differential tests try, the unchanged one first."""
    for kind, target in _path_variants(path):
        yield Variant(method, target, kind)
    for other in OTHER_METHODS:
        if other != method:
            yield Variant(other, path, f"method {other}")
    yield Variant(method.lower(), path, "lower-case method")
    yield Variant(method.capitalize(), path, "capitalised method")

"""Route classification: which single Keycloak permission an MLflow request needs.

NGINX forwards only the method and the raw request target (`$request_uri`) and proxies those same
raw bytes to MLflow, which percent-decodes the path (uvicorn) and routes it (starlette, then
werkzeug). The gate therefore decides on exactly the path MLflow will route: it refuses every target
that MLflow could read differently from the gate (the rules are listed together below), decodes the
rest the way uvicorn does, and matches it against the rule table in `route_map.txt` with werkzeug's
precedence. Anything without a rule is refused, so a route MLflow adds later stays closed until it
is mapped.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Final
from urllib.parse import unquote_to_bytes

BUILTIN_MAP: Final = Path(__file__).with_name("route_map.txt")

CRUD: Final = frozenset({"read", "create", "update", "delete"})
SCOPES_BY_RESOURCE: Final[dict[str, frozenset[str]]] = {
    **dict.fromkeys(
        (
            "experiments",
            "runs",
            "artifacts",
            "registered-models",
            "model-versions",
            "logged-models",
            "traces",
            "datasets",
            "scorers",
            "gateway",
            "evaluation",
            "ui",
        ),
        CRUD,
    ),
    "administration": frozenset({"manage"}),
}
"""Exactly the resources and scopes the Keycloak realm defines; a rule may name nothing else."""

METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE")
API_PREFIXES: Final = ("/api", "/ajax-api")
"""MLflow registers every versioned RPC under both prefixes, so a versioned rule covers both."""

MEMO_SIZE: Final = 4096
MEMO_MAX_URI: Final = 1024
"""Classifications remembered, and the longest request target remembered (bounds the memory)."""


@dataclass(frozen=True)
class Permission:
    resource: str
    scope: str

    def __str__(self) -> str:
        return f"{self.resource}#{self.scope}"


@dataclass(frozen=True)
class Public:
    """No token needed: liveness information only."""


@dataclass(frozen=True)
class Refusal:
    reason: str


Classification = Permission | Public | Refusal


class RouteMapError(ValueError):
    """A rule file is invalid; the message starts with `file:line`."""


@dataclass(frozen=True)
class Rule:
    """One method and one expanded path pattern, read from `source` (`file:line`).

    `text` is the rule as written (columns only), so `mlflow-gate-admin explain` can show an
    administrator the line that decided a request.
    """

    method: str
    pattern: str
    classification: Classification
    source: str
    text: str = ""


# ---------------------------------------------------------------------------------------------
# Request-target normalisation. The checks run in this order; the first one that hits refuses.

_Check = Callable[[str], object]

RAW_TARGET_RULES: Final[tuple[tuple[str, _Check], ...]] = (
    ("empty request target", lambda target: target == ""),
    ("request target is not a path (absolute-form, authority-form or *)", lambda target: not target.startswith("/")),
    ("space, control or non-ASCII character in request target", re.compile(r"[^\x21-\x7e]").search),
    ("fragment in request target", re.compile(r"#").search),
)
"""Checks on the whole raw target; what follows the first `?` is the query, which is not routed."""

RAW_PATH_RULES: Final[tuple[tuple[str, _Check], ...]] = (
    ("backslash in path", re.compile(r"\\").search),
    ("semicolon in path", re.compile(r";").search),
    ("character not allowed in a URI path", re.compile(r"[^A-Za-z0-9\-._~!$&'()*+,=:@%/]").search),
    ("malformed percent-escape in path", re.compile(r"%(?![0-9A-Fa-f]{2})").search),
    ("encoded slash, backslash, dot or percent sign in path", re.compile(r"%(?:2[FfEe5]|5[Cc])").search),
)
"""Checks on the raw path, before decoding. Encoded `/` `\\` `.` `%` would change the segments."""

DECODED_PATH_RULES: Final[tuple[tuple[str, _Check], ...]] = (
    ("semicolon in path", lambda path: ";" in path),
    ("control, format or separator character in path", lambda path: _has_invisible(path)),
    ("empty path segment", lambda path: "//" in path),
    ("dot segment in path", re.compile(r"/\.\.?(?:/|\Z)").search),
)
"""Checks on the decoded path MLflow routes; `;` again so that `%3B` cannot undo the raw check.
Printable non-ASCII stays allowed: rule literals are ASCII and matching is exact, so such characters
can only ever fill a parameter (file names)."""


def _has_invisible(path: str) -> bool:
    """Controls, format characters and Unicode spaces hide in logs and differ between parsers."""
    return any(char != " " and unicodedata.category(char)[0] in "CZ" for char in path)


def normalise_path(raw_target: str) -> str | Refusal:
    """The decoded path MLflow will route for `raw_target`, or why the gate refuses to guess."""
    for reason, check in RAW_TARGET_RULES:
        if check(raw_target):
            return Refusal(reason)
    raw_path = raw_target.partition("?")[0]
    for reason, check in RAW_PATH_RULES:
        if check(raw_path):
            return Refusal(reason)
    try:
        path = unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError:
        return Refusal("percent-escapes in path are not UTF-8")
    for reason, check in DECODED_PATH_RULES:
        if check(path):
            return Refusal(reason)
    return path


# ---------------------------------------------------------------------------------------------
# Patterns and matching.

_LITERAL: Final = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,=:@]+")
_PARAMETER: Final = re.compile(r"<(?:(path):)?([A-Za-z_][A-Za-z0-9_]*)>")
_VERSION: Final = re.compile(r"[0-9]+\.[0-9]+")

_ONE: Final = "<>"
_REST: Final = "<path>"
"""Segment keys: a literal segment is its own text; parameters use these two (never a literal)."""


def _segment_keys(pattern: str) -> tuple[str, ...]:
    """`/a/<x>/<path:p>` -> ('a', '<>', '<path>'); a trailing slash is a final empty literal."""
    if not pattern.startswith("/"):
        raise ValueError(f"path pattern {pattern} must start with /")
    segments = pattern[1:].split("/")
    keys: list[str] = []
    names: set[str] = set()
    for index, segment in enumerate(segments):
        if parameter := _PARAMETER.fullmatch(segment):
            if parameter[2] in names:
                raise ValueError(f"parameter {parameter[2]} appears twice in {pattern}")
            names.add(parameter[2])
            keys.append(_REST if parameter[1] else _ONE)
        elif segment == "" and index == len(segments) - 1:
            keys.append("")
        elif segment in (".", "..") or not _LITERAL.fullmatch(segment):
            raise ValueError(f"segment {segment!r} of {pattern} is neither a literal nor a whole <parameter>")
        else:
            keys.append(segment)
    return tuple(keys)


@dataclass
class _Node:
    literals: dict[str, _Node] = field(default_factory=dict)
    one: _Node | None = None
    rest: _Node | None = None
    rule: Rule | None = None

    def child(self, key: str) -> _Node:
        if key == _ONE:
            self.one = self.one or _Node()
            return self.one
        if key == _REST:
            self.rest = self.rest or _Node()
            return self.rest
        return self.literals.setdefault(key, _Node())

    def find(self, segments: Sequence[str], start: int) -> Rule | None:
        """Depth first, literal before `<x>` before `<path:x>` (shortest first), like werkzeug.

        The first complete match is the rule whose segments are the most literal from left to
        right; backtracking lets `/a/b/c` fall back to `/a/<x>/c` when `/a/b/...` has no `c`.
        A parameter never matches an empty segment, so a trailing slash only matches a pattern
        written with one.
        """
        if start == len(segments):
            return self.rule
        segment = segments[start]
        literal = self.literals.get(segment)
        if literal is not None and (rule := literal.find(segments, start + 1)):
            return rule
        if segment and self.one is not None and (rule := self.one.find(segments, start + 1)):
            return rule
        if self.rest is not None:
            end = start
            while end < len(segments) and segments[end]:
                end += 1
                if rule := self.rest.find(segments, end):
                    return rule
        return None


def _parse_classification(token: str) -> Classification:
    if token == "public":
        return Public()
    if token == "deny":
        return Refusal("denied by rule")
    resource, hash_sign, scope = token.partition("#")
    if not hash_sign:
        raise ValueError(f"permission {token!r} is not resource#scope, public or deny")
    if resource not in SCOPES_BY_RESOURCE:
        raise ValueError(f"unknown resource {resource!r} (known: {', '.join(SCOPES_BY_RESOURCE)})")
    if scope not in SCOPES_BY_RESOURCE[resource]:
        allowed = ", ".join(sorted(SCOPES_BY_RESOURCE[resource]))
        raise ValueError(f"resource {resource} has no scope {scope!r} (allowed: {allowed})")
    return Permission(resource, scope)


def _expand(pattern: str) -> tuple[str, ...]:
    first = pattern[1:].split("/", 1)[0]
    if _VERSION.fullmatch(first):
        return tuple(prefix + pattern for prefix in API_PREFIXES)
    return (pattern,)


def _parse_rules(text: str, source: str) -> Iterator[tuple[Rule, tuple[str, ...]]]:
    """Rules of one file with their segment keys; `source` names the file in errors."""
    for number, line in enumerate(text.splitlines(), start=1):
        where = f"{source}:{number}"
        fields = re.split(r"(?:^|\s)#", line, maxsplit=1)[0].split()
        if not fields:
            continue
        try:
            if len(fields) != 3:
                raise ValueError("expected three columns: METHODS PATH PERMISSION")
            methods_field, pattern, permission = fields
            methods = methods_field.split(",")
            for method in methods:
                if method not in METHODS:
                    raise ValueError(f"method {method!r} is not one of {', '.join(METHODS)} (HEAD is GET)")
            if len(set(methods)) != len(methods):
                raise ValueError(f"method listed twice in {methods_field}")
            classification = _parse_classification(permission)
            if isinstance(classification, Refusal):
                classification = Refusal(f"denied by rule {where}")
            expanded = [(full, _segment_keys(full)) for full in _expand(pattern)]
        except ValueError as error:
            raise RouteMapError(f"{where}: {error}") from None
        for method in methods:
            for full, keys in expanded:
                yield Rule(method, full, classification, where, " ".join(fields)), keys


class RouteMap:
    """The built-in rule table plus operator files; later files override rules of earlier ones."""

    def __init__(self, rules: dict[tuple[str, tuple[str, ...]], Rule]) -> None:
        self._roots: dict[str, _Node] = {method: _Node() for method in METHODS}
        for (method, keys), rule in rules.items():
            node = self._roots[method]
            for key in keys:
                node = node.child(key)
            node.rule = rule
        self.rules: tuple[Rule, ...] = tuple(rules.values())
        self._memo = lru_cache(maxsize=MEMO_SIZE)(self._classify)

    @classmethod
    def load(cls, extra_files: Sequence[Path] = ()) -> RouteMap:
        return cls.from_files([BUILTIN_MAP, *extra_files])

    @classmethod
    def from_files(cls, files: Sequence[Path]) -> RouteMap:
        rules: dict[tuple[str, tuple[str, ...]], Rule] = {}
        for path in files:
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                raise RouteMapError(f"{path}: cannot read rule file: {error}") from None
            seen: dict[tuple[str, tuple[str, ...]], Rule] = {}
            for rule, keys in _parse_rules(text, str(path)):
                key = (rule.method, keys)
                if key in seen:
                    raise RouteMapError(f"{rule.source}: {rule.method} {rule.pattern} repeats {seen[key].source}")
                seen[key] = rule
            rules.update(seen)
        return cls(rules)

    def lookup(self, method: str, raw_target: str) -> Rule | Refusal:
        """The rule that decides this request, or why there is none (HEAD is matched as GET)."""
        path = normalise_path(raw_target)
        if isinstance(path, Refusal):
            return path
        verb = "GET" if method == "HEAD" else method
        root = self._roots.get(verb)
        rule = root.find(path[1:].split("/"), 0) if root is not None else None
        if rule is None:
            return Refusal(f"no route rule for {method[:16]} {raw_target.partition('?')[0]}")
        return rule

    def classify(self, method: str, raw_uri: str) -> Classification:
        """Memoised: clients repeat the same few requests, and classifying is pure but not cheap."""
        if len(raw_uri) > MEMO_MAX_URI:
            return self._classify(method, raw_uri)
        return self._memo(method, raw_uri)

    def _classify(self, method: str, raw_uri: str) -> Classification:
        found = self.lookup(method, raw_uri)
        return found if isinstance(found, Refusal) else found.classification

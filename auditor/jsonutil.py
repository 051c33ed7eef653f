"""JSON helpers shared by the engine, the bundle and the reports."""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Iterable
from typing import Any

import orjson

# JSON documents are dicts, lists and scalars from json.loads: typing them more tightly buys
# nothing but casts.
JSON = Any


# Nesting no local document needs (the deepest bundled policy is 14 levels): a policy or
# attestations file nested deeper is refused before it is parsed, so neither the parser nor a
# validator recurses into it.
MAX_DEPTH = 64

# A JSON string, or outside one: a bracket, a bare NaN/Infinity token, or a number too long
# for Python to read (sys.get_int_max_str_digits(): 4,300 digits).
_LONG = sys.get_int_max_str_digits() + 1
_JSON_TOKENS = re.compile(
    r'"(?:[^"\\]|\\.)*"|(?P<open>[\[{])|(?P<close>[\]}])|(?P<bare>-?Infinity|NaN)'
    rf"|(?P<long>-?[0-9]{{{_LONG},}})"
)


def too_deep_at(text: str, limit: int = MAX_DEPTH) -> int | None:
    """Where JSON `text` first nests more than `limit` arrays and objects, or None. Linear; for
    files people write (a scan of every string costs too much on a tenant's answers)."""
    depth = 0
    for match in _JSON_TOKENS.finditer(text):
        if match.group("open"):
            depth += 1
            if depth > limit:
                return match.start()
        elif match.group("close"):
            depth -= 1
    return None


class _NotFinite(ValueError):
    def __init__(self, token: str) -> None:
        super().__init__(token)
        self.token = token


def _refuse_constant(token: str) -> Any:
    raise _NotFinite(token)


def loads_strict(data: str | bytes, *, max_depth: int | None = None) -> JSON:
    """json.loads without what Python's json accepts and JSON does not have: NaN, Infinity and
    -Infinity (they compare false with every limit, so a policy's `maximum` lets them pass, and
    the evidence cannot hold them). With `max_depth`, deeper nesting is refused before parsing.
    Both raise json.JSONDecodeError with the position, like any other malformed JSON, so every
    caller's handling of a malformed answer applies. Costs nothing on well-formed JSON."""
    try:
        value = json.loads(data, parse_constant=_refuse_constant)
        if max_depth is not None and _depth_exceeds(value, max_depth):
            raise RecursionError
        return value
    except RecursionError:
        # Found from the parsed value (cheap); the text is scanned only to say where.
        text = _text(data)
        deep = too_deep_at(text, max_depth or MAX_DEPTH)
        raise json.JSONDecodeError(
            f"nested more than {max_depth or MAX_DEPTH} levels deep", text, deep or 0
        ) from None
    except _NotFinite as exc:
        # Everything before the token parsed as JSON, so the first bare token outside a string
        # is the one the parser met.
        text = _text(data)
        found = next(m for m in _JSON_TOKENS.finditer(text) if m.group("bare"))
        raise json.JSONDecodeError(
            f"{exc.token} is not a finite number (JSON has no NaN or Infinity)",
            text,
            found.start(),
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise
    except ValueError:  # an integer beyond Python's limit on digits
        text = _text(data)
        long = next((m for m in _JSON_TOKENS.finditer(text) if m.group("long")), None)
        if long is None:
            raise
        limit = sys.get_int_max_str_digits()
        raise json.JSONDecodeError(
            f"a number of more than {limit} digits", text, long.start()
        ) from None


def _depth_exceeds(value: JSON, limit: int) -> bool:
    """Whether `value` nests more than `limit` arrays and objects, without recursing."""
    level: list[Any] = [value]
    for _depth in range(limit):
        level = [
            child
            for node in level
            if isinstance(node, (dict, list))
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, (dict, list))
        ]
        if not level:
            return False
    return True


def _text(data: str | bytes) -> str:
    if isinstance(data, str):
        return data
    return data.decode(json.detect_encoding(data), "surrogatepass")


def dumps_canonical(value: JSON) -> str:
    """Stable text for hashing and comparing: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def dumps_pretty(value: JSON) -> str:
    """Indented JSON for people, as json.dumps(indent=2) writes it. orjson writes the same text
    some 15 times faster (the standard library indents in pure Python, which took seconds on a
    large tenant's snapshot); what orjson cannot write (integers beyond 64 bits, non-string
    keys) falls back to the standard library."""
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n"
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def dumps_pretty_bytes(value: JSON) -> bytes:
    """`dumps_pretty(value)` as UTF-8, without passing through a str: a large tenant's snapshot
    is tens of megabytes, decoded and encoded again for nothing otherwise."""
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    except (TypeError, orjson.JSONEncodeError):
        return dumps_pretty(value).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pointer(parts: Iterable[str | int]) -> str:
    """RFC 6901 JSON Pointer for a path of keys and indexes."""
    out = []
    for part in parts:
        text = str(part).replace("~", "~0").replace("/", "~1")
        out.append("/" + text)
    return "".join(out)


def pointer_parts(ptr: str) -> list[str]:
    if ptr == "":
        return []
    if not ptr.startswith("/"):
        raise ValueError(f"JSON pointer must be empty or start with '/': {ptr!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in ptr[1:].split("/")]


def resolve_pointer(document: JSON, ptr: str) -> JSON:
    """The value at `ptr`; KeyError when it does not exist."""
    node = document
    for part in pointer_parts(ptr):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise KeyError(ptr)
            node = node[int(part)]
        elif isinstance(node, dict):
            if part not in node:
                raise KeyError(ptr)
            node = node[part]
        else:
            raise KeyError(ptr)
    return node


def expand_pointer(document: JSON, pattern: str) -> list[tuple[str, JSON]]:
    """Every (pointer, value) matching `pattern`, where a `*` segment matches each array index
    or object key. Pointers that do not exist are skipped."""
    matches: list[tuple[list[str | int], JSON]] = [([], document)]
    for part in pointer_parts(pattern):
        nxt: list[tuple[list[str | int], JSON]] = []
        for path, node in matches:
            if part == "*":
                if isinstance(node, list):
                    nxt.extend(([*path, i], item) for i, item in enumerate(node))
                elif isinstance(node, dict):
                    nxt.extend(([*path, k], v) for k, v in node.items())
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                nxt.append(([*path, int(part)], node[int(part)]))
            elif isinstance(node, dict) and part in node:
                nxt.append(([*path, part], node[part]))
        matches = nxt
    return [(pointer(path), value) for path, value in matches]


def summarise(value: JSON, limit: int = 2000) -> JSON:
    """`value` itself when its JSON is short, otherwise a description that still lets an auditor
    find and check it (size and hash of the full value)."""
    text = dumps_canonical(value)
    if len(text) <= limit:
        return value
    digest = "sha256:" + sha256_hex(text.encode())
    if isinstance(value, list):
        return {"$summary": f"array of {len(value)} items", "$sha256": digest}
    if isinstance(value, dict):
        keys = sorted(value)[:20]
        return {"$summary": f"object with {len(value)} keys", "$keys": keys, "$sha256": digest}
    return {
        "$summary": f"string of {len(text)} characters",
        "$prefix": text[:200],
        "$sha256": digest,
    }


def json_excerpt(value: JSON, limit: int = 80) -> str:
    """`value` as JSON text for a message, cut to `limit` characters (`…` says it was)."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def type_name(value: JSON) -> str:
    """The JSON type of `value` in words, as a message says it: "a string", "null"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"

"""JSON Schema `pattern`s, which are ECMA-262 regexes, translated for RE2 and compiled there.

python-jsonschema would run patterns with Python's `re`, a backtracking engine ("^(a+)+$" on forty
a's and a "!" never ends, and `$` matches before a final newline). RE2 runs in linear time; the
translation makes it read `\\s`, `.` and `\\uXXXX` as ECMA-262 (and jsonschema-rs) do. A pattern
that needs backtracking (backreferences, lookaround) or that only one engine understands has no
translation: PatternError says why.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import re2  # type: ignore[import-untyped]


class PatternError(ValueError):
    """A pattern that cannot run the same way, in linear time, in both backends: says why."""


# ECMA-262 white space and line terminators, which `\s` means there (and in jsonschema-rs); RE2's
# own `\s` is ASCII only. Written for the inside of a character class.
_ECMA_SPACE = (
    "\\t\\n\\x0b\\x0c\\r \\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}"
    "\\x{202f}\\x{205f}\\x{3000}\\x{feff}"
)
# ECMA-262 `.`: anything but a line terminator (RE2's stops only at \n).
_ECMA_DOT = "[^\\n\\r\\x{2028}\\x{2029}]"
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_BACKREFERENCE = (
    "backreferences (\\1, \\k<name>, (?P=name)) need a backtracking regex engine, which can take "
    "exponential time on hostile data; patterns run on RE2, in linear time: rewrite it without them"
)
_LOOKAROUND = (
    "lookaround ((?=…), (?!…), (?<=…), (?<!…)) needs a backtracking regex engine, which can take "
    "exponential time on hostile data; patterns run on RE2, in linear time: rewrite it without it"
)


def _escape(pattern: str, at: int, in_class: bool) -> tuple[int, str]:
    """(characters consumed, RE2 text) for the escape starting at `at`."""
    if at + 1 >= len(pattern):
        raise PatternError("it ends with a lone backslash")
    letter = pattern[at + 1]
    if letter in "AzZ":
        origin = {"A": "Perl and Python", "z": "Perl", "Z": "Python-only"}[letter]
        raise PatternError(
            f"\\{letter} is {origin} syntax, not ECMA-262, which JSON Schema patterns are (there "
            f"it means a plain {letter!r}): use {'^' if letter == 'A' else '$'} for the "
            f"{'start' if letter == 'A' else 'end'} of the string"
        )
    if letter in "123456789" or (letter == "k" and pattern.startswith("<", at + 2)):
        raise PatternError(_BACKREFERENCE)
    if letter == "s":
        return 2, _ECMA_SPACE if in_class else f"[{_ECMA_SPACE}]"
    if letter == "S":
        if in_class:
            raise PatternError(
                "\\S inside [...] cannot be read alike by both validators: "
                "list what may appear instead, or use [^\\s...] for what may not"
            )
        return 2, f"[^{_ECMA_SPACE}]"
    if letter == "u":
        digits = pattern[at + 2 : at + 6]
        if len(digits) != 4 or not set(digits) <= _HEX_DIGITS:
            raise PatternError("\\u must be followed by four hex digits (\\u00e9)")
        return 6, f"\\x{{{digits}}}"
    return 2, pattern[at : at + 2]


def _group(pattern: str, at: int) -> None:
    """Refuse the `(?` groups ECMA-262 does not have, or RE2 cannot run."""
    rest = pattern[at + 2 :]
    if rest.startswith(("=", "!", "<=", "<!")):
        raise PatternError(_LOOKAROUND)
    if rest.startswith("P="):
        raise PatternError(_BACKREFERENCE)
    if not rest.startswith((":", "<", "P<")):
        raise PatternError(
            "inline flags such as (?i) and other (?…) groups are not ECMA-262 syntax, and the "
            "two validators read them differently: only (?:…) and (?<name>…) groups are allowed"
        )


def ecma_to_re2(pattern: str) -> str:
    """The RE2 pattern that matches what the ECMA-262 `pattern` matches (as jsonschema-rs reads
    it); PatternError when there is none."""
    out: list[str] = []
    at, in_class = 0, False
    while at < len(pattern):
        char = pattern[at]
        step, text = 1, char
        if char == "\\":
            step, text = _escape(pattern, at, in_class)
        elif in_class:
            in_class = char != "]"
        elif pattern.startswith(("[\\s\\S]", "[\\S\\s]"), at):
            step, text = 6, "(?s:.)"  # JavaScript's idiom for any character at all
        elif char == "[":
            if pattern.startswith(("[]", "[^]"), at):
                raise PatternError(
                    "[] and [^] match nothing and anything in ECMA-262 but start a class with a "
                    "literal ] in RE2: write \\] for a literal ]"
                )
            in_class = True
        elif char == ".":
            text = _ECMA_DOT
        elif char == "(" and pattern.startswith("(?", at):
            _group(pattern, at)
        out.append(text)
        at += step
    return "".join(out)


def _re2_options() -> Any:
    options = re2.Options()
    options.log_errors = False  # the reason goes in our message, not to stderr
    return options


@lru_cache(maxsize=4096)
def compile_pattern(pattern: str) -> Any:
    """The compiled RE2 regex for an ECMA-262 pattern; PatternError says why there is none."""
    translated = ecma_to_re2(pattern)
    try:
        return re2.compile(translated, _re2_options())
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise PatternError(f"RE2 cannot compile it: {reason}") from None


def search(pattern: str, text: str) -> bool:
    """Whether the ECMA-262 `pattern` matches somewhere in `text` (as JSON Schema applies it)."""
    return compile_pattern(pattern).search(text) is not None

"""JSON Schema validation behind one interface, with two interchangeable backends.

`jsonschema` is the reference. `jsonschema-rs` is the fast path for large sections (100,000 users
validate in milliseconds instead of seconds); tests/test_validator_parity.py shows both give the
same verdicts and the same failures on every policy, example and fixture we ship. Failures are
worded by auditor.failures, so the evidence reads the same whichever backend found them.

A policy is a user's file and the data it judges is hostile, so evaluation is bounded:
- Patterns are ECMA-262, as JSON Schema says. jsonschema-rs reads them so; python-jsonschema runs
  them here with RE2 (auditor.patterns), so both read them alike and in linear time.
- A schema must pass the static checks of auditor.schemacheck (patterns RE2 can run, `$ref`s that
  resolve and do not loop without descending into the data, a sane expanded size):
  `evaluation_problems` (which `policies lint` runs) and `compile_schema` refuse it otherwise.
- What is left (a schema whose work grows steeply with the data) is stopped by a time limit per
  evaluation: the Python backend checks the clock at every keyword it applies and gives up with
  EvaluationTimeout. jsonschema-rs holds the interpreter for the whole call and cannot be stopped
  from Python (a watchdog thread cannot even run meanwhile), so only schemas whose work is bounded
  by the data's size go to it: a recursive schema is evaluated by the Python backend.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any, Protocol

import jsonschema
from jsonschema.exceptions import ValidationError
from referencing.exceptions import Unresolvable

from auditor.failures import Failure, keyword_schema, to_failure
from auditor.jsonutil import JSON, pointer
from auditor.model.errors import shorten
from auditor.patterns import search
from auditor.schemacheck import REF_KEYWORDS, analyse

try:  # pragma: no branch - the import succeeds wherever the wheel exists
    import jsonschema_rs

    HAVE_RS = True
except ImportError:  # pragma: no cover - platforms without a jsonschema-rs wheel
    HAVE_RS = False

BACKENDS = ("jsonschema", "jsonschema-rs")

# The most one policy may take on one subject before it is `error` ([policies] timeout_seconds).
# The Python backend takes about 5 s on a section of 100,000 users (jsonschema-rs: 0.3 s): a
# minute leaves room for heavier policies on slow runners and still ends a runaway one.
DEFAULT_TIMEOUT_SECONDS = 60.0


class EvaluationError(Exception):
    """A policy could not be evaluated; the message is the `error` result's reason."""


class EvaluationTimeout(EvaluationError):
    """The evaluation ran past its time limit."""


# --- the time limit ----------------------------------------------------------------------------

_DEADLINE: contextvars.ContextVar[float] = contextvars.ContextVar(
    "commsaudit_validation_deadline", default=math.inf
)


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Evaluations inside end with EvaluationTimeout after `seconds` (an enclosing limit that
    ends sooner still holds)."""
    token = _DEADLINE.set(min(_DEADLINE.get(), time.monotonic() + seconds))
    try:
        yield
    except EvaluationTimeout:
        raise EvaluationTimeout(f"took longer than {seconds:g} s") from None
    finally:
        _DEADLINE.reset(token)


def _clock_checked(keyword: Callable[..., Any]) -> Callable[..., Any]:
    """A keyword that first checks the deadline: every keyword the Python backend applies,
    however the schema nests, passes here."""

    def checked(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        if time.monotonic() > _DEADLINE.get():
            raise EvaluationTimeout("took too long")
        return keyword(validator, value, instance, schema)

    return checked


# --- the Python backend's keywords that match patterns (and one that was quadratic) ------------


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not search(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: dict[str, Any], instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional(instance: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    return [
        key
        for key in instance
        if key not in properties and not any(search(p, key) for p in patterns)
    ]


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    extras = _additional(instance, schema)
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        if "patternProperties" in schema:
            patterns = ", ".join(repr(p) for p in sorted(schema["patternProperties"]))
            verb = "does" if len(extras) == 1 else "do"
            joined = ", ".join(repr(e) for e in sorted(extras))
            yield ValidationError(f"{joined} {verb} not match any of the regexes: {patterns}")
        else:
            verb = "was" if len(extras) == 1 else "were"
            joined = ", ".join(repr(e) for e in sorted(extras, key=str))
            yield ValidationError(
                f"Additional properties are not allowed ({joined} {verb} unexpected)"
            )


def _valid(errors: Iterator[ValidationError]) -> bool:
    return next(errors, None) is None


def _evaluated_keys(validator: Any, instance: dict[str, Any], schema: Any) -> set[str]:
    """The keys some keyword of `schema` evaluates: python-jsonschema's own walk
    (find_evaluated_property_keys_by_schema), matching patternProperties with RE2."""
    if validator.is_type(schema, "boolean"):
        return set()
    keys: set[str] = set()
    for keyword in REF_KEYWORDS:
        ref = schema.get(keyword)
        if ref is not None:
            resolved = validator._resolver.lookup(ref)
            keys |= _evaluated_keys(
                validator.evolve(schema=resolved.contents, _resolver=resolved.resolver),
                instance,
                resolved.contents,
            )
    properties = schema.get("properties")
    if validator.is_type(properties, "object"):
        keys |= properties.keys() & instance.keys()
    for keyword in ("additionalProperties", "unevaluatedProperties"):
        subschema = schema.get(keyword)
        if subschema is not None:
            keys |= {k for k, v in instance.items() if _valid(validator.descend(v, subschema))}
    for pattern in schema.get("patternProperties", {}):
        keys |= {k for k in instance if search(pattern, k)}
    for key, subschema in schema.get("dependentSchemas", {}).items():
        if key in instance:
            keys |= _evaluated_keys(validator, instance, subschema)
    for keyword in ("allOf", "oneOf", "anyOf"):
        for subschema in schema.get(keyword, []):
            if _valid(validator.descend(instance, subschema)):
                keys |= _evaluated_keys(validator, instance, subschema)
    if "if" in schema:
        if validator.evolve(schema=schema["if"]).is_valid(instance):
            keys |= _evaluated_keys(validator, instance, schema["if"])
            if "then" in schema:
                keys |= _evaluated_keys(validator, instance, schema["then"])
        elif "else" in schema:
            keys |= _evaluated_keys(validator, instance, schema["else"])
    return keys


def _unevaluated_properties(
    validator: Any, unevaluated: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    evaluated = _evaluated_keys(validator, instance, schema)
    failed = [
        key
        for key in instance
        if key not in evaluated
        and not _valid(validator.descend(instance[key], unevaluated, path=key, schema_path=key))
    ]
    if failed:
        verb = "was" if len(failed) == 1 else "were"
        if unevaluated is False:
            joined = ", ".join(repr(k) for k in sorted(failed, key=str))
            yield ValidationError(
                f"Unevaluated properties are not allowed ({joined} {verb} unexpected)"
            )
        else:
            joined = ", ".join(repr(k) for k in failed)
            yield ValidationError(
                "Unevaluated properties are not valid under the given schema "
                f"({joined} {verb} unevaluated and invalid)"
            )


def _identity(value: JSON) -> Any:
    """A hashable stand-in equal for values JSON Schema calls equal (1 and 1.0, not 1 and
    true)."""
    if isinstance(value, bool) or value is None:
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, list):
        return ("a", tuple(_identity(v) for v in value))
    return ("o", frozenset((k, _identity(v)) for k, v in value.items()))


def _unique_items(
    validator: Any, unique: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    """uniqueItems in linear time: python-jsonschema compares objects pair by pair, which a
    tenant's list of 100,000 objects turns into a hang the clock check cannot interrupt."""
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[Any] = set()
    for item in instance:
        identity = _identity(item)
        if identity in seen:
            yield ValidationError(f"{instance!r} has non-unique elements")
            return
        seen.add(identity)


def _python_keywords() -> dict[str, Callable[..., Any]]:
    keywords: dict[str, Callable[..., Any]] = dict(jsonschema.Draft202012Validator.VALIDATORS)
    keywords.update(
        pattern=_pattern,
        patternProperties=_pattern_properties,
        additionalProperties=_additional_properties,
        unevaluatedProperties=_unevaluated_properties,
        uniqueItems=_unique_items,
    )
    return {name: _clock_checked(keyword) for name, keyword in keywords.items()}


# Draft 2020-12 with RE2 patterns and the clock check. Formats stay annotations, as in both
# backends. A `$schema` inside would make python-jsonschema switch to its stock class (Python
# `re`, no clock): `analyse` allows it only at the top, and the top one is left out here.
_extend: Any = jsonschema.validators.extend  # untyped in the stubs
PythonValidator: Any = _extend(jsonschema.Draft202012Validator, _python_keywords())


def python_validator(schema: JSON) -> Any:
    """The Python backend's validator for `schema` (also for parameter schemas)."""
    if isinstance(schema, dict) and "$schema" in schema:
        schema = {k: v for k, v in schema.items() if k != "$schema"}
    return PythonValidator(schema)


# --- the two backends, and failures as both report them ---------------------------------------


class CompiledSchema(Protocol):
    backend: str
    schema: JSON

    def is_valid(self, instance: JSON) -> bool: ...

    def failures(self, instance: JSON) -> list[Failure]: ...


_RawError = tuple[list[str | int], tuple[str | int, ...], JSON, str]


def _collect(root: JSON, errors: Iterable[_RawError]) -> list[Failure]:
    """Failures from a backend's (instance path, schema path, instance, message) tuples, in
    order, without repeats (a backend may report one missing property per `required` entry)."""
    seen: set[tuple[str, str, str]] = set()
    out = []
    for path, schema_path, instance, message in errors:
        failure = to_failure(root, path, schema_path, instance, message)
        found = [failure]
        if failure.keyword == "contains" and isinstance(instance, list):
            found += _why_no_item_counts(root, path, schema_path, instance)
        for item in found:
            key = item.key()
            if key not in seen:
                seen.add(key)
                out.append(item)
    return out


# How many items of a failed `contains` are explained item by item.
_EXPLAINED_ITEMS = 20


def _why_no_item_counts(
    root: JSON, path: list[str | int], schema_path: tuple[str | int, ...], items: list[JSON]
) -> list[Failure]:
    """For "no item meets the requirement", say why each item does not: evidence that points at
    the offending values (a report-only state, an unexpected exclusion) rather than at the list.
    Always worked out with the reference validator, so both backends explain alike."""
    if schema_path and schema_path[-1] == "minContains":  # jsonschema-rs blames the count
        schema_path = (*schema_path[:-1], "contains")
    found = keyword_schema(root, schema_path)
    if found is None or not isinstance(found[1], dict | bool):
        return []
    requirement = python_validator(root).evolve(schema=found[1])
    explained = []
    for index, item in enumerate(items[:_EXPLAINED_ITEMS]):
        for error in requirement.iter_errors(item):
            inner = to_failure(
                root,
                [*path, index, *error.absolute_path],
                (*schema_path, *error.absolute_schema_path),
                error.instance,
                error.message,
            )
            explained.append(replace(inner, message=f"does not count: {inner.message}"))
    return explained


class ReferenceSchema:
    backend = "jsonschema"

    def __init__(self, schema: JSON) -> None:
        self.schema = schema
        # Formats are annotations in draft 2020-12; both backends leave them unchecked.
        self._validator = python_validator(schema)

    def is_valid(self, instance: JSON) -> bool:
        with _evaluation_errors():
            return bool(self._validator.is_valid(instance))

    def failures(self, instance: JSON) -> list[Failure]:
        with _evaluation_errors():
            errors = self._validator.iter_errors(instance)
            return _collect(
                self.schema,
                (
                    (list(e.absolute_path), tuple(e.absolute_schema_path), e.instance, e.message)
                    for e in errors
                ),
            )


@contextlib.contextmanager
def _evaluation_errors() -> Iterator[None]:
    """What stops the Python backend midway, as EvaluationError: nesting deeper than Python's
    stack, or a reference evaluation_problems would have refused (a schema that skipped it)."""
    try:
        yield
    except RecursionError:
        raise EvaluationError("the data or the schema is nested too deeply to evaluate") from None
    except Unresolvable as exc:
        raise EvaluationError(f"a $ref does not resolve: {shorten(str(exc), 120)}") from None


class RustSchema:
    backend = "jsonschema-rs"

    def __init__(self, schema: JSON) -> None:
        self.schema = schema
        self._validator: Any = jsonschema_rs.Draft202012Validator(
            schema, validate_formats=False, offline=True
        )

    def is_valid(self, instance: JSON) -> bool:
        return bool(self._validator.is_valid(instance))

    def failures(self, instance: JSON) -> list[Failure]:
        errors = self._validator.iter_errors(instance)
        with _evaluation_errors():  # the explanations come from the Python backend
            return _collect(
                self.schema,
                (
                    (list(e.instance_path), tuple(e.schema_path), e.instance, e.message)
                    for e in errors
                ),
            )


def resolve_backend(name: str) -> str:
    if name == "auto":
        return "jsonschema-rs" if HAVE_RS else "jsonschema"
    if name == "jsonschema-rs" and not HAVE_RS:  # pragma: no cover
        raise RuntimeError('jsonschema-rs is not installed; use validator = "jsonschema"')
    return name


def compile_schema(schema: JSON, backend: str = "auto") -> CompiledSchema:
    """`schema` ready to evaluate; EvaluationError when `analyse` refuses it (a policy that
    passed `policies lint` only meets this through a parameter set in the config). A recursive
    schema goes to the Python backend, whatever was asked: only there can a time limit stop it."""
    chosen = resolve_backend(backend)
    shape = analyse(schema)
    if shape.problems:
        raise EvaluationError(
            "its schema cannot be evaluated: "
            + "; ".join(f"{at or '(top)'}: {why}" for at, why in shape.problems[:3])
        )
    if chosen == "jsonschema-rs" and not shape.recursive:
        try:
            return RustSchema(schema)
        except jsonschema_rs.ValidationError as exc:
            message = str(getattr(exc, "message", None) or exc).splitlines()[0]
            raise EvaluationError(
                f"its schema cannot be evaluated: jsonschema-rs cannot compile it: "
                f"{shorten(message, 200)}"
            ) from None
    return ReferenceSchema(schema)


def evaluation_problems(schema: JSON) -> list[tuple[str, str]]:
    """Everything that would stop either backend evaluating `schema` (already a valid draft
    2020-12 schema): the static checks, then compiling it with jsonschema-rs."""
    problems = analyse(schema).problems
    if problems or not HAVE_RS:
        return problems
    try:
        jsonschema_rs.Draft202012Validator(schema, validate_formats=False, offline=True)
    except jsonschema_rs.ValidationError as exc:
        where = pointer(getattr(exc, "instance_path", None) or [])
        message = str(getattr(exc, "message", None) or exc).splitlines()[0]
        problems = [(where, f"jsonschema-rs cannot compile it: {shorten(message, 200)}")]
    return problems

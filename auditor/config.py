"""commsaudit.toml: loading, validation (unknown keys are errors) and defaults."""

from __future__ import annotations

import datetime as dt
import difflib
import math
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from auditor.aws.endpoints import endpoint_problem
from auditor.errors import ConfigError
from auditor.model.errors import quote
from auditor.validation import DEFAULT_TIMEOUT_SECONDS
from auditor.waivers import DEFAULT_WAIVER_MAX_DAYS, Waiver
from connectors.registry import CONNECTORS, PLANNED

DEFAULT_PROFILE = "hipaa"
DEFAULT_SIGNING_KEY_ENV = "COMMSAUDIT_SIGNING_KEY"

_EVIDENCE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "out": {"type": "string", "minLength": 1},
        "signing_key_file": {"type": "string", "minLength": 1},
        "signing_key_env": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
        "require_signature": {"type": "boolean"},
        "secret_env": {
            "type": "array",
            "items": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
        },
        "publish": {
            "type": "array",
            "description": "Where each bundle is also kept, checked after writing.",
            "items": {
                "oneOf": [
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["s3"],
                        "properties": {
                            "s3": {"type": "string", "pattern": "^s3://[^/]+(/.*)?$"},
                            "retention_days": {"type": "integer", "minimum": 1},
                            "mode": {"enum": ["COMPLIANCE", "GOVERNANCE"]},
                            "region": {"type": "string", "minLength": 1},
                            "endpoint_url": {"type": "string", "minLength": 1},
                            "profile": {"type": "string", "minLength": 1},
                            "role_arn": {"type": "string", "minLength": 1},
                            "external_id": {"type": "string", "minLength": 1},
                        },
                    },
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["directory"],
                        "properties": {"directory": {"type": "string", "minLength": 1}},
                    },
                ]
            },
        },
    },
}

_POLICIES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "profile": {"type": "string", "minLength": 1},
        "paths": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "validator": {"enum": ["auto", "jsonschema", "jsonschema-rs"]},
        # Seconds one policy may take on one subject; then it is `error` and the run goes on.
        "timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
        "waiver_max_days": {"type": "integer", "minimum": 1, "maximum": 3660},
        "controls": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "skip_controls": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "parameters": {
            "type": "object",
            "additionalProperties": {"type": "object"},
        },
    },
}

_WAIVER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["control", "reason", "approved_by", "expires"],
    "properties": {
        "control": {"type": "string", "minLength": 1},
        "subject": {"type": "string", "minLength": 1},
        "reason": {"type": "string", "minLength": 1},
        "approved_by": {"type": "string", "minLength": 1},
        "expires": {"type": "string", "format": "date"},
        "approved_on": {"type": "string", "format": "date"},
    },
}


def config_schema(sections: Iterable[str] | None = None) -> dict[str, Any]:
    """The config file's schema; with `sections`, only those connectors' tables are described in
    full (the others are still known names), so checking a config imports only its connectors."""
    wanted = set(CONNECTORS) if sections is None else set(sections)
    properties: dict[str, Any] = {
        "evidence": _EVIDENCE_SCHEMA,
        "policies": _POLICIES_SCHEMA,
        "waivers": {"type": "array", "items": _WAIVER_SCHEMA},
    }
    for name in CONNECTORS:
        properties[name] = CONNECTORS[name].config_schema if name in wanted else {}
    for name in PLANNED:
        properties[name] = {"type": "object"}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
    }


# Connectors a config may repeat, one table per tenant or account ([[m365]], [[aws]]).
REPEATABLE = ("m365", "aws")


@dataclass
class EvidenceConfig:
    out: Path
    signing_key_file: Path | None = None
    signing_key_env: str = DEFAULT_SIGNING_KEY_ENV
    require_signature: bool = False
    secret_env: list[str] = field(default_factory=list)
    # Copies of each bundle: S3 with Object Lock, or directories (see auditor.evidence.publish).
    publish: list[dict[str, Any]] = field(default_factory=list)
    base_dir: Path = field(default_factory=Path)


@dataclass
class PoliciesConfig:
    profile: str = DEFAULT_PROFILE
    paths: list[Path] = field(default_factory=list)
    validator: str = "auto"
    controls: list[str] = field(default_factory=list)
    skip_controls: list[str] = field(default_factory=list)
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    waiver_max_days: int = DEFAULT_WAIVER_MAX_DAYS


@dataclass
class Config:
    path: Path | None
    base_dir: Path
    connectors: dict[str, dict[str, Any]]
    evidence: EvidenceConfig
    policies: PoliciesConfig
    waivers: list[Waiver]
    # Every configured connector table in order, repeats included ([[m365]] twice: two).
    instances: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return str(self.path) if self.path else "(built-in defaults)"


def _jsonable(value: Any) -> Any:
    """TOML dates and times become ISO text so the config validates as JSON."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return value


def _where(parts: list[str | int]) -> str:
    if not parts:
        return "the top level"
    if parts[0] == "waivers" and len(parts) > 1 and isinstance(parts[1], int):
        head = f"[[waivers]] #{parts[1] + 1}"
        rest = parts[2:]
    else:
        head = f"[{parts[0]}]"
        rest = parts[1:]
    if rest:
        head += " key " + ".".join(str(p) for p in rest)
    return head


def _explain(error: jsonschema.ValidationError) -> str:
    parts = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        schema = error.schema if isinstance(error.schema, dict) else {}
        known = sorted(schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(known))
        key = unknown[0] if unknown else "?"
        place = "at the top level" if not parts else f"in {_where(parts)}"
        noun = "section" if not parts else "key"
        text = f"unknown {noun} {quote(key)} {place}"
        close = difflib.get_close_matches(key, known, n=1)
        if close:
            text += f"; did you mean '{close[0]}'?"
        elif known:
            text += f"; known: {', '.join(known)}"
        return text
    if error.validator == "required":
        return f"{_where(parts)}: {error.message}"
    shown = quote(error.instance)  # never more than a line of what was written
    if error.validator == "format" and error.validator_value == "date":
        return f"{_where(parts)}: {shown} is not a date (write it as 2027-01-31)"
    return f"{_where(parts)}: {error.message.replace(repr(error.instance), shown)}"


def _resolve(base_dir: Path, value: str) -> Path:
    return (base_dir / Path(value).expanduser()).resolve()


def _check(data: dict[str, Any], where: str, prefix: str = "") -> None:
    validator = jsonschema.Draft202012Validator(
        config_schema(data), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    errors = sorted(validator.iter_errors(data), key=lambda e: (list(map(str, e.path)), e.message))
    if errors:
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ConfigError(prefix + _explain(errors[0]) + more, where=where)


def _split_repeated(data: dict[str, Any], where: str) -> dict[str, list[dict[str, Any]]]:
    """Connector tables given as [[name]] (an MSP's several tenants or accounts): each checked
    on its own, as if it were the only one."""
    repeated: dict[str, list[dict[str, Any]]] = {}
    for name in CONNECTORS:
        value = data.get(name)
        if not isinstance(value, list):
            continue
        if name not in REPEATABLE:
            raise ConfigError(
                f"[[{name}]] can appear only once; write it as [{name}]",
                where=where,
                hint=f"several tables are for {', '.join(f'[[{n}]]' for n in REPEATABLE)}",
            )
        if not value:
            raise ConfigError(f"[[{name}]] is empty", where=where)
        for index, entry in enumerate(value[1:], 2):
            _check({name: entry}, where, prefix=f"[[{name}]] #{index}: ")
        repeated[name] = value
        data[name] = value[0]
    return repeated


# Deeper than any config needs (a connector's table of lists of tables is four levels): a
# config nested deeper is refused before tomllib, which recurses once per level, reads it.
MAX_DEPTH = 32

# Outside TOML's strings and comments: brackets, and the bare nan/inf values TOML allows.
_TOML_TOKENS = re.compile(
    r'"""(?:[^\\]|\\.)*?"""'
    r"|'''.*?'''"
    r'|"(?:[^"\\\n]|\\.)*"'
    r"|'[^'\n]*'"
    r"|#[^\n]*"
    r"|(?P<open>[\[{])|(?P<close>[\]}])"
    r"|(?P<bare>(?<![\w.+-])[+-]?(?:nan|inf)(?![\w.+-])(?!\s*=))",
    re.DOTALL,
)


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _too_deep_line(text: str) -> int | None:
    depth = 0
    for match in _TOML_TOKENS.finditer(text):
        if match.group("open"):
            depth += 1
            if depth > MAX_DEPTH:
                return _line_of(text, match.start())
        elif match.group("close"):
            depth -= 1
    return None


def _not_finite(data: Any) -> tuple[list[str | int], float] | None:
    """The path and value of the first NaN or infinity in parsed config data."""
    stack: list[tuple[list[str | int], Any]] = [([], data)]
    while stack:
        parts, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return parts, value
        if isinstance(value, dict):
            stack.extend(([*parts, k], v) for k, v in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend(([*parts, i], v) for i, v in reversed(list(enumerate(value))))
    return None


def _check_finite(data: dict[str, Any], where: str, text: str | None) -> None:
    """TOML has nan and inf; no setting means either, and NaN passes every numeric limit."""
    found = _not_finite(data)
    if found is None:
        return
    parts, value = found
    bare = next((m for m in _TOML_TOKENS.finditer(text or "") if m.group("bare")), None)
    raise ConfigError(
        f"{_where(parts)}: {value} is not a finite number (nan and inf are not allowed)",
        where=f"{where}:{_line_of(text or '', bare.start())}" if bare else where,
        hint="write the number meant",
    )


def parse_config(
    data: dict[str, Any], path: Path | None, base_dir: Path, *, text: str | None = None
) -> Config:
    """`text`, the file's text when there is one, lets errors name a line."""
    where = str(path) if path else "config"
    _check_finite(data, where, text)
    data = _jsonable(data)
    repeated = _split_repeated(data, where)
    _check(data, where)
    for name in PLANNED:
        if name in data:
            raise ConfigError(
                f"[{name}]: the {PLANNED[name]} connector is not available in this version of "
                "commsaudit yet",
                where=where,
                hint=f"remove the [{name}] section, or try `commsaudit audit --demo`",
            )

    evidence_data = data.get("evidence", {})
    for number, entry in enumerate(evidence_data.get("publish", []), 1):
        # The copy is signed with AWS keys: checked now, not after a whole run has been collected.
        problem = endpoint_problem(entry["endpoint_url"]) if "endpoint_url" in entry else None
        if problem is not None:
            raise ConfigError(f"[evidence] publish #{number}: {problem}", where=where)
    evidence = EvidenceConfig(
        out=_resolve(base_dir, evidence_data.get("out", "commsaudit-out")),
        signing_key_file=(
            _resolve(base_dir, evidence_data["signing_key_file"])
            if "signing_key_file" in evidence_data
            else None
        ),
        signing_key_env=evidence_data.get("signing_key_env", DEFAULT_SIGNING_KEY_ENV),
        require_signature=evidence_data.get("require_signature", False),
        secret_env=list(evidence_data.get("secret_env", [])),
        publish=[dict(entry) for entry in evidence_data.get("publish", [])],
        base_dir=base_dir,
    )
    policies_data = data.get("policies", {})
    policies = PoliciesConfig(
        profile=policies_data.get("profile", DEFAULT_PROFILE),
        paths=[_resolve(base_dir, p) for p in policies_data.get("paths", [])],
        validator=policies_data.get("validator", "auto"),
        controls=list(policies_data.get("controls", [])),
        skip_controls=list(policies_data.get("skip_controls", [])),
        parameters=dict(policies_data.get("parameters", {})),
        timeout_seconds=float(policies_data.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)),
        waiver_max_days=int(policies_data.get("waiver_max_days", DEFAULT_WAIVER_MAX_DAYS)),
    )
    waivers = [Waiver.from_json(w, i) for i, w in enumerate(data.get("waivers", []))]
    connectors = {name: data[name] for name in CONNECTORS if name in data}
    instances = [
        (name, entry)
        for name in CONNECTORS
        if name in data
        for entry in repeated.get(name, [data[name]])
    ]
    return Config(
        path=path,
        base_dir=base_dir,
        connectors=connectors,
        evidence=evidence,
        policies=policies,
        waivers=waivers,
        instances=instances,
    )


def load_config(path: Path) -> Config:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the config file: {exc.strerror}",
            where=str(path),
            hint="pass --config FILE, or run `commsaudit audit --demo` to try the sample",
        ) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"not UTF-8 text (byte 0x{raw[exc.start]:02x})",
            where=f"{path}:{line}",
            hint="TOML files are UTF-8; save it as UTF-8",
        ) from None
    deep = _too_deep_line(text)
    if deep is not None:
        raise ConfigError(
            f"invalid TOML: arrays or tables nested more than {MAX_DEPTH} levels deep",
            where=f"{path}:{deep}",
        )
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", where=str(path)) from exc
    return parse_config(data, path, path.parent.resolve(), text=text)


def default_config(base_dir: Path) -> Config:
    return parse_config({}, None, base_dir)

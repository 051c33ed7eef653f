"""The attestations connector: the organisational safeguards, read from a dated records file."""

from __future__ import annotations

import datetime as dt
import difflib
import json
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import jsonschema

from auditor.model.errors import InputError, quote, shorten
from auditor.model.section import Platform, SubjectKind
from connectors.attestations.document import Document, DocumentError, load_document
from connectors.attestations.normalise import normalise
from connectors.base import CollectContext, Connector, Permission, RawRecord

_SCHEMA_PATH = Path(__file__).with_name("schema.json")
# Record lists whose `date` (or `signed`) says when something happened: it cannot be later than
# the run.
_PAST_DATES = {
    "business_associate_agreements": "signed",
    "risk_analyses": "date",
    "trainings": "date",
    "restore_tests": "date",
    "incident_response_reviews": "date",
    "compliance_audits": "date",
    "vendor_verifications": "date",
    "manual_checks": "date",
}


@cache
def attestations_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(_SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema


def _location(parts: list[str | int]) -> str:
    """`trainings[0].date` for a path of keys and indexes."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(top level)"


def _message(error: jsonschema.ValidationError, first_line: str | None) -> str:
    schema = error.schema if isinstance(error.schema, dict) else {}
    # The value as the error quotes it: never more than its first line, shortened (a config
    # pointed at the wrong file must not print the file).
    if first_line is not None:  # the value goes on beyond this line
        shown = repr(shorten(first_line).removesuffix("…") + "…")
    else:
        shown = quote(error.instance)
    if error.validator in ("additionalProperties", "unevaluatedProperties") and isinstance(
        error.instance, dict
    ):
        known = set(schema.get("properties", {}))
        if error.validator == "unevaluatedProperties":
            known |= set(attestations_schema()["$defs"]["record"]["properties"])
        unknown = sorted(set(error.instance) - known)
        if unknown:
            text = f"unknown key {quote(unknown[0])}"
            close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
            return text + (f"; did you mean {close[0]!r}?" if close else "")
    if error.validator == "format" and error.validator_value == "date":
        return f"{shown} is not a valid date (expected YYYY-MM-DD)"
    if error.validator == "pattern" and isinstance(error.instance, str):
        if schema.get("format") == "date":
            return f"{shown} is not a valid date (expected YYYY-MM-DD)"
        return f"{shown} does not have the expected form ({error.validator_value})"
    if error.validator == "type" and not error.absolute_path:
        return (
            f"the file holds {shown}, not a mapping of attestation records (organisation, "
            "trainings, ...); is this the attestations file?"
        )
    return error.message.replace(repr(error.instance), shown)


def _escape(part: str | int) -> str:
    return str(part).replace("~", "~0").replace("/", "~1")


def validate_document(document: Document, where: str, today: dt.date) -> None:
    """Raise InputError naming the first problem, its path and its line."""
    data, lines = document.data, document.lines
    validator = jsonschema.Draft202012Validator(
        attestations_schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    # Report the problem nearest the top of the file first: that is where a person starts reading.
    errors = sorted(
        validator.iter_errors(data),
        key=lambda e: (lines.get("".join("/" + _escape(p) for p in e.absolute_path), 0), str(e)),
    )
    if errors:
        error = errors[0]
        parts = list(error.absolute_path)
        ptr = "".join("/" + _escape(p) for p in parts)
        line = lines.get(ptr)
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise InputError(
            f"{_location(parts)}: {_message(error, document.first_lines.get(ptr))}{more}",
            where=f"{where}:{line}" if line else where,
        )
    for key, field in _PAST_DATES.items():
        for i, record in enumerate(data.get(key, [])):
            if dt.date.fromisoformat(record[field]) > today:
                line = lines.get(f"/{key}/{i}/{field}")
                raise InputError(
                    f"{key}[{i}].{field}: {record[field]} is later than today ({today}); "
                    "attestations record what has already happened",
                    where=f"{where}:{line}" if line else where,
                )
    for i, training in enumerate(data.get("trainings", [])):
        if training["completed"] > training["workforce"]:
            line = lines.get(f"/trainings/{i}/completed")
            raise InputError(
                f"trainings[{i}].completed: {training['completed']} is more than the workforce "
                f"of {training['workforce']}",
                where=f"{where}:{line}" if line else where,
            )


class AttestationsConnector(Connector):
    name: ClassVar[str] = "attestations"
    title: ClassVar[str] = "Attestations file"
    platforms: ClassVar[tuple[Platform, ...]] = ("org",)
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["file"],
        "properties": {
            "file": {
                "type": "string",
                "minLength": 1,
                "description": "YAML or JSON file of dated attestation records, "
                "relative to the config file.",
            },
        },
    }

    def __init__(self, config: dict[str, Any], base_dir: Path) -> None:
        super().__init__(config, base_dir)
        self.path = (base_dir / config["file"]).resolve()
        self._document: dict[str, Any] | None = None

    def _load(self, today: dt.date) -> tuple[bytes, dict[str, Any]]:
        where = str(self.path)
        try:
            content = self.path.read_bytes()
        except OSError as exc:
            raise InputError(
                f"cannot read the attestations file: {exc.strerror}",
                where=where,
                hint="set [attestations] file to a YAML or JSON file, relative to the config file",
            ) from exc
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError("the file is not UTF-8 text", where=where) from exc
        try:
            document = load_document(self.path, text)
        except DocumentError as exc:
            raise InputError(
                exc.message, where=f"{where}:{exc.line}" if exc.line else where
            ) from exc
        validate_document(document, where, today)
        return content, document.data

    def preflight(self, now: dt.datetime) -> None:
        _content, self._document = self._load(now.date())

    def planned_subjects(self) -> list[tuple[Platform, SubjectKind, str]]:
        if self._document is None:
            return []
        return [("org", "organisation", self._document["organisation"])]

    def scope(self) -> dict[str, Any]:
        return {"file": self.path.name}

    @classmethod
    def permissions(cls) -> list[Permission]:
        return [Permission("read access to the attestations file", "the only input it reads")]

    async def collect(self, ctx: CollectContext) -> None:
        today = ctx.now.date()
        # Re-read at collection time: the evidence is the file as it was when the run read it.
        content, document = self._load(today)
        organisation = document["organisation"]
        ctx.add_subject("org", "organisation", organisation)
        media = "application/json" if self.path.suffix.lower() == ".json" else "application/yaml"
        raw_path = ctx.add_raw(
            RawRecord(
                path=f"attestations/{self.path.name}",
                source=f"attestations:{self.path.name}",
                body=content,
                collected_at=ctx.now,
                request={"method": "READ", "file": self.path.name},
                media_type=media,
            )
        )
        for name, data in normalise(document, today).items():
            ctx.add_section(
                name,
                platform="org",
                subject=organisation,
                data=data,
                source=f"attestations:{self.path.name}",
                raw=(raw_path,),
            )

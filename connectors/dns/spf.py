"""SPF (RFC 7208) as a domain's posture: is its record valid for every sender it could be
checked against? That is the record's syntax (every mechanism, modifier and macro), exactly one
record, at most 10 DNS-querying terms counted through `include` and `redirect`, at most 2 void
lookups, no loops, and the `all` it ends with. The expanded include tree, with its counts, is
kept as evidence even when a limit is exceeded.

Limits are counted over the whole record, not just the part one sender's evaluation happens to
reach: a record that exceeds them fails for the senders that walk it to the end.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from connectors.dns.resolver import Answer, DnsLookupError, Resolver

LOOKUP_LIMIT = 10
VOID_LIMIT = 2
MX_LIMIT = 10
# Stop expanding beyond this many lookups: enough to show how far over the limit a record is,
# without following an unbounded chain.
_WALK_LIMIT = 40

MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
_MODIFIER = re.compile(r"^([A-Za-z][A-Za-z0-9\-_.]*)=(.*)$", re.DOTALL)
_TOPLABEL = re.compile(
    r"^(?:[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*|[A-Za-z0-9]+-[A-Za-z0-9-]*[A-Za-z0-9])$"
)
_MACRO = re.compile(r"%(?:\{([A-Za-z])([0-9]*)(r?)([.\-+,/_=]*)\}|%|_|-)")
_MACRO_LETTERS = set("slodiphv")
_EXP_ONLY_LETTERS = set("crt")
_QNUM = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IP4 = re.compile(rf"^{_QNUM}(?:\.{_QNUM}){{3}}$")


class SpfSyntaxError(Exception):
    pass


@dataclass(frozen=True)
class Term:
    text: str
    kind: str  # "mechanism" | "modifier"
    name: str
    qualifier: str = "+"
    value: str | None = None  # domain-spec, network, or modifier value
    cidr4: int | None = None
    cidr6: int | None = None

    @property
    def has_macro(self) -> bool:
        return self.value is not None and "%" in self.value


def _check_macro_string(value: str, *, exp: bool = False) -> None:
    position = 0
    while position < len(value):
        char = value[position]
        if char == "%":
            match = _MACRO.match(value, position)
            if match is None:
                raise SpfSyntaxError(f"bad macro at {value[position : position + 6]!r}")
            letter = (match.group(1) or "").lower()
            if (
                match.group(1)
                and letter not in _MACRO_LETTERS
                and not (exp and letter in _EXP_ONLY_LETTERS)
            ):
                raise SpfSyntaxError(f"unknown macro letter %{{{match.group(1)}}}")
            position = match.end()
            continue
        if not (0x21 <= ord(char) <= 0x7E):
            raise SpfSyntaxError(f"character {char!r} is not allowed")
        position += 1


def check_domain_spec(value: str) -> None:
    """`domain-spec = macro-string domain-end`: it ends in a top label (not all digits) or a
    macro."""
    if not value:
        raise SpfSyntaxError("empty domain")
    _check_macro_string(value)
    if any(m.end() == len(value) for m in _MACRO.finditer(value)):
        return  # domain-end = macro-expand
    trimmed = value[:-1] if value.endswith(".") else value
    if "." not in trimmed:
        raise SpfSyntaxError(f"{value!r} is not a domain (no top label)")
    top = trimmed.rsplit(".", 1)[1]
    if not _TOPLABEL.match(top):
        raise SpfSyntaxError(f"{value!r} does not end in a valid top label")
    labels = trimmed.split(".")
    if "%" not in trimmed and any(len(label) > 63 or not label for label in labels):
        raise SpfSyntaxError(f"{value!r} has an empty or over-long label")


def _cidr(text: str, maximum: int) -> int:
    if not text or not text.isdigit() or (len(text) > 1 and text[0] == "0"):
        raise SpfSyntaxError(f"bad prefix length /{text}")
    number = int(text)
    if number > maximum:
        raise SpfSyntaxError(f"prefix length /{text} is over {maximum}")
    return number


_DUAL_CIDR = re.compile(r"^(?P<rest>.*?)(?:/(?P<four>[0-9]+))?(?://(?P<six>[0-9]+))?$", re.DOTALL)


def _split_dual_cidr(rest: str) -> tuple[str, int | None, int | None]:
    """`:domain/24//64` -> (":domain", 24, 64). Only trailing digits are prefix lengths: `/`
    is also a legal character inside a domain-spec (`a:foo:bar/baz.example.com`)."""
    match = _DUAL_CIDR.match(rest)
    assert match is not None
    cidr4 = _cidr(match.group("four"), 32) if match.group("four") is not None else None
    cidr6 = _cidr(match.group("six"), 128) if match.group("six") is not None else None
    return match.group("rest"), cidr4, cidr6


def parse_term(text: str) -> Term:
    qualifier = "+"
    body = text
    if body[:1] in QUALIFIERS:
        qualifier, body = body[0], body[1:]
    name_end = len(body)
    for separator in (":", "/"):
        index = body.find(separator)
        if index != -1:
            name_end = min(name_end, index)
    name = body[:name_end].lower()
    rest = body[name_end:]
    if name in MECHANISMS:
        return _mechanism(text, qualifier, name, rest)
    modifier = _MODIFIER.match(text)
    if modifier is not None and qualifier == "+" and text[:1] not in QUALIFIERS:
        key, value = modifier.group(1).lower(), modifier.group(2)
        if key in ("redirect", "exp"):
            check_domain_spec(value)
        else:
            _check_macro_string(value)
        return Term(text, "modifier", key, value=value)
    raise SpfSyntaxError(f"unknown mechanism {body.split(':')[0].split('/')[0]!r}")


def _mechanism(text: str, qualifier: str, name: str, rest: str) -> Term:
    if name == "all":
        if rest:
            raise SpfSyntaxError("'all' takes no argument")
        return Term(text, "mechanism", name, qualifier)
    if name in ("include", "exists"):
        if not rest.startswith(":"):
            raise SpfSyntaxError(f"'{name}' needs ':domain'")
        check_domain_spec(rest[1:])
        return Term(text, "mechanism", name, qualifier, rest[1:])
    if name == "ptr":
        if rest.startswith("/"):
            raise SpfSyntaxError("'ptr' takes no prefix length")
        domain = rest[1:] if rest.startswith(":") else None
        if rest and not rest.startswith(":"):
            raise SpfSyntaxError(f"bad 'ptr' argument {rest!r}")
        if domain is not None:
            check_domain_spec(domain)
        return Term(text, "mechanism", name, qualifier, domain)
    if name in ("a", "mx"):
        domain_part, cidr4, cidr6 = _split_dual_cidr(rest)
        domain = None
        if domain_part:
            if not domain_part.startswith(":"):
                raise SpfSyntaxError(f"bad '{name}' argument {rest!r}")
            domain = domain_part[1:]
            check_domain_spec(domain)
        return Term(text, "mechanism", name, qualifier, domain, cidr4, cidr6)
    if not rest.startswith(":"):
        raise SpfSyntaxError(f"'{name}' needs ':network'")
    network = rest[1:]
    if name == "ip4":
        address, _, prefix = network.partition("/")
        if not _IP4.match(address):
            raise SpfSyntaxError(f"{address!r} is not an IPv4 address")
        cidr = _cidr(prefix, 32) if "/" in network else None
        return Term(text, "mechanism", name, qualifier, address, cidr4=cidr)
    address, _, prefix = network.partition("/")
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        raise SpfSyntaxError(f"{address!r} is not an IPv6 address") from None
    cidr6 = _cidr(prefix, 128) if "/" in network else None
    return Term(text, "mechanism", name, qualifier, address, cidr6=cidr6)


def parse_record(record: str) -> list[Term]:
    """Every term of a record; SpfSyntaxError on the first one that is not valid."""
    if not record.isascii():
        raise SpfSyntaxError("the record is not 7-bit ASCII")
    tokens = record.split(" ")
    if tokens[0].lower() != "v=spf1":
        raise SpfSyntaxError("the record does not start with v=spf1")
    terms = []
    seen: set[str] = set()
    for token in tokens[1:]:
        if not token:
            continue
        term = parse_term(token)
        if term.kind == "modifier" and term.name in ("redirect", "exp"):
            if term.name in seen:
                raise SpfSyntaxError(f"'{term.name}' appears more than once")
            seen.add(term.name)
        terms.append(term)
    return terms


def select_records(raw: tuple[bytes, ...]) -> list[bytes]:
    """The TXT strings that are SPF records (`v=spf1` then a space or the end)."""
    found = []
    for text in raw:
        head = text[:7].lower()
        if head == b"v=spf1" or head == b"v=spf1 ":
            found.append(text)
    return found


@dataclass
class Problem:
    code: str  # syntax | multiple-records | no-record | lookup-limit | void-limit | loop | mx-limit
    message: str
    domain: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "domain": self.domain}


@dataclass
class Node:
    """One record in the include tree."""

    domain: str
    via: str  # "record" | "include" | "redirect"
    record: str | None = None
    lookups: int = 0  # this record's own DNS-querying terms
    void_lookups: int = 0
    all: str | None = None
    children: list[Node] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "domain": self.domain,
            "via": self.via,
            "record": self.record,
            "lookups": self.lookups,
            "void_lookups": self.void_lookups,
            "all": self.all,
        }
        if self.notes:
            out["notes"] = self.notes
        if self.children:
            out["children"] = [c.to_json() for c in self.children]
        return out


@dataclass
class Analysis:
    domain: str
    status: str = "valid"  # valid | invalid | none | error
    record: str | None = None
    lookups: int = 0
    void_lookups: int = 0
    problems: list[Problem] = field(default_factory=list)
    tree: Node | None = None
    error: str | None = None
    targets: list[str] = field(default_factory=list)  # every include/redirect domain reached

    @property
    def effective_all(self) -> str | None:
        """The `all` that ends evaluation: the record's own, or its redirect target's."""
        node = self.tree
        while node is not None:
            if node.all is not None:
                return node.all
            node = next((c for c in node.children if c.via == "redirect"), None)
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "status": self.status,
            "record": self.record,
            "all": self.effective_all,
            "lookups": self.lookups,
            "lookup_limit": LOOKUP_LIMIT,
            "void_lookups": self.void_lookups,
            "void_lookup_limit": VOID_LIMIT,
            "problems": [p.to_json() for p in self.problems],
            "targets": self.targets,
            "tree": self.tree.to_json() if self.tree else None,
            "error": self.error,
        }


class _Walk:
    def __init__(self, resolver: Resolver, analysis: Analysis) -> None:
        self.resolver = resolver
        self.analysis = analysis

    def problem(self, code: str, message: str, domain: str) -> None:
        if self.analysis.status == "valid":
            self.analysis.status = "invalid"
        self.analysis.problems.append(Problem(code, message, domain))

    async def record(self, domain: str) -> tuple[str | None, str | None]:
        """(record, problem code) for `domain`; None, "no-record" when it has none."""
        answer = await self.resolver.query(domain, "TXT")
        records = select_records(answer.raw) if answer.status == "ok" else []
        if not records:
            return None, "no-record"
        if len(records) > 1:
            return records[0].decode("latin-1"), "multiple-records"
        return records[0].decode("latin-1"), None

    async def void(self, name: str, rdtype: str, node: Node) -> Answer:
        answer = await self.resolver.query(name, rdtype)
        if answer.void:
            node.void_lookups += 1
            self.analysis.void_lookups += 1
        return answer

    async def visit(self, domain: str, via: str, path: tuple[str, ...]) -> Node:
        node = Node(domain, via)
        record, code = await self.record(domain)
        node.record = record
        if code == "no-record":
            if via == "record":
                self.analysis.status = "none"
            else:
                self.problem("no-record", f"{via} target {domain} has no SPF record", domain)
            return node
        if code == "multiple-records":
            self.problem("multiple-records", f"{domain} publishes more than one SPF record", domain)
            return node
        assert record is not None
        try:
            terms = parse_record(record)
        except SpfSyntaxError as exc:
            self.problem("syntax", f"{domain}: {exc}", domain)
            return node
        has_all = any(t.name == "all" for t in terms if t.kind == "mechanism")
        for term in terms:
            if term.kind == "mechanism" and term.name == "all":
                node.all = f"{term.qualifier}all"
            if self.analysis.lookups > _WALK_LIMIT:
                node.notes.append("not expanded further: far beyond the lookup limit")
                break
            await self.term(node, term, has_all, path)
        return node

    async def term(self, node: Node, term: Term, has_all: bool, path: tuple[str, ...]) -> None:
        counts = term.name in ("include", "a", "mx", "ptr", "exists") or (
            term.kind == "modifier" and term.name == "redirect" and not has_all
        )
        if term.kind == "modifier" and term.name != "redirect":
            return
        if not counts:
            return
        node.lookups += 1
        self.analysis.lookups += 1
        target = term.value
        if term.has_macro:
            node.notes.append(f"{term.text}: depends on the sender (macro), not expanded")
            return
        if term.name in ("include", "redirect"):
            assert target is not None
            child_domain = target.rstrip(".").lower()
            if child_domain in path:
                self.problem("loop", f"{term.text} loops back to {child_domain}", node.domain)
                return
            self.analysis.targets.append(child_domain)
            via = "include" if term.name == "include" else "redirect"
            node.children.append(await self.visit(child_domain, via, (*path, child_domain)))
        elif term.name == "a":
            await self.void(target or node.domain, "A", node)
        elif term.name == "mx":
            answer = await self.void(target or node.domain, "MX", node)
            if len(answer.records) > MX_LIMIT:
                self.problem(
                    "mx-limit",
                    f"{term.text}: {len(answer.records)} MX hosts, over {MX_LIMIT}",
                    node.domain,
                )
        elif term.name == "exists":
            assert target is not None
            await self.void(target, "A", node)
        elif term.name == "ptr":
            node.notes.append("ptr: discouraged by RFC 7208 (slow, unreliable)")


async def analyse(domain: str, resolver: Resolver) -> Analysis:
    """The SPF posture of `domain`. A lookup that fails (timeout, SERVFAIL) makes the whole
    analysis `error` with its reason: never `none` or `invalid`."""
    analysis = Analysis(domain.rstrip(".").lower())
    walk = _Walk(resolver, analysis)
    try:
        analysis.tree = await walk.visit(analysis.domain, "record", (analysis.domain,))
    except DnsLookupError as exc:
        analysis.status = "error"
        analysis.error = f"SPF lookup failed: {exc}"
        return analysis
    analysis.record = analysis.tree.record
    if analysis.lookups > LOOKUP_LIMIT:
        walk.problem(
            "lookup-limit",
            f"{analysis.lookups} DNS-querying terms, over the limit of {LOOKUP_LIMIT}",
            analysis.domain,
        )
    if analysis.void_lookups > VOID_LIMIT:
        walk.problem(
            "void-limit",
            f"{analysis.void_lookups} lookups found nothing, over the limit of {VOID_LIMIT}",
            analysis.domain,
        )
    return analysis

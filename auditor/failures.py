"""A schema failure in plain words, the same whichever backend found it.

Messages are written from the failing keyword, its value and the offending instance (never from a
backend's own message), so the evidence reads the same from python-jsonschema and jsonschema-rs.
"""

from __future__ import annotations

from dataclasses import dataclass

from auditor.jsonutil import JSON, json_excerpt, pointer, resolve_pointer, type_name


@dataclass(frozen=True)
class Failure:
    """One way the instance breaks the schema."""

    pointer: str
    keyword: str
    schema_path: tuple[str | int, ...]
    value: JSON
    message: str

    def key(self) -> tuple[str, str, str]:
        """What the failure is: where, which rule, what it says. The schema path is left out:
        the two backends spell paths through $ref differently."""
        return (self.pointer, self.keyword, self.message)


def keyword_schema(root: JSON, schema_path: tuple[str | int, ...]) -> tuple[JSON, JSON] | None:
    """(schema object holding the keyword, the keyword's value), following local $refs."""
    node = root
    parent: JSON = root
    for part in schema_path:
        if isinstance(node, dict) and "$ref" in node and part not in node:
            ref = node["$ref"]
            if not (isinstance(ref, str) and ref.startswith("#")):
                return None
            try:
                node = resolve_pointer(root, ref[1:])
            except KeyError:
                return None
        parent = node
        if part == "$ref" and isinstance(node, dict) and isinstance(node.get("$ref"), str):
            try:
                node = resolve_pointer(root, node["$ref"][1:])
            except KeyError:
                return None
            continue
        if isinstance(node, dict) and str(part) in node:
            node = node[str(part)]
        elif isinstance(node, list) and str(part).isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return parent, node


def describe(keyword: str, value: JSON, instance: JSON, holder: JSON) -> str:
    """Plain words for one failure: what the value is and what was expected."""
    text: str
    if keyword == "const":
        text = f"is {json_excerpt(instance)}; expected {json_excerpt(value)}"
    elif keyword == "enum":
        accepted = ", ".join(json_excerpt(v) for v in value)
        text = f"is {json_excerpt(instance)}; expected one of {accepted}"
    elif keyword == "type":
        wanted = " or ".join(value) if isinstance(value, list) else value
        text = f"is {type_name(instance)} ({json_excerpt(instance, 40)}); expected {wanted}"
    elif keyword == "required":
        missing = [k for k in value if isinstance(instance, dict) and k not in instance]
        text = f"lacks required {'properties' if len(missing) > 1 else 'property'} " + ", ".join(
            json_excerpt(k) for k in missing
        )
    elif keyword == "minimum":
        text = f"is {json_excerpt(instance)}; must be at least {json_excerpt(value)}"
    elif keyword == "maximum":
        text = f"is {json_excerpt(instance)}; must be at most {json_excerpt(value)}"
    elif keyword == "exclusiveMinimum":
        text = f"is {json_excerpt(instance)}; must be more than {json_excerpt(value)}"
    elif keyword == "exclusiveMaximum":
        text = f"is {json_excerpt(instance)}; must be less than {json_excerpt(value)}"
    elif keyword in ("minItems", "maxItems"):
        size = len(instance) if isinstance(instance, list) else 0
        bound = "at least" if keyword == "minItems" else "at most"
        text = f"has {size} item(s); must have {bound} {value}"
    elif keyword in ("minLength", "maxLength"):
        bound = "at least" if keyword == "minLength" else "at most"
        text = f"is {json_excerpt(instance)}; must be {bound} {value} characters long"
    elif keyword in ("minProperties", "maxProperties"):
        bound = "at least" if keyword == "minProperties" else "at most"
        size = len(instance) if isinstance(instance, dict) else 0
        text = f"has {size} properties; must have {bound} {value}"
    elif keyword == "pattern":
        text = f"is {json_excerpt(instance)}; must match the pattern {value}"
    elif keyword in ("contains", "minContains"):
        least = holder.get("minContains", 1) if isinstance(holder, dict) else 1
        text = (
            "has no item that meets the requirement"
            if least == 1
            else f"has fewer than {least} items that meet the requirement"
        )
    elif keyword == "maxContains":
        text = f"has more than {value} items that meet the requirement"
    elif keyword == "not":
        text = f"is {json_excerpt(instance, 60)}, which is not allowed here"
    elif keyword == "anyOf":
        text = f"is {json_excerpt(instance, 60)}, which matches none of the accepted forms"
    elif keyword == "oneOf":
        text = (
            f"is {json_excerpt(instance, 60)}, "
            "which does not match exactly one of the accepted forms"
        )
    elif keyword == "unevaluatedProperties":
        text = "has properties that no part of the schema allows"
    elif keyword == "additionalProperties":
        known = set(holder.get("properties", {})) if isinstance(holder, dict) else set()
        extra = sorted(set(instance) - known) if isinstance(instance, dict) else []
        text = "has properties that are not allowed" + (
            ": " + ", ".join(json_excerpt(k) for k in extra)
            if extra and not holder.get("patternProperties")
            else ""
        )
    elif keyword == "uniqueItems":
        text = "has duplicate items"
    elif keyword == "multipleOf":
        text = f"is {json_excerpt(instance)}; must be a multiple of {json_excerpt(value)}"
    elif keyword == "false" or value is False:
        text = f"is {json_excerpt(instance, 60)}, which is not allowed here"
    else:
        text = f"is {json_excerpt(instance, 60)}; fails {keyword!r}"
    description = holder.get("description") if isinstance(holder, dict) else None
    return f"{text} ({description})" if isinstance(description, str) else text


# Keywords whose failure the backends attribute differently (jsonschema blames `contains` for an
# unmet `minContains`; jsonschema-rs blames `minContains`): one name for both.
_SAME_RULE = {"minContains": "contains"}


def to_failure(
    root: JSON,
    path: list[str | int],
    schema_path: tuple[str | int, ...],
    instance: JSON,
    fallback: str,
) -> Failure:
    """One backend error (instance path, schema path, instance) in these words; the backend's
    own message is the `fallback` when the keyword cannot be found in `root`."""
    keyword = str(schema_path[-1]) if schema_path else "false"
    if "propertyNames" in schema_path:
        # The backends disagree on the instance here (the name, or the object holding it).
        return Failure(
            pointer(path),
            "propertyNames",
            schema_path,
            None,
            "has a property name that the schema does not allow",
        )
    found = keyword_schema(root, schema_path) if schema_path else (root, False)
    if found is None:
        message = fallback
    else:
        holder, value = found
        message = describe(keyword, value, instance, holder)
    return Failure(pointer(path), _SAME_RULE.get(keyword, keyword), schema_path, instance, message)

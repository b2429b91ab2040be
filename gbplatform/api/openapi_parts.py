"""The small pieces every OpenAPI path builder writes: references into ``components``, the error
answer, a query parameter.

The feature packages' ``openapi`` modules and ``gbplatform.api.openapi`` take them from here; this
module imports nothing, so no builder imports the document that imports it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["error", "query", "ref", "response_ref", "schema_ref"]


def ref(kind: str, name: str) -> dict[str, str]:
    """``{"$ref": "#/components/<kind>/<name>"}``."""
    return {"$ref": f"#/components/{kind}/{name}"}


def schema_ref(name: str) -> dict[str, str]:
    return ref("schemas", name)


def response_ref(name: str) -> dict[str, str]:
    return ref("responses", name)


def error(description: str) -> dict[str, Any]:
    """An answer carrying the ``Error`` component."""
    return {"description": description, "content": {"application/json": {"schema": schema_ref("Error")}}}


def query(name: str, schema: dict[str, Any], description: str, *, required: bool = False) -> dict[str, Any]:
    """A query-string parameter."""
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}

"""Command declarations: each MANSCDP command's XML shape written once, decode and encode derived.

GB/T 28181-2016 Annex A gives every command as a root element (``Query``,
``Control``, ``Notify``, ``Response``, §A.2.1) whose first children are
``CmdType``, ``SN`` and ``DeviceID``, followed by command-specific children.
A :class:`Command` declares, for one ``(root, CmdType)``:

- the message class (a frozen dataclass derived from the root's generic class),
- its ``CmdType`` and any alternate spellings devices use (matched
  case-insensitively, like every element name),
- its shape: a tuple of field specs, in the element order of the standard.

Field specs
-----------
``Leaf(tag, attr, type)``
    one simple element; ``type`` is ``str``, ``int``, ``float``, ``datetime``,
    ``bool`` or an ``Enum`` with string values.  Values that do not parse are
    logged and become None (a device's bad ``Channel`` must not cost the rest
    of the answer); ``required=True`` makes an absent element (and, for ``int``,
    a non-number) a :class:`ManscdpError`.  ``fallback`` names a sibling
    element whose leaf children are searched when the element is absent
    (``BusinessGroupID`` inside ``Info``).
``LeafMap(tag, attr)``
    every leaf child of one element as ``dict[str, str]`` (the catalog ``Info``);
    with ``deep=True`` every leaf below it, keyed by its path
    (``SVCParam/SVCSpaceDomainMode``, ``xmltext.leaf_paths``: SVACEncodeConfig).
``Extra(attr)``
    the leaf children of the enclosing element no other spec names.
``Nested(tag, attr, Struct(cls, fields))``
    one child element read into another dataclass (``BasicParam``).
``Repeated(tag, attr, Struct(cls, fields))``
    ``<Tag Num="n"><Item>...</Item>...</Tag>``, read into a tuple; ``Num`` is
    always written as the number of items.  With ``optional=True`` an absent
    list is None and None is not written (a part of DeviceConfig that is set
    only when asked, GB/T 28181-2022 ``VideoParamAttribute``).
``Each(tag, attr, Struct(cls, fields))``
    every ``<Tag>`` child of the enclosing element, without a list wrapper,
    read into a tuple and written as that many elements (GB/T 28181-2022
    ``VideoRecordPlan/RecordSchedule``, ``RecordSchedule/TimeSegment``,
    ``OSDConfig/Item``).
``Total(tag, attr, of)``
    a count over several messages (``SumNum``): a strict integer, defaulting
    to the ``Num`` (else the length) of the ``Repeated`` named by ``of``.

Decoding looks the command up by ``(root, CmdType)``; an undeclared command
becomes the generic class of its root with every leaf child in ``fields``.
Encoding writes the header, then each spec in order, then any ``extra``
children the caller adds.  A :class:`Registry` other than the default one
serves tests and experiments without touching the declared commands.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, Final, TypeAlias

if TYPE_CHECKING:  # lxml loads with the first body parsed (xmltext.parse_xml), not at import
    from lxml import etree


from sip.manscdp.gbtime import format_gb_time, parse_gb_time
from sip.manscdp.messages import GENERIC, ROOTS, ManscdpError, ManscdpMessage, Response
from sip.manscdp.quirks import QUIRK_ITEMS_UNDER_ROOT, QUIRK_LIST_CUT
from sip.manscdp.xmltext import (
    XmlValue,
    attr_ci,
    check_tag,
    child_elements,
    child_index,
    emit,
    emit_paths,
    finish,
    header_lines,
    leaf_fields,
    leaf_paths,
    lenient_int,
    local_name,
    strict_uint,
    text_of,
)

__all__ = [
    "REGISTRY",
    "Command",
    "Each",
    "Extra",
    "FieldSpec",
    "Leaf",
    "LeafMap",
    "Nested",
    "Registry",
    "Repeated",
    "Struct",
    "Total",
    "declare",
    "decode_tree",
    "encode",
]

# One logger for the whole codec, so quirk logs keep the name operators filter on.
logger = logging.getLogger("sip.manscdp")

_HEADER_TAGS: Final = frozenset({"cmdtype", "sn", "deviceid"})
_TRUE: Final = frozenset({"true", "1", "on", "yes"})
_FALSE: Final = frozenset({"false", "0", "off", "no"})

LeafType: TypeAlias = type[str] | type[int] | type[float] | type[datetime] | type[bool] | type[Enum]
"""What a ``Leaf`` holds; ``bool`` is written TRUE/FALSE, an Enum as its value."""


# --------------------------------------------------------------------------- field specs


@dataclass(frozen=True)
class Leaf:
    """One simple child element ``<tag>text</tag>`` held in ``attr``."""

    tag: str
    attr: str
    type: LeafType = str
    required: bool = False
    fallback: str | None = None


@dataclass(frozen=True)
class LeafMap:
    """Every leaf child of ``<tag>`` as a ``dict[str, str]``, or with ``deep`` every leaf below it by
    its path; written only when not empty."""

    tag: str
    attr: str
    deep: bool = False


@dataclass(frozen=True)
class Extra:
    """The leaf children no other spec of the same shape names, as ``dict[str, str]``."""

    attr: str


@dataclass(frozen=True)
class Struct:
    """The shape of an element read into the dataclass ``cls`` (keyword arguments by ``attr``)."""

    cls: type[object]
    fields: tuple[FieldSpec, ...]


@dataclass(frozen=True)
class Nested:
    """One child element ``<tag>`` read into ``shape.cls``; None when absent (and not written)."""

    tag: str
    attr: str
    shape: Struct


@dataclass(frozen=True)
class Repeated:
    """A list ``<tag Num="n"><item_tag>...</item_tag>...</tag>`` read into a tuple of ``shape.cls``.

    ``num_attr`` receives the declared ``Num`` (None when absent or garbled);
    ``bare_items`` also accepts items sent without the wrapper, directly under
    the parent (a named quirk).  The wrapper is always written, ``Num`` being
    the number of items; with ``optional`` an absent wrapper (and no bare
    item) reads as None, and None writes nothing.
    """

    tag: str
    attr: str
    shape: Struct
    item_tag: str = "Item"
    num_attr: str | None = None
    bare_items: bool = False
    optional: bool = False
    # Other item tags read as items (``Item`` where GB/T 28181-2022 names ``CruiseTrack``); written as item_tag.
    item_aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Each:
    """Every child ``<tag>`` of the enclosing element, in order, read into a tuple of ``shape.cls``.

    For the lists the standard writes without a wrapper, one element per item
    (GB/T 28181-2022 §A.2.3.2 ``RecordSchedule``, ``TimeSegment``, the
    ``OSDConfig`` ``Item``); a ``Num`` attribute some devices add to each item
    is ignored.  Written as one ``<tag>`` per item, none for an empty tuple.
    """

    tag: str
    attr: str
    shape: Struct


@dataclass(frozen=True)
class Total:
    """A strict count (``SumNum``) defaulting to the ``Num``, else the length, of ``Repeated`` ``of``."""

    tag: str
    attr: str
    of: str


FieldSpec: TypeAlias = Leaf | LeafMap | Extra | Nested | Repeated | Each | Total


@dataclass(frozen=True)
class Command:
    """One MANSCDP command declared once: root ``kind``, ``cmd_type`` (+ ``aliases``), class, shape."""

    kind: str
    cmd_type: str
    cls: type[ManscdpMessage]
    fields: tuple[FieldSpec, ...] = ()
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        generic = GENERIC.get(self.kind)
        if generic is None:
            raise ValueError(f"kind must be one of {sorted(GENERIC)}, not {self.kind!r}")
        if not issubclass(self.cls, generic):
            raise TypeError(f"{self.cls.__name__} of a {self.kind} must derive from {generic.__name__}")
        _check_shape(Struct(self.cls, self.fields))

    def build(
        self, sn: int, device_id: str, *, charset: str = "GB2312", **values: object
    ) -> ManscdpMessage:
        """A message of this command to send; ``values`` are the declared attributes."""
        kw: dict[str, Any] = dict(values)
        return self.cls(
            kind=self.kind, cmd_type=self.cmd_type, sn=sn, device_id=device_id,
            charset=charset, **kw,
        )


def _check_shape(shape: Struct) -> None:
    """Fail at declaration time, not on the first body, when a spec names a missing attribute or bad tag."""
    names = {f.name for f in dataclass_fields(shape.cls)}  # type: ignore[arg-type]
    attrs = {f.attr for f in shape.fields}
    for spec in shape.fields:
        wanted = [spec.attr]
        if isinstance(spec, Repeated) and spec.num_attr is not None:
            wanted.append(spec.num_attr)
        for attr in wanted:
            if attr not in names:
                raise TypeError(f"{shape.cls.__name__} has no field {attr!r}")
        if not isinstance(spec, Extra):
            check_tag(spec.tag)
        if isinstance(spec, Nested | Repeated | Each):
            _check_shape(spec.shape)
        if isinstance(spec, Total) and spec.of not in attrs:
            raise TypeError(f"{spec.tag} counts {spec.of!r}, which is not declared")


class Registry:
    """Commands by ``(kind, case-folded CmdType)``; every spelling maps to one declaration."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], Command] = {}

    def declare(self, command: Command) -> Command:
        """Add ``command`` (ValueError if one of its spellings is taken) and return it."""
        keys = [(command.kind, name.lower()) for name in (command.cmd_type, *command.aliases)]
        for key in keys:
            if key in self._by_key:
                raise ValueError(f"{command.kind} {key[1]!r} is already declared")
        for key in keys:
            self._by_key[key] = command
        return command

    def lookup(self, kind: str, cmd_type: str) -> Command | None:
        """The declaration of ``cmd_type`` under root ``kind``, matched case-insensitively."""
        return self._by_key.get((kind, cmd_type.lower()))

    def copy(self) -> Registry:
        """A registry starting with the same declarations."""
        other = Registry()
        other._by_key = dict(self._by_key)
        return other

    def __iter__(self) -> Iterator[Command]:
        """Each declared command once, whatever its number of spellings."""
        return iter(dict.fromkeys(self._by_key.values()))


REGISTRY: Final = Registry()
"""The commands this package declares (one module per family imports ``declare``)."""


def declare(command: Command) -> Command:
    """Declare ``command`` in the default registry; the one step adding a command takes."""
    return REGISTRY.declare(command)


# --------------------------------------------------------------------------- decode


def decode_tree(
    root: etree._Element, charset: str, quirks: list[str], registry: Registry = REGISTRY
) -> ManscdpMessage:
    """Read a parsed body into its declared class, or the generic class of its root."""
    root_name = local_name(root.tag)
    kind = ROOTS.get((root_name or "").lower())
    if kind is None:
        raise ManscdpError(f"unexpected root element <{root_name}>")
    index = child_index(root)
    cmd_type = text_of(index.get("cmdtype"))
    if not cmd_type:
        raise ManscdpError("missing CmdType")
    sn = strict_uint(text_of(index.get("sn")), "SN")
    device_id = text_of(index.get("deviceid"))
    if not device_id:
        raise ManscdpError("missing DeviceID")
    values: dict[str, Any] = {}
    if kind == "Response":
        values["result"] = text_of(index.get("result"))
    cls = GENERIC[kind]
    command = registry.lookup(kind, cmd_type)
    if command is not None:
        values.update(_decode_fields(command.fields, root, index, quirks))
        cls = command.cls
    # Built last so quirks found while reading the fields (stray items) are included.
    return cls(
        kind=kind, cmd_type=cmd_type, sn=sn, device_id=device_id, charset=charset,
        fields=leaf_fields(root, _HEADER_TAGS), quirks=tuple(quirks), **values,
    )


def _decode_fields(
    specs: tuple[FieldSpec, ...], el: etree._Element, index: dict[str, etree._Element],
    quirks: list[str],
) -> dict[str, object]:
    out: dict[str, object] = {}
    nums: dict[str, int | None] = {}
    plan, known = _plan(specs)
    for spec, key, plain in plan:
        if plain:
            out[spec.attr] = text_of(index.get(key))
        elif isinstance(spec, Leaf):
            raw = text_of(index.get(key))
            if raw is None and spec.fallback is not None:
                raw = _from_map(index.get(spec.fallback.lower()), spec.tag)
            out[spec.attr] = _parse_leaf(spec, raw)
        elif isinstance(spec, LeafMap):
            child = index.get(key)
            out[spec.attr] = {} if child is None else leaf_paths(child) if spec.deep else leaf_fields(child)
        elif isinstance(spec, Extra):
            out[spec.attr] = leaf_fields(el, known)
        elif isinstance(spec, Nested):
            child = index.get(key)
            out[spec.attr] = _decode_struct(spec.shape, child, quirks) if child is not None else None
        elif isinstance(spec, Repeated):
            items, num = _decode_repeated(spec, el, index, quirks)
            # An optional list the body does not carry stays None: "not asked", not "empty".
            absent = spec.optional and not items and key not in index
            out[spec.attr] = None if absent else items
            nums[spec.attr] = num
            if spec.num_attr is not None:
                out[spec.num_attr] = num
        elif isinstance(spec, Each):
            children = [c for n, c in child_elements(el) if n.lower() == key]
            out[spec.attr] = tuple(_decode_struct(spec.shape, c, quirks) for c in _bounded(children, spec.tag, quirks))
    for spec, key, _ in plan:
        if isinstance(spec, Total):
            raw = text_of(index.get(key))
            if raw is not None:
                out[spec.attr] = strict_uint(raw, spec.tag)
            else:
                num = nums.get(spec.of)
                counted = out.get(spec.of)
                out[spec.attr] = num if num is not None else len(counted) if isinstance(counted, tuple) else 0
    return out


_Plan: TypeAlias = tuple[tuple[tuple[FieldSpec, str, bool], ...], frozenset[str]]
# Per shape, computed once: a catalog answer reads its item shape a hundred times.
_PLANS: dict[int, tuple[tuple[FieldSpec, ...], _Plan]] = {}


def _plan(specs: tuple[FieldSpec, ...]) -> _Plan:
    """Each spec with its case-folded tag and whether it is a plain text leaf; the tags the shape names."""
    cached = _PLANS.get(id(specs))
    if cached is not None and cached[0] is specs:
        return cached[1]
    steps = tuple(
        (spec, "" if isinstance(spec, Extra) else spec.tag.lower(),
         isinstance(spec, Leaf) and spec.type is str and spec.fallback is None and not spec.required)
        for spec in specs
    )
    plan = (steps, frozenset(key for spec, key, _ in steps if not isinstance(spec, Extra)))
    # Holding ``specs`` keeps its id from being reused by another tuple.
    _PLANS[id(specs)] = (specs, plan)
    return plan


def _decode_struct(shape: Struct, el: etree._Element, quirks: list[str]) -> object:
    kw: dict[str, Any] = _decode_fields(shape.fields, el, child_index(el), quirks)
    return shape.cls(**kw)


def _decode_repeated(
    spec: Repeated, el: etree._Element, index: dict[str, etree._Element], quirks: list[str]
) -> tuple[tuple[object, ...], int | None]:
    item_tag = spec.item_tag.lower()
    item_tags = {item_tag, *(alias.lower() for alias in spec.item_aliases)}
    item_els: list[etree._Element] = []
    num: int | None = None
    wrapper = index.get(spec.tag.lower())
    if wrapper is not None:
        item_els.extend(c for n, c in child_elements(wrapper) if n.lower() in item_tags)
        if spec.num_attr is not None:
            num = lenient_int(attr_ci(wrapper, "num"), f"{spec.tag} Num")
    if spec.bare_items:
        stray = [c for n, c in child_elements(el) if n.lower() == item_tag]
        if stray:
            # Some stacks drop the list wrapper (Monibuca pitfalls §4.1).
            quirks.append(QUIRK_ITEMS_UNDER_ROOT)
            logger.info("manscdp: %d %s elements directly under the root", len(stray), spec.item_tag)
            item_els.extend(stray)
    return tuple(_decode_struct(spec.shape, item, quirks) for item in _bounded(item_els, spec.tag, quirks)), num


MAX_LIST_ITEMS: Final = 4096
"""Items decoded of one list of one body. A real answer splits long lists over many MESSAGEs
(§9.5.2: a catalog part rarely holds more than a few dozen); a 1 MiB body of 100,000 empty
``<Item/>`` would otherwise cost the reactor over a second of decoding."""


def _bounded(items: list[etree._Element], tag: str, quirks: list[str]) -> list[etree._Element]:
    if len(items) <= MAX_LIST_ITEMS:
        return items
    quirks.append(QUIRK_LIST_CUT)
    logger.warning("manscdp: %s holds %d items, decoding the first %d", tag, len(items), MAX_LIST_ITEMS)
    return items[:MAX_LIST_ITEMS]


def _from_map(el: etree._Element | None, tag: str) -> str | None:
    """The last leaf of ``el`` named ``tag`` in any case (``Info/BusinessGroupID``)."""
    if el is None:
        return None
    found: str | None = None
    for key, value in leaf_fields(el).items():
        if key.lower() == tag.lower():
            found = value
    return found


def _parse_leaf(spec: Leaf, raw: str | None) -> object:
    if raw is None:
        if spec.required:
            raise ManscdpError(f"missing {spec.tag}")
        return None
    kind = spec.type
    if kind is str:
        return raw
    if kind is bool:
        folded = raw.lower()
        if folded in _TRUE or folded in _FALSE:
            return folded in _TRUE
        _ignored(spec, raw)
        return None
    if kind is int:
        return strict_uint(raw, spec.tag) if spec.required else lenient_int(raw, spec.tag)
    if kind is float:
        try:
            return float(raw)
        except ValueError:
            _ignored(spec, raw)
        return None
    if kind is datetime:
        return parse_gb_time(raw)
    if isinstance(kind, type) and issubclass(kind, Enum):
        for member in kind:
            if str(member.value).lower() == raw.lower():
                return member
        _ignored(spec, raw)
        return None
    raise TypeError(f"unsupported type for {spec.tag}: {kind!r}")


def _ignored(spec: Leaf, raw: str) -> None:
    if spec.required:
        raise ManscdpError(f"{spec.tag} is not valid: {raw[:40]!r}")
    logger.info("manscdp: ignoring invalid %s %r", spec.tag, raw[:40])


# --------------------------------------------------------------------------- encode


def encode(
    msg: ManscdpMessage, *, charset: str | None = None,
    extra: Mapping[str, XmlValue] | None = None, registry: Registry = REGISTRY,
) -> bytes:
    """The body of ``msg`` (GB/T 28181-2016 Annex A), in ``charset`` (default ``msg.charset``).

    A declared command writes its shape; any other message writes
    ``result`` (if not among its fields) and its ``fields``.  ``extra`` children
    (text, numbers or nested mappings) follow.
    """
    lines = header_lines(msg.cmd_type, msg.sn, msg.device_id)
    command = registry.lookup(msg.kind, msg.cmd_type)
    if command is not None and isinstance(msg, command.cls):
        _encode_fields(lines, command.fields, msg)
    else:
        if isinstance(msg, Response) and not any(k.lower() == "result" for k in msg.fields):
            emit(lines, "Result", msg.result)
        for key, value in msg.fields.items():
            emit(lines, key, value)
    for tag, child in (extra or {}).items():
        emit(lines, tag, child)
    return finish(msg.kind, lines, msg.charset if charset is None else charset)


def _encode_fields(lines: list[str], specs: tuple[FieldSpec, ...], obj: object) -> None:
    for spec in specs:
        value = getattr(obj, spec.attr)
        if isinstance(spec, Leaf):
            emit(lines, spec.tag, value if value is None or type(value) is str else _format_leaf(value))
        elif isinstance(spec, LeafMap):
            if spec.deep:
                emit_paths(lines, spec.tag, value)
            elif value:
                emit(lines, spec.tag, value)
        elif isinstance(spec, Extra):
            for key, child in value.items():
                emit(lines, key, child)
        elif isinstance(spec, Nested):
            if value is not None:
                lines.append(f"<{spec.tag}>")
                _encode_fields(lines, spec.shape.fields, value)
                lines.append(f"</{spec.tag}>")
        elif isinstance(spec, Each):
            for item in value:
                lines.append(f"<{spec.tag}>")
                _encode_fields(lines, spec.shape.fields, item)
                lines.append(f"</{spec.tag}>")
        elif isinstance(spec, Repeated):
            if value is None and spec.optional:
                continue
            items = list(value)
            lines.append(f'<{spec.tag} Num="{len(items)}">')
            for item in items:
                lines.append(f"<{spec.item_tag}>")
                _encode_fields(lines, spec.shape.fields, item)
                lines.append(f"</{spec.item_tag}>")
            lines.append(f"</{spec.tag}>")
        else:
            emit(lines, spec.tag, int(value))


def _format_leaf(value: object) -> XmlValue:
    if value is None:
        return None
    if isinstance(value, datetime):
        return format_gb_time(value)
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, str | int):
        return value
    return str(value)

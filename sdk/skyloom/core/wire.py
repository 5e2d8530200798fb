"""DynamoDB items through botocore without its generic walk of every attribute value.

botocore serializes each request and parses each response by walking the operation's shapes: for
an item that is one dispatch per attribute value and, when parsing, a lookup of each of
AttributeValue's ten members in every value. Items are most of what Skyloom's processes send and
receive (task items read in batches, commits, results, stream records), and py-spy put that walk
among the largest costs of an agent and of local mode's stream poller. Yet the walk changes nothing
in an attribute value but its binary members (base64 text on the wire, bytes in Python).

:class:`ItemSerializer` and :class:`ItemParser` take AttributeValue, and maps and lists of it, in
one pass, and leave every other shape, and any value they do not recognise, to botocore's own code:
requests and responses are exactly what botocore makes (``tests/unit/test_wire.py`` compares them
on generated items). :func:`install_on` puts them on a DynamoDB or DynamoDB Streams client; it is
applied to every such client of the process by :mod:`skyloom.core.aws`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.parsers import JSONParser, ResponseParserFactory
from botocore.serialize import JSONSerializer

# botocore's stubs leave out the private members these classes build on: typed as Any here.
_Serializer: Any = JSONSerializer
_Parser: Any = JSONParser
_Factory: Any = ResponseParserFactory

#: Services whose clients take these.
SERVICES = frozenset({"dynamodb", "dynamodbstreams"})

#: Members that are the same in Python as on the wire.
_AS_IS = frozenset({"S", "N", "SS", "NS", "BOOL", "NULL"})
#: Shapes botocore's JSON serializer writes as they are (its default), e.g. expression names.
_PLAIN_TYPES = frozenset({"string", "boolean", "integer", "long"})


def is_attribute_value(shape: Any) -> bool:
    """DynamoDB's AttributeValue union (another service may name a shape AttributeValue too)."""
    if shape.name != "AttributeValue" or shape.type_name != "structure":
        return False
    members = shape.members
    return "NULL" in members and "BOOL" in members and "M" in members


def convert(value: Any, blob: Callable[[Any], Any]) -> dict[str, Any] | None:
    """``value`` (one attribute value) with its binary members passed through ``blob``; None when
    it is not a well-formed attribute value, for botocore's walk to deal with as it does.

    What needs no change is returned as it is, not copied: the callers only read what they get
    (a request body about to be written as JSON, an answer just decoded from it).
    """
    if type(value) is not dict or len(value) != 1:
        return None
    for tag, inner in value.items():
        if inner is None:
            return None
        if tag in _AS_IS:
            return value
        if tag == "M":
            converted = convert_map(inner, blob)
            return None if converted is None else value if converted is inner else {"M": converted}
        if tag == "L":
            items = convert_list(inner, blob)
            return None if items is None else value if items is inner else {"L": items}
        if tag == "B":
            return {"B": blob(inner)}
        if tag == "BS" and type(inner) is list:
            return {"BS": [blob(b) for b in inner]}
    return None


def convert_map(value: Any, blob: Callable[[Any], Any]) -> dict[str, Any] | None:
    """An item (a map of attribute values), as :func:`convert` does each value: itself if none changed."""
    if type(value) is not dict:
        return None
    out: dict[str, Any] | None = None
    for name, each in value.items():
        c = convert(each, blob)
        if c is None:
            return None
        if c is not each:
            if out is None:
                out = dict(value)
            out[name] = c
    return value if out is None else out


def convert_list(value: Any, blob: Callable[[Any], Any]) -> list[Any] | None:
    """A list of attribute values, as :func:`convert_map` does a map."""
    if type(value) is not list:
        return None
    out: list[Any] | None = None
    for i, each in enumerate(value):
        c = convert(each, blob)
        if c is None:
            return None
        if c is not each:
            if out is None:
                out = list(value)
            out[i] = c
    return value if out is None else out


class ItemSerializer(_Serializer):  # type: ignore[misc]
    """botocore's JSON serializer, with attribute values serialized in one pass."""

    def _serialize_type_structure(self, serialized: dict[str, Any], value: Any, shape: Any, key: Any) -> None:
        if key is not None and is_attribute_value(shape):
            converted = convert(value, self._get_base64)
            if converted is not None:
                serialized[key] = converted
                return
        super()._serialize_type_structure(serialized, value, shape, key)

    def _serialize_type_map(self, serialized: dict[str, Any], value: Any, shape: Any, key: Any) -> None:
        if shape.value.type_name in _PLAIN_TYPES:
            serialized[key] = dict(value)
            return
        if is_attribute_value(shape.value):
            converted = convert_map(value, self._get_base64)
            if converted is not None:
                serialized[key] = converted
                return
        super()._serialize_type_map(serialized, value, shape, key)

    def _serialize_type_list(self, serialized: dict[str, Any], value: Any, shape: Any, key: Any) -> None:
        if shape.member.type_name in _PLAIN_TYPES:
            serialized[key] = list(value)
            return
        super()._serialize_type_list(serialized, value, shape, key)


class ItemParser(_Parser):  # type: ignore[misc]
    """botocore's JSON response parser, with attribute values parsed in one pass."""

    def _handle_structure(self, shape: Any, value: Any) -> Any:
        if is_attribute_value(shape):
            converted = convert(value, self._blob_parser)
            if converted is not None:
                return converted
        return super()._handle_structure(shape, value)

    def _handle_map(self, shape: Any, value: Any) -> Any:
        if is_attribute_value(shape.value):
            converted = convert_map(value, self._blob_parser)
            if converted is not None:
                return converted
        return super()._handle_map(shape, value)


class _ParserFactory(_Factory):  # type: ignore[misc]
    def __init__(self, parser: type[ItemParser], defaults: dict[str, Any]) -> None:
        super().__init__()
        self.parser = parser
        self._defaults = dict(defaults)

    def create_parser(self, protocol_name: str) -> Any:
        if protocol_name == "json":
            return self.parser(**self._defaults)
        return super().create_parser(protocol_name)


def install_on(client: Any, parser: type[ItemParser] = ItemParser) -> None:
    """Serialize and parse ``client``'s items in one pass, if it is a DynamoDB (Streams) client;
    ``parser``: a subclass of :class:`ItemParser` to parse its answers with.

    botocore offers no public way to choose a client's serializer or parser; these are the two
    attributes it reads them from (botocore 1.x: ``BaseClient._serializer``, wrapped by the
    parameter validator, and ``Endpoint._response_parser_factory``). Left as they are if absent.
    """
    if client.meta.service_model.service_name not in SERVICES:
        return
    serializer: Any = getattr(client, "_serializer", None)
    inner: Any = getattr(serializer, "_serializer", None)  # ParamValidationDecorator(validator, serializer)
    if type(inner) is _Serializer:
        serializer._serializer = ItemSerializer(timestamp_precision=inner._timestamp_precision)
    elif type(serializer) is _Serializer:
        client._serializer = ItemSerializer(timestamp_precision=serializer._timestamp_precision)
    endpoint: Any = getattr(client, "_endpoint", None)
    factory: Any = getattr(endpoint, "_response_parser_factory", None)
    if isinstance(factory, _Factory) and getattr(factory, "parser", None) is not parser:
        endpoint._response_parser_factory = _ParserFactory(parser, factory._defaults)

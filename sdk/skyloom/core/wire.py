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
on generated items). :func:`install_on` puts them on a DynamoDB or DynamoDB Streams client: the
process's boto3 ones (:func:`skyloom.core.aws.client`) and the one pynamodb's models share
(:func:`skyloom.core.models.connection`). The emulator's request parser takes items the same way
(:mod:`skyloom.local.moto_requests`). On a client given an endpoint URL, :func:`install_on` also
spares botocore's gathering of table ARNs from every request's items (:func:`_skip_table_arns`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from botocore.parsers import JSONParser, ResponseParserFactory
from botocore.serialize import JSONSerializer

# botocore's stubs leave out the private members these classes build on: typed as Any here.
_Serializer: Any = JSONSerializer
_Parser: Any = JSONParser
_Factory: Any = ResponseParserFactory

#: Services whose clients take these.
SERVICES = frozenset({"dynamodb", "dynamodbstreams"})

#: DynamoDB's endpoint rule parameters drawn from a request's table names (for account-based
#: endpoints), and the builtin that holds a client's endpoint URL.
TABLE_ARN_PARAMETERS = frozenset({"ResourceArn", "ResourceArnList"})
_ENDPOINT_BUILTIN = "SDK::Endpoint"

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


def in_one_pass(shape: Any, value: Any, blob: Callable[[Any], Any]) -> Any | None:
    """``value`` converted in one pass when ``shape`` is an AttributeValue or a map of them (an
    item); None when it is neither, or ``value`` is not well formed: the caller's own walk then."""
    if shape.type_name == "structure" and is_attribute_value(shape):
        return convert(value, blob)
    if shape.type_name == "map" and is_attribute_value(shape.value):
        return convert_map(value, blob)
    return None


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
    return _convert_members(value, value.items(), blob) if type(value) is dict else None


def convert_list(value: Any, blob: Callable[[Any], Any]) -> list[Any] | None:
    """A list of attribute values, as :func:`convert_map` does a map."""
    return _convert_members(value, enumerate(value), blob) if type(value) is list else None


def _convert_members(value: Any, members: Iterable[tuple[Any, Any]], blob: Callable[[Any], Any]) -> Any:
    """``value`` (a dict or a list) with each of its ``members`` (position, attribute value)
    converted; copied only once one changes; None if one is not well formed."""
    out: Any = None
    for at, each in members:
        c = convert(each, blob)
        if c is None:
            return None
        if c is not each:
            if out is None:
                out = type(value)(value)
            out[at] = c
    return value if out is None else out


class ItemSerializer(_Serializer):  # type: ignore[misc]
    """botocore's JSON serializer, with attribute values serialized in one pass."""

    def _serialize_type_structure(self, serialized: dict[str, Any], value: Any, shape: Any, key: Any) -> None:
        converted = in_one_pass(shape, value, self._get_base64) if key is not None else None
        if converted is None:
            super()._serialize_type_structure(serialized, value, shape, key)
        else:
            serialized[key] = converted

    def _serialize_type_map(self, serialized: dict[str, Any], value: Any, shape: Any, key: Any) -> None:
        plain = shape.value.type_name in _PLAIN_TYPES
        converted = dict(value) if plain else in_one_pass(shape, value, self._get_base64)
        if converted is None:
            super()._serialize_type_map(serialized, value, shape, key)
        else:
            serialized[key] = converted

    def _serialize_type_list(self, serialized: dict[str, Any], value: Any, shape: Any, key: Any) -> None:
        if shape.member.type_name in _PLAIN_TYPES:
            serialized[key] = list(value)
            return
        super()._serialize_type_list(serialized, value, shape, key)


class ItemParser(_Parser):  # type: ignore[misc]
    """botocore's JSON response parser, with attribute values parsed in one pass."""

    def _handle_structure(self, shape: Any, value: Any) -> Any:
        converted = in_one_pass(shape, value, self._blob_parser)
        return super()._handle_structure(shape, value) if converted is None else converted

    def _handle_map(self, shape: Any, value: Any) -> Any:
        converted = in_one_pass(shape, value, self._blob_parser)
        return super()._handle_map(shape, value) if converted is None else converted


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
    _skip_table_arns(client)


def _skip_table_arns(client: Any) -> None:
    """Spare a client given an endpoint URL (local mode, LocalStack) botocore's gathering of table
    ARNs from every request.

    Before each call botocore computes the endpoint rules' parameters, among them DynamoDB's
    ``ResourceArnList``: a jmespath walk over every item of a transaction or batch (a twelfth of an
    agent's CPU). Those parameters only choose an account-based AWS endpoint; with an endpoint URL
    DynamoDB's first rule returns that URL and reads none of them (``tests/unit/test_wire.py`` holds
    the rule set to it). On AWS (no endpoint URL) nothing changes.
    """
    resolver: Any = getattr(client, "_ruleset_resolver", None)
    builtins: Any = getattr(resolver, "_builtins", None)
    if not isinstance(builtins, dict) or builtins.get(_ENDPOINT_BUILTIN) is None:
        return
    resolve = getattr(resolver, "_resolve_param_as_operation_context_param", None)
    if resolve is None or getattr(resolve, "skips_table_arns", False):
        return

    def without_table_arns(param_name: str, operation_model: Any, call_args: Any) -> Any:
        return None if param_name in TABLE_ARN_PARAMETERS else resolve(param_name, operation_model, call_args)

    without_table_arns.skips_table_arns = True  # type: ignore[attr-defined]
    resolver._resolve_param_as_operation_context_param = without_table_arns

"""The emulator's patches to moto's request handling: DynamoDB items read in one pass, and each
request's action found without listing its handler's methods.

moto parses each JSON request by walking botocore's shape model over the decoded body, as botocore
does with answers: for every attribute value of every item, a dispatch and a lookup of each of
AttributeValue's ten members; for every expression name, two dispatches. That walk was a sixth of
the emulator's time in a throughput run, most of it inside the submissions' transactions that
every other DynamoDB request waits for. It changes nothing in a well-formed attribute value but
its binary members (base64 text -> bytes), which :func:`skyloom.core.wire.convert` does in one
pass; so does a map or list of strings. Anything else, and any value that is not well formed, goes
through moto's walk as before. The parser is used for every JSON-protocol service of the emulator,
and differs from moto's only on those shapes.

Then moto finds the method that serves a request by listing every function of its handler class
(``inspect.getmembers``, hundreds of them) and converting the action's name with regular
expressions, on every request: 6 % of the emulator's time in a run of small requests. Both answers
depend only on the class and the name, so :func:`install` keeps them (:func:`_method_names`,
:func:`_action_name`).
"""

from __future__ import annotations

import functools
from typing import Any

import moto.core.parse as moto_parse
import moto.core.responses as moto_responses
from moto.core.utils import camelcase_to_underscores, method_names_from_class

from skyloom.core import wire

#: Shapes moto's JSON parser returns as they are.
_PLAIN_TYPES = frozenset({"string", "boolean"})

#: moto's parser, typed as Any: its methods carry no annotations.
_MotoJSONParser: Any = moto_parse.JSONParser


class ItemRequestParser(_MotoJSONParser):  # type: ignore[misc]
    """moto's JSON request parser, with attribute values parsed in one pass."""

    def _parse_structure(self, shape: Any, value: Any) -> Any:
        converted = wire.in_one_pass(shape, value, self._blob_parser)
        return super()._parse_structure(shape, value) if converted is None else converted

    def _parse_map(self, shape: Any, value: Any) -> Any:
        if type(value) is dict and shape.key.type_name == "string" and shape.value.type_name in _PLAIN_TYPES:
            return self.MAP_TYPE(value)
        converted = wire.in_one_pass(shape, value, self._blob_parser)
        return super()._parse_map(shape, value) if converted is None else converted

    def _parse_list(self, shape: Any, node: Any) -> Any:
        if type(node) is list and shape.member.type_name in _PLAIN_TYPES:
            return list(node)
        return super()._parse_list(shape, node)


@functools.cache
def _method_names(cls: type) -> frozenset[str]:
    """moto's list of a handler class's functions, kept per class (a class's methods do not change)."""
    return frozenset(method_names_from_class(cls))


@functools.lru_cache(maxsize=4096)
def _action_name(action: str) -> str:
    """moto's conversion of an action's name to its method's (a pure function of the name)."""
    return str(camelcase_to_underscores(action))


def install() -> None:
    """Use :class:`ItemRequestParser` for JSON requests (moto looks the class up per request), and
    the kept method names and action names where moto's request handler asks for them."""
    moto_parse.PROTOCOL_PARSERS["json"] = ItemRequestParser
    moto_responses.method_names_from_class = _method_names  # type: ignore[assignment,attr-defined]
    moto_responses.camelcase_to_underscores = _action_name  # type: ignore[attr-defined]

"""The payload of a ``skyloom.call`` task: which function to call, with which arguments.

Built by the client (or by a running task) and read by :mod:`skyloom.runtime.pycall`. Layout::

    b"SKYC" | version (1 byte) | header length (4 bytes, big endian) | header (JSON) | body

The header lists the task's data dependencies as result ids, ``{"deps": [...], "spec": n | null}``;
the body is ``cloudpickle(CallSpec)``, in which every future became ``DependencyRef(i)``, an *index*
into ``deps``. Refs are indices rather than ids because delegation renames a staged result after its
consumers were pickled (:func:`rewrite_dependency`): renaming then touches the small JSON header and
never unpickles user data. When the pickled spec is too large to ride inline, the body is empty and
``spec`` is the index of the dependency that holds it.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

MAGIC = b"SKYC"
VERSION = 1
_HEAD = struct.Struct(">4sBI")


class CallSpecError(ValueError):
    """A payload is not a call spec this runtime can read; retrying on another worker cannot help."""

    non_retryable = True


@dataclass(frozen=True)
class DependencyRef:
    """Stands for the value of the task's ``index``-th data dependency."""

    index: int


@dataclass(frozen=True)
class CallSpec:
    """A function call, frozen: ``function`` is a cloudpickled callable or a ref to one."""

    function: bytes | DependencyRef
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass(frozen=True)
class Payload:
    """A decoded payload: dependency ids, and either the pickled spec or where to find it."""

    dependencies: list[str]
    body: bytes
    spec_index: int | None = None


def encode(body: bytes, dependencies: Sequence[str], spec_index: int | None = None) -> bytes:
    """Frame a pickled :class:`CallSpec` (or a pointer to one) with its dependency ids."""
    header = json.dumps({"deps": list(dependencies), "spec": spec_index}, separators=(",", ":")).encode()
    return _HEAD.pack(MAGIC, VERSION, len(header)) + header + body


def decode(payload: bytes) -> Payload:
    """Split a payload; raises :class:`CallSpecError` on anything that is not a call spec."""
    if len(payload) < _HEAD.size:
        raise CallSpecError(f"payload of {len(payload)} bytes is too short to be a skyloom.call spec")
    magic, version, size = _HEAD.unpack_from(payload)
    if magic != MAGIC:
        raise CallSpecError("payload is not a skyloom.call spec (bad magic); was it built by this SDK?")
    if version != VERSION:
        raise CallSpecError(
            f"call spec version {version} is not supported by this worker (it reads {VERSION}); "
            "use the same skyloom version on clients and workers"
        )
    start = _HEAD.size
    try:
        header = json.loads(payload[start : start + size])
        deps = [str(d) for d in header["deps"]]
        spec_index = header.get("spec")
    except (ValueError, KeyError, TypeError) as exc:
        raise CallSpecError(f"call spec header is corrupt: {exc}") from exc
    return Payload(deps, payload[start + size :], spec_index if isinstance(spec_index, int) else None)


def rewrite_dependency(payload: bytes, old: str, new: str) -> bytes:
    """The same payload with dependency ``old`` renamed ``new``; the pickled body is untouched."""
    p = decode(payload)
    if old not in p.dependencies:
        return payload
    deps = [new if d == old else d for d in p.dependencies]
    return encode(p.body, deps, p.spec_index)


def replace_nested(obj: Any, kind: type | tuple[type, ...], convert: Callable[[Any], Any]) -> Any:
    """``obj`` with every instance of ``kind`` replaced by ``convert(it)``.

    Looks at ``obj`` itself and inside (exact) lists, tuples and dicts, recursively: that is where
    futures are recognised as data dependencies. Containers without a match are returned as is, so
    a large list of plain numbers is walked but never copied.
    """
    if isinstance(obj, kind):
        return convert(obj)
    t = type(obj)
    if t is list or t is tuple:
        items = [replace_nested(x, kind, convert) for x in obj]
        if all(a is b for a, b in zip(items, obj, strict=True)):
            return obj
        return items if t is list else tuple(items)
    if t is dict:
        pairs = {k: replace_nested(v, kind, convert) for k, v in obj.items()}
        if all(pairs[k] is v for k, v in obj.items()):
            return obj
        return pairs
    return obj


def contains(obj: Any, kind: type | tuple[type, ...]) -> bool:
    """Whether an instance of ``kind`` sits in ``obj`` or inside its lists, tuples and dicts."""
    found = False

    def mark(x: Any) -> Any:
        nonlocal found
        found = True
        return x

    replace_nested(obj, kind, mark)
    return found

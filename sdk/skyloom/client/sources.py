"""Source lines for functions shipped by value, so a task's traceback shows the user's code.

cloudpickle rebuilds a function's code on the worker under the file name ``<dynamic-code>`` (since
3.1.3; before, under the client's path, which a worker on AWS does not have either). A traceback
then names a line number and nothing else. So the client ships the text of the function's source
file with the function, and the worker gives the rebuilt code its real file name back and puts
the text in :mod:`linecache`: tracebacks read as they would on the client.

The file travels once per function (the pickled function is cached, and a large one is stored as a
content-addressed blob); files larger than :data:`MAX_SOURCE_BYTES` are not shipped.
"""

from __future__ import annotations

import inspect
import linecache
import types
from dataclasses import dataclass
from typing import Any

#: Larger source files are not shipped: the traceback then shows line numbers only.
MAX_SOURCE_BYTES = 256 * 1024
#: The file name cloudpickle gives code it rebuilds.
DYNAMIC = "<dynamic-code>"


@dataclass(frozen=True)
class Source:
    """The text of the file a function was defined in, under the name the client knows it by."""

    filename: str
    text: str


def capture(fn: Any) -> Source | None:
    """The source file of ``fn``, if it can be read here and is not too large."""
    try:
        filename = inspect.getsourcefile(fn)
    except TypeError:
        return None
    if not filename:
        return None
    text = "".join(linecache.getlines(filename, getattr(fn, "__globals__", None)))
    if not text or len(text.encode("utf-8", "replace")) > MAX_SOURCE_BYTES:
        return None
    return Source(filename, text)


def restore(fn: Any, source: Source | None) -> None:
    """Give ``fn`` (and the functions of its module it was shipped with) their file back.

    Only code rebuilt by cloudpickle is touched; a function imported by reference keeps its own.
    """
    if source is None or not isinstance(fn, types.FunctionType):
        return
    lines = source.text.splitlines(keepends=True)
    # mtime None: linecache.checkcache never drops the entry for want of a file on disk.
    linecache.cache[source.filename] = (len(source.text), None, lines, source.filename)
    module = fn.__module__
    siblings = [v for v in fn.__globals__.values() if isinstance(v, types.FunctionType) and v.__module__ == module]
    for f in (fn, *siblings):
        if f.__code__.co_filename == DYNAMIC:
            f.__code__ = _renamed(f.__code__, source.filename)


def _renamed(code: types.CodeType, filename: str) -> types.CodeType:
    consts = tuple(_renamed(c, filename) if isinstance(c, types.CodeType) else c for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)

"""moto's request dispatcher, with the backend of each host looked up once (the emulator's patch 10,
EMULATORS.md).

moto's ``DomainDispatcherApplication`` finds the backend of every request by listing its own package
directory (``os.listdir`` and an ``isdir`` per entry, about 150 of them) while holding the lock that
every request of every service takes: a tenth of the emulator's time in a run of many small
requests, and one more thing each request waited for. The answer for a host never changes while the
process runs, so :class:`CachedDispatcher` keeps it. It also serves each backend's Flask app out of
debug mode, which moto turns on: in it, Flask builds a new class for every request's form data (to
explain upload errors to a developer), 1 % of the emulator's time; an error is a 500 answer either
way. Kept apart from :mod:`skyloom.local.moto_app`
(which patches moto as it is imported) so that tests can compare it with moto's own lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask
from moto.moto_server.werkzeug_app import DomainDispatcherApplication


class CachedDispatcher(DomainDispatcherApplication):
    """moto's dispatcher; ``get_backend_for_host`` answers from memory after the first time."""

    def __init__(self, create_app: Callable[[Any], Flask]) -> None:
        super().__init__(lambda service: _out_of_debug_mode(create_app(service)))
        self._backends: dict[str | None, Any] = {}

    def get_backend_for_host(self, host: str | None) -> Any:
        # Called under the dispatcher's own lock (get_application): no lock of ours is needed.
        try:
            return self._backends[host]
        except KeyError:
            backend = super().get_backend_for_host(host)
            self._backends[host] = backend
            return backend


def _out_of_debug_mode(app: Flask) -> Flask:
    app.debug = False
    return app

"""The emulator's dispatcher looks up each host's backend once, and finds the one moto finds."""

from __future__ import annotations

import pytest
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

from skyloom.local.moto_dispatch import CachedDispatcher

HOSTS = [None, "moto_api", "dynamodb.us-east-1.amazonaws.com", "sqs.us-east-1.amazonaws.com",
         "streams.dynamodb.us-east-1.amazonaws.com", "s3.amazonaws.com", "bucket.s3.amazonaws.com",
         "sqs", "dynamodb"]


def test_backends_found_as_moto_finds_them() -> None:
    moto_way, ours = DomainDispatcherApplication(create_backend_app), CachedDispatcher(create_backend_app)
    for _ in range(2):  # the second time from memory
        assert [ours.get_backend_for_host(h) for h in HOSTS] == [moto_way.get_backend_for_host(h) for h in HOSTS]


def test_each_host_is_looked_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    looked: list[str | None] = []
    real = DomainDispatcherApplication.get_backend_for_host

    def counting(self: DomainDispatcherApplication, host: str | None) -> object:
        looked.append(host)
        return real(self, host)

    monkeypatch.setattr(DomainDispatcherApplication, "get_backend_for_host", counting)
    ours = CachedDispatcher(create_backend_app)
    for _ in range(3):
        for host in HOSTS:
            ours.get_backend_for_host(host)
    assert looked == HOSTS


def test_backend_apps_are_served_out_of_debug_mode() -> None:
    # moto turns Flask's debug mode on; in it Flask builds a class per request's form data
    environ = {"PATH_INFO": "/", "HTTP_HOST": "dynamodb.us-east-1.amazonaws.com", "REQUEST_METHOD": "POST",
               "HTTP_X_AMZ_TARGET": "DynamoDB_20120810.ListTables"}
    assert DomainDispatcherApplication(create_backend_app).get_application(environ).debug is True
    assert CachedDispatcher(create_backend_app).get_application(environ).debug is False

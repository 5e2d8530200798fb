"""The client SDK: connect, submit functions or low-level tasks, and read their results."""

from skyloom.client.connect import connect
from skyloom.client.functions import TaskFunction, task
from skyloom.client.futures import Future
from skyloom.client.gathering import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, as_completed, gather, wait
from skyloom.client.lowlevel import Client
from skyloom.client.session import Session
from skyloom.client.specs import TaskRequest

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "Client",
    "Future",
    "Session",
    "TaskFunction",
    "TaskRequest",
    "as_completed",
    "connect",
    "gather",
    "task",
    "wait",
]

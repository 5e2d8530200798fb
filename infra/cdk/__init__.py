"""Skyloom's CDK app: the whole system as one stack, built from :mod:`skyloom.core.resources`.

One construct per module: ``tables``, ``queues``, ``bucket``, ``functions``, ``api``, ``workers``,
``dashboard``; ``stack`` assembles them, ``context`` reads ``cdk.json``, ``nag`` holds the cdk-nag
suppressions and their reasons, ``app`` is the entry point ``cdk.json`` runs.
"""

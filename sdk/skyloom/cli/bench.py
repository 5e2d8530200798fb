"""``skyloom bench``: run the benchmark of :mod:`skyloom.bench` and print/write its report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Measure throughput, latency, worker utilisation and AWS calls per task.")


@app.callback(invoke_without_command=True)
def bench(
    tasks: Annotated[int, typer.Option(help="Tasks in the throughput run.")] = 1000,
    shape: Annotated[str, typer.Option(help="independent, or forkjoin (nested fan-out + join).")] = "independent",
    fanout: Annotated[int, typer.Option(help="Work tasks per fork (forkjoin).")] = 10,
    payload_bytes: Annotated[int, typer.Option(help="Payload size per task.")] = 0,
    output_bytes: Annotated[int, typer.Option(help="Output size per task.")] = 0,
    mode: Annotated[str, typer.Option(help="zero, sleep or compute.")] = "zero",
    seconds: Annotated[float, typer.Option(help="Task duration for sleep/compute.")] = 0.0,
    batch_size: Annotated[int, typer.Option(help="Tasks per submission.")] = 500,
    workers: Annotated[int, typer.Option(help="Worker agents of the local stack.")] = 2,
    slots: Annotated[int | None, typer.Option(help="Task slots per worker (default: the worker's).")] = None,
    prefetch: Annotated[int | None, typer.Option(help="Tasks claimed ahead per worker (default: the worker's).")]
    = None,
    endpoint: Annotated[str | None, typer.Option(help="A deployed stack's REST endpoint.")] = None,
    latency_repeats: Annotated[int, typer.Option(help="Batches per latency figure.")] = 5,
    latency_batches: Annotated[str, typer.Option(help="Batch sizes of the latency figures ('' for none).")]
    = "1,10,100",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each phase's results.")] = 3600.0,
    count_api_calls: Annotated[bool, typer.Option(help="Count AWS API calls in every process.")] = True,
    output: Annotated[Path, typer.Option(help="Where to write the JSON report.")] = Path("bench.json"),
) -> None:
    """Run the benchmark on a local stack (started here) or on --endpoint."""
    from skyloom.bench import BenchConfig, run
    from skyloom.bench.runner import summary
    from skyloom.cli.common import quiet_local_functions

    if endpoint is None:
        quiet_local_functions()

    config = BenchConfig(
        tasks=tasks, shape=shape, fanout=fanout, payload_bytes=payload_bytes, output_bytes=output_bytes,
        mode=mode, seconds=seconds, batch_size=batch_size, workers=workers, slots=slots, prefetch=prefetch,
        endpoint=endpoint,
        latency_repeats=latency_repeats, count_api_calls=count_api_calls, timeout=timeout,
        latency_batches=tuple(int(b) for b in latency_batches.split(",") if b.strip()),
    )
    report = run(config)
    output.write_text(json.dumps(report, indent=2))
    typer.echo(summary(report))
    typer.echo(f"report written to {output}")

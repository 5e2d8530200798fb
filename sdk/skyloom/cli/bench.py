"""``skyloom bench``: run the benchmark of :mod:`skyloom.bench` and print/write its report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Measure throughput, latency, worker utilisation and AWS calls per task.")


@app.callback(invoke_without_command=True)
def bench(
    tasks: Annotated[int | None, typer.Option(help="Tasks in the throughput run (1000; 8 with --preemption).")]
    = None,
    shape: Annotated[str, typer.Option(help="independent, or forkjoin (nested fan-out + join).")] = "independent",
    fanout: Annotated[int, typer.Option(help="Work tasks per fork (forkjoin).")] = 10,
    payload_bytes: Annotated[int, typer.Option(help="Payload size per task.")] = 0,
    output_bytes: Annotated[int, typer.Option(help="Output size per task.")] = 0,
    mode: Annotated[str, typer.Option(help="zero, sleep or compute.")] = "zero",
    seconds: Annotated[float, typer.Option(help="Task duration for sleep/compute.")] = 0.0,
    batch_size: Annotated[int, typer.Option(help="Tasks per submission.")] = 500,
    workers: Annotated[int | None, typer.Option(help="Worker agents of the local stack (2; 4 with --preemption).")]
    = None,
    slots: Annotated[int | None, typer.Option(help="Task slots per worker (default: the worker's).")] = None,
    prefetch: Annotated[int | None, typer.Option(help="Tasks claimed ahead per worker (default: the worker's).")]
    = None,
    endpoint: Annotated[str | None, typer.Option(help="A deployed stack's REST endpoint.")] = None,
    latency_repeats: Annotated[int, typer.Option(help="Batches per latency figure.")] = 5,
    latency_batches: Annotated[str, typer.Option(help="Batch sizes of the latency figures ('' for none).")]
    = "1,10,100",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each phase's results.")] = 3600.0,
    count_api_calls: Annotated[bool, typer.Option(help="Count AWS API calls in every process.")] = True,
    forkjoin_tasks: Annotated[int, typer.Option(
        help="Tasks of the fork-join phase after an independent run (1 KiB values; 0 skips it).")] = 240,
    output: Annotated[Path, typer.Option(help="Where to write the JSON report.")] = Path("bench.json"),
    preemption: Annotated[bool, typer.Option(
        "--preemption", help="Run the preemption benchmark instead (local stack): long checkpointing tasks while "
        "a share of the workers is reclaimed, with and without checkpoints. Uses --tasks (default 8 here), "
        "--workers (4) and the --preempt-* options.")] = False,
    preempt_share: Annotated[float, typer.Option(help="Share of the workers reclaimed at each round.")] = 0.5,
    preempt_every: Annotated[float, typer.Option(help="Seconds between two rounds of reclaims.")] = 3.0,
    preempt_rounds: Annotated[int, typer.Option(help="Rounds of reclaims per run.")] = 4,
    preempt_grace: Annotated[float, typer.Option(help="The workers' grace period after SIGTERM.")] = 1.0,
    steps: Annotated[int, typer.Option(help="Steps per task of the preemption run.")] = 10,
    step_seconds: Annotated[float, typer.Option(help="Seconds per step of the preemption run.")] = 0.5,
) -> None:
    """Run the benchmark on a local stack (started here) or on --endpoint."""
    from skyloom.bench import BenchConfig, run
    from skyloom.bench.runner import summary
    from skyloom.cli.common import quiet_local_functions

    if endpoint is None:
        quiet_local_functions()
    if preemption:
        _preemption(tasks, workers, preempt_share, preempt_every, preempt_rounds, preempt_grace, steps, step_seconds,
                    timeout, endpoint, output)
        return

    config = BenchConfig(
        tasks=1000 if tasks is None else tasks, shape=shape, fanout=fanout, payload_bytes=payload_bytes,
        output_bytes=output_bytes, mode=mode, seconds=seconds, batch_size=batch_size,
        workers=2 if workers is None else workers, slots=slots, prefetch=prefetch,
        endpoint=endpoint,
        latency_repeats=latency_repeats, count_api_calls=count_api_calls, timeout=timeout,
        forkjoin_tasks=forkjoin_tasks, latency_batches=tuple(int(b) for b in latency_batches.split(",") if b.strip()),
    )
    report = run(config)
    output.write_text(json.dumps(report, indent=2))
    typer.echo(summary(report))
    typer.echo(f"report written to {output}")


def _preemption(tasks: int | None, workers: int | None, share: float, every: float, rounds: int, grace: float,
                steps: int, step_seconds: float, timeout: float, endpoint: str | None, output: Path) -> None:
    """The preemption run, with its own defaults for --tasks and --workers (long tasks: fewer)."""
    from skyloom.bench.preemption import PreemptionConfig, run_preemption, summary

    if endpoint is not None:
        raise typer.BadParameter("the preemption run reclaims the workers it starts: local stacks only",
                                 param_hint="--endpoint")
    defaults = PreemptionConfig()
    config = PreemptionConfig(
        tasks=defaults.tasks if tasks is None else tasks, workers=defaults.workers if workers is None else workers,
        steps=steps, step_seconds=step_seconds, share=share, every=every, rounds=rounds, grace_seconds=grace,
        timeout=timeout,
    )
    report = run_preemption(config)
    output.write_text(json.dumps(report, indent=2))
    typer.echo(summary(report))
    typer.echo(f"report written to {output}")

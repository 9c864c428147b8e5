"""`wallet worker`: run the background jobs (docs/operations.md, "Background jobs")."""

from __future__ import annotations

import logging

import click
from flask import Flask

from wallet.cli.base import cli, info, with_app


@cli.command()
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Jobs run at once (threads).")
@click.option("--periodic/--no-periodic", default=True, show_default=True,
              help="Also run the periodic sweeps (vesting, pins, holds, pending honours)."
                   " Several workers may all run them: every sweep is idempotent.")
@with_app
def worker(app: Flask, workers: int, periodic: bool) -> None:
    """Run queued and periodic jobs until interrupted (Ctrl-C finishes the jobs running)."""
    from wallet import jobs

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    queue = jobs.queue(app)
    info(f"Worker: {workers} thread(s), queue {queue.huey.name!r} at {jobs.storage_of(app)}"
         f"{', periodic sweeps on' if periodic else ''}")
    if periodic:
        queue.catch_up()  # a worker that was down sweeps at once, not at the next minute
    consumer = queue.huey.create_consumer(workers=workers, periodic=periodic,
                                          worker_type="thread", max_delay=1.0)
    consumer.run()

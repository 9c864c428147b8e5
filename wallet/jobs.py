"""Background jobs on a real queue (Huey): docs/operations.md, "Background jobs".

Every job is a thin shell over actions and is **driven by rows in the database**: a
periodic job re-scans the rows that are due (tranches, holds past their expiry, stale
pins, pending honours) and each row is claimed by a conditional update or a unique
key inside the action. So a job that is lost, run twice, or run by two workers at once
changes nothing more than one run would, and a worker that was down catches up on its
first sweep.

The queue is per app (`app.extensions`): `SqliteHuey` in a file of the instance folder
by default (nothing to install or run beside `make run`), `RedisHuey` when
`WALLET_REDIS_URL` is set (several instances and workers share one queue). A job
function runs inside the app's context with its own database session, like a CLI
command; `wallet worker` (wallet/cli/worker.py) runs the consumer.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from flask import Flask
from huey import Huey, RedisHuey, SqliteHuey, crontab
from huey.api import TaskWrapper
from huey.exceptions import ConfigurationError

from wallet import db
from wallet.actions import mail, pending, sweeps, webhooks
from wallet.actions._base import Actor
from wallet.config import ConfigError

EXTENSION = "wallet.jobs"
WORKER = Actor("worker")  # who the audit log says acted

log = logging.getLogger(__name__)
_lock = threading.Lock()


# -- the job functions: thin over `wallet.actions.sweeps`, each safe twice or at once -------


def vest_due(app: Flask) -> int:
    """Post the tranches due today everywhere; how many (`wallet vest --all-orgs`)."""
    with app.app_context():
        return sweeps.vest_due(db.session(), actor=WORKER)


def refresh_trust(app: Flask) -> int:
    """Re-fetch the pins older than WALLET_TRUST_REFRESH_SECONDS; how many."""
    with app.app_context():
        max_age = timedelta(seconds=int(app.config["WALLET_TRUST_REFRESH_SECONDS"]))
        return sweeps.refresh_stale(db.session(), max_age=max_age, actor=WORKER)


def retry_pending(app: Flask) -> int:
    """Try again the pending honours whose next try is due; how many were tried."""
    with app.app_context():
        return pending.retry_due(db.session())


def retry_honour(app: Flask, pending_id: int) -> int:
    """Try one pending honour again if its try is due (1) or not (0)."""
    with app.app_context():
        return int(pending.retry(db.session(), pending_id=pending_id) is not None)


def deliver_webhooks(app: Flask) -> int:
    """Deliver the webhook messages whose next attempt is due; how many were tried."""
    with app.app_context():
        return webhooks.deliver_due(db.session())


def webhook_reminders(app: Flask) -> int:
    """Emit note.expiring and alumni.window_closing (each once per note or person)."""
    with app.app_context():
        return webhooks.remind_due(db.session())


def send_mail(app: Flask) -> int:
    """Send the email messages waiting in the outbox; how many were tried."""
    with app.app_context():
        return mail.send_due(db.session())


def expire_holds(app: Flask) -> int:
    """Release the holds past their expiry everywhere; how many (`wallet holds expire`)."""
    with app.app_context():
        return sweeps.expire_holds(db.session())


# -- the queue -------------------------------------------------------------------------------


# name -> (job function, when it runs by itself: a crontab, or None for on demand only)
Schedule = Callable[[Any], bool]
PERIODIC: dict[str, tuple[Callable[..., int], Schedule | None]] = {
    "vest_due": (vest_due, crontab(minute="5")),  # hourly (balances also vest when read)
    "refresh_trust": (refresh_trust, crontab(minute="*/10")),  # only stale pins are fetched
    "expire_holds": (expire_holds, crontab()),  # every minute
    "retry_pending": (retry_pending, crontab()),  # every minute; each row has its backoff
    "deliver_webhooks": (deliver_webhooks, crontab()),  # every minute; each message its backoff
    "webhook_reminders": (webhook_reminders, crontab(hour="6", minute="15")),  # daily
    "send_mail": (send_mail, crontab()),  # every minute: what the outbox holds
}


@dataclass
class Jobs:
    """An app's queue and its tasks (Huey task wrappers, by job name)."""

    huey: Huey
    tasks: dict[str, TaskWrapper] = field(default_factory=dict)

    def enqueue(self, name: str, *args: Any, delay: float | None = None) -> bool:
        """Put a job on the queue (after `delay` seconds); False, logged, when the queue
        cannot be reached: the periodic sweeps will find the rows anyway."""
        try:
            task = self.tasks[name]
            if delay:
                task.schedule(args=args, delay=delay)
            else:
                task(*args)
        except Exception as err:  # the queue is an optimisation over the sweeps
            log.warning("could not enqueue %s: %s: %s", name, type(err).__name__, err)
            return False
        return True

    def catch_up(self) -> None:
        """Enqueue every periodic sweep once (a worker starting after a pause)."""
        for name, (_fn, schedule) in PERIODIC.items():
            if schedule is not None:
                self.enqueue(name)


def queue(app: Flask) -> Jobs:
    """The app's queue, built on first use."""
    jobs: Jobs | None = app.extensions.get(EXTENSION)
    if jobs is None:
        with _lock:
            jobs = app.extensions.get(EXTENSION)
            if jobs is None:
                jobs = app.extensions[EXTENSION] = _build(app)
    return jobs


def storage_of(app: Flask) -> str:
    """Where the app's queue lives, for the logs: the Redis URL without its password,
    or the SQLite file."""
    url = str(app.config.get("WALLET_REDIS_URL") or "")
    if url:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        return f"redis://{parts.hostname}:{parts.port or 6379}{parts.path}"
    return _sqlite_file(app)


def _sqlite_file(app: Flask) -> str:
    return str(app.config.get("WALLET_JOBS_FILE") or os.path.join(app.instance_path,
                                                                  "jobs.sqlite3"))


def _build(app: Flask) -> Jobs:
    name = str(app.config["WALLET_JOBS_QUEUE"])
    url = str(app.config.get("WALLET_REDIS_URL") or "")
    # results=False: a job's effect is in the database; the queue keeps no answers.
    try:
        huey: Huey = (RedisHuey(name, url=url, results=False, utc=True) if url else
                      SqliteHuey(name, filename=_sqlite_file(app), results=False, utc=True))
    except ConfigurationError as err:  # Redis asked for, its client not installed
        raise ConfigError(f"WALLET_REDIS_URL is set but the job queue cannot use it ({err});"
                          " install the redis extra: pip install"
                          " 'compute-credit-wallet[redis]'") from None
    jobs = Jobs(huey)
    for job, (fn, schedule) in {**PERIODIC, **ON_DEMAND}.items():
        jobs.tasks[job] = _register(huey, app, job, fn, schedule)
    return jobs


def _register(huey: Huey, app: Flask, name: str, fn: Callable[..., int],
              schedule: Schedule | None) -> TaskWrapper:
    def run(*args: Any) -> None:
        count = fn(app, *args)
        if count:
            log.info("%s: %d", name, count)

    run.__name__ = name
    if schedule is None:
        return huey.task(name=name)(run)
    return huey.periodic_task(schedule, name=name)(run)


# Jobs for one row, enqueued by the shell (the sweeps find the same rows when they are lost).
ON_DEMAND: dict[str, tuple[Callable[..., int], Schedule | None]] = {
    "retry_honour": (retry_honour, None),
}

"""Run the app under gunicorn from `wallet serve` (gthread workers)."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

from wallet import redaction

# Request and response headers that are credentials whatever their value looks like.
_CREDENTIALS = ("cookie", "authorization", "csrf", "token", "idempotency")


class RedactingLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger with secrets taken out of every access-log atom and error line.

    The request line, path, query and referer go through `redaction.redact`
    (`/invite/<token>`, `/reset/<token>`, query values); cookie, authorization and
    token headers (for formats that print headers) are replaced whole.
    """

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):  # setup runs again on reload
            redaction.attach(log, redaction.Redact)

    def atoms(self, resp: Any, req: Any, environ: Any, request_time: Any) -> dict[str, Any]:
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        for name, value in atoms.items():
            if name.startswith("{") and any(word in name for word in _CREDENTIALS):
                atoms[name] = redaction.MARK
            elif isinstance(value, str):
                atoms[name] = redaction.redact(value)
        return atoms


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)
        # gunicorn >= 25.1 opens a control socket at one path per user: a second instance
        # on the host takes it over and stopping either removes it, so `gunicornc` would
        # reach the wrong instance or none (docs/deployment.md). Signals stay the interface.
        if "control_socket_disable" in self.cfg.settings:
            self.cfg.set("control_socket_disable", True)

    def load(self) -> Any:
        # Each worker builds its own app (and database engine) after the fork.
        from wallet import create_app

        return create_app()


def run(*, host: str, port: int, workers: int, threads: int, access_log: bool) -> None:
    """Serve until interrupted."""
    _Gunicorn({
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "accesslog": "-" if access_log else None,
        "errorlog": "-",
        "loglevel": "warning",
        "logger_class": RedactingLogger,
        "timeout": 60,
        "graceful_timeout": 10,
        "preload_app": False,
    }).run()

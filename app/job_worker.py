"""The RQ worker (`flask worker`) and the `flask jobs` commands.

The worker class is `LunaWorker`, a `SimpleWorker`: jobs run in the worker process itself
(see app/tasks.py for why), with RQ's execution heartbeat kept alive while a job runs and
the reaper run from RQ's periodic maintenance.
"""
from __future__ import annotations

import math
import os
import socket
import threading
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from .job_reaper import reap


def _worker_class() -> type:
    from rq.worker import SimpleWorker, WorkerStatus

    class LunaWorker(SimpleWorker):
        """Runs jobs in-process (see the module docstring) and keeps RQ heartbeats alive meanwhile.

        A plain SimpleWorker does not heartbeat while a job runs, so RQ would
        give a dead worker's job up only after its whole timeout. Here a
        thread renews the execution every JOBS_HEARTBEAT_SECONDS with a TTL
        of JOBS_ABANDONED_AFTER, so a killed worker is noticed that soon.
        """

        def __init__(self, *args: Any, app: Flask, **kwargs: Any):
            self.app = app
            self.heartbeat_seconds = float(app.config["JOBS_HEARTBEAT_SECONDS"])
            self.abandoned_after = int(math.ceil(float(app.config["JOBS_ABANDONED_AFTER"])))
            super().__init__(*args, **kwargs)

        def get_heartbeat_ttl(self, job: Any, working_time: float = 0.0) -> int:
            return self.abandoned_after

        def execute_job(self, job: Any, queue: Any) -> None:
            execution = self.prepare_execution(job)
            stop = threading.Event()
            beat = threading.Thread(target=self._beat, args=(job, execution, stop), name="rq-heartbeat",
                                    daemon=True)
            beat.start()
            try:
                self.perform_job(job, queue, execution)
            finally:
                stop.set()
                beat.join()
            self.set_state(WorkerStatus.IDLE)

        def _beat(self, job: Any, execution: Any, stop: threading.Event) -> None:
            while not stop.wait(self.heartbeat_seconds):
                try:
                    self.maintain_heartbeats(job, execution)
                except Exception as error:
                    self.log.warning("heartbeat for job %s failed: %s", job.id, error)

        def run_maintenance_tasks(self) -> None:
            super().run_maintenance_tasks()
            try:
                report = reap(self.app)
                if report.failed or report.requeued or report.adopted:
                    self.log.info("reaper: %s", report)
            except Exception:
                self.log.exception("job reaper failed")

    return LunaWorker


@click.command("worker")
@click.option("--burst", is_flag=True, help="Run until the queues are empty, then exit.")
@click.option("--queue", "-q", "queues", multiple=True, help="Queue to listen on (repeatable). Default: JOBS_QUEUE.")
@click.option("--name", default=None, help="Worker name (default: <queue>.<host>.<pid>).")
@click.option("--max-jobs", type=int, default=None, help="Exit after this many jobs.")
@with_appcontext
def worker_command(burst: bool, queues: tuple[str, ...], name: str | None, max_jobs: int | None) -> None:
    """Run an RQ worker for LunaOS jobs (needs REDIS_URL)."""
    from redis import Redis
    from rq.serializers import JSONSerializer

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    url = app.config.get("REDIS_URL")
    if not url:
        raise click.ClickException(
            "flask worker needs Redis: set LUNAOS_REDIS_URL (without it, jobs run inside the web server)"
        )
    names = list(queues) or [app.config["JOBS_QUEUE"]]
    reap_interval = max(1, int(float(app.config["JOBS_REAP_INTERVAL"])))
    worker = _worker_class()(
        names,
        name=name or f"{names[0]}.{socket.gethostname()}.{os.getpid()}",
        connection=Redis.from_url(url),  # its own: RQ adjusts the socket timeout of the pool it is given
        serializer=JSONSerializer,
        app=app,
        maintenance_interval=reap_interval,
        # RQ blocks on the queue for worker_ttl - 15 s; this makes it come back for maintenance in time.
        worker_ttl=reap_interval + 15,
    )
    worker.work(burst=burst, max_jobs=max_jobs, logging_level=app.config.get("LOG_LEVEL", "INFO"))


jobs_cli = AppGroup("jobs", help="Inspect and maintain background jobs.")


@jobs_cli.command("reap")
def reap_command() -> None:
    """Re-queue or fail jobs whose worker died (workers also do this periodically)."""
    report = reap()
    click.echo(f"reaped: {report}")
    for job_id in report.failed:
        click.echo(f"  failed    {job_id}")
    for job_id in report.requeued:
        click.echo(f"  re-queued {job_id}")
    for job_id in report.adopted:
        click.echo(f"  adopted   {job_id}")

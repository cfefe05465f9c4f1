"""The executor's background job (registered in web servers and RQ workers alike)."""
from __future__ import annotations

from typing import Any

from app.tasks import JobContext, task

from . import runner
from .runs import JOB_KIND


@task(JOB_KIND)
def run_steps(ctx: JobContext, run_id: str) -> dict[str, Any]:
    return runner.execute(ctx, run_id)

"""The factor task: factor a stored sequence's terms, on its own queue.

It runs on the `factors` queue (shared/work/queue.py routes it there), served by its own
workers (`make factor-worker`, or the `factors` program of supervisord.conf), so CPU-bound
factoring never delays a download. It runs at a lower CPU priority
(BACKSCOPE_FACTOR_NICE), so on a small machine it also yields to the API and PostgreSQL.
Niceness only orders processes within one cgroup: where the factor worker has one of its
own (a systemd unit, a container), the cgroup's weight does that (deploy/,
docker-compose.yml).
It locks its unit of work like the downloads do and calls shared.factors.batches.
"""

from __future__ import annotations

import os

from celery import Task

from shared.config import get_settings
from shared.factors import batches
from shared.work.queue import app, schedule
from shared.work.units import factors_work
from worker.tasks.locked import run_locked


@app.task(name="backscope.factor_values", bind=True)
def factor_values(self: Task, seq_id: str, count: int = 0) -> dict[str, str]:
    """Factor the first `count` terms (all when 0) of `seq_id` not factored yet."""
    settings = get_settings()
    _lower_priority(settings.factor_nice)
    limits = batches.Limits(settings.factor_budget, settings.factor_max_bits)
    work = factors_work(seq_id, count)
    result = run_locked(
        self, work, lambda token: batches.factor_sequence(seq_id, count, token, limits)
    )
    if result["outcome"] == "partial":
        # Out of time for this slice: the rest goes to the back of the queue, so other
        # sequences' factoring gets a turn. Anyone waiting on this task finds the
        # continuation in the lock.
        result["continued_by"] = schedule(work) or ""
    return result


def _lower_priority(nice: int) -> None:
    """Run this pool process, and the gp children it starts, at niceness `nice`.

    A pool process that also takes downloads (a worker started on every queue) keeps
    the lower priority for them too; downloads mostly wait on the network anyway.
    """
    if os.getpriority(os.PRIO_PROCESS, 0) < nice:
        os.setpriority(os.PRIO_PROCESS, 0, nice)

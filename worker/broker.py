"""kombu's Redis transport, with the bug that killed a busy worker when Redis restarted.

When the broker connection is lost, the worker's consumer first calls
`Connection.collect()`, which detaches the transport from its connection
(`transport.client = None`) but leaves the default channel open when closing it failed
half-way on the dead socket. It then calls `Connection.close()`, which closes that
channel again; the channel's QoS restores the unacknowledged messages, which needs a
new Redis client, and building one reads `transport.client.hostname`: AttributeError.
That is no connection error, so the consumer does not reconnect but stops, and the
worker shuts down (exiting once its running tasks end). Only a worker holding
unacknowledged messages gets there: with `task_acks_late`, one running a task, which
is nearly always true of a factor worker. The same AttributeError struck again when a
task that ran across the loss finished and acknowledged its message on the old channel.
(Seen with celery 5.7.0, kombu 5.7.0, redis 8.1.0; no newer release changes it.)

A channel whose transport has been detached now fails with a Redis ConnectionError
instead, like any channel on a lost connection: the consumer ignores it while closing
and reconnects, and a late acknowledgement is logged as not delivered ("Couldn't ack").
If Redis kept its data, such a message is delivered again after the visibility timeout
(shared/work/queue.py); the tasks are idempotent and fenced (worker/tasks/locked.py), so
running one again stores nothing new. If Redis restarted empty, the message is gone.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            raise RedisConnectionError("the broker connection of this channel was closed")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel

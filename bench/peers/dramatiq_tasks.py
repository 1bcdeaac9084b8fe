"""Dramatiq on Redis: no result backend (its default); prefetch raised by the bench (environment)."""

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.peers import stamp

dramatiq.set_broker(RedisBroker(url=os.environ["REDIS_URL"]))


@dramatiq.actor(max_retries=0)
def noop(sent: float) -> None:
    stamp(sent)

"""Celery: Redis broker and result backend, defaults otherwise (every result stored, even None)."""

import os

from celery import Celery

from bench.peers import stamp

app = Celery("bench", broker=os.environ["REDIS_URL"], backend=os.environ["REDIS_URL"])


@app.task
def noop(sent: float) -> None:
    stamp(sent)

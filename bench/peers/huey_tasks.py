"""Huey on Redis and on SQLite; defaults otherwise (a None result is not stored, SQLite polls)."""

import os

from huey import RedisHuey, SqliteHuey

from bench.peers import stamp

redis_huey = RedisHuey("bench", url=os.environ["REDIS_URL"])
sqlite_huey = SqliteHuey("bench", filename=os.environ["HUEY_SQLITE"])


@redis_huey.task()
def noop_redis(sent: float) -> None:
    stamp(sent)


@sqlite_huey.task()
def noop_sqlite(sent: float) -> None:
    stamp(sent)

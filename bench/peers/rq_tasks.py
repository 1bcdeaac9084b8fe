"""RQ: the task its workers import."""

from bench.peers import stamp


def noop(sent: float) -> None:
    stamp(sent)

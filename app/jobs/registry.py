"""Tasks: functions registered under a qualified name, with how and how often they run."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeGuard

from app.jobs.errors import JobError, UnknownTask

BACKENDS = ("spooler", "mule", "thread")
ON_FULL = ("error", "spooler")
MAX_ATTEMPTS = 100


@dataclass(frozen=True)
class Task:
    """A registered job function and its options."""

    name: str
    func: Callable[..., Any]
    backend: str = "spooler"
    max_attempts: int = 3
    backoff: float = 2.0
    max_backoff: float = 300.0
    timeout: float | None = None
    on_full: str = "error"
    throws: tuple[type[BaseException], ...] = ()
    description: str = ""

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "backend": self.backend,
            "max_attempts": self.max_attempts,
            "backoff": self.backoff,
            "timeout": self.timeout,
            "on_full": self.on_full,
            "throws": [exc.__name__ for exc in self.throws],
            "description": self.description,
        }


class TaskRegistry:
    """Every task this process knows, by qualified name."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}

    def register(self, task: Task) -> Task:
        existing = self._tasks.get(task.name)
        if existing is not None and existing.func is not task.func:
            raise JobError(f"two tasks are named {task.name!r}: give one an explicit name")
        self._tasks[task.name] = task
        return task

    def get(self, name: str) -> Task:
        try:
            return self._tasks[name]
        except KeyError:
            raise UnknownTask(f"no task named {name!r}") from None

    def all(self) -> list[Task]:
        return sorted(self._tasks.values(), key=lambda task: task.name)


registry = TaskRegistry()


def is_seconds(value: object) -> TypeGuard[float]:
    """Whether ``value`` is a finite number of seconds (a bool is an int to Python, not to us)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def attempts_problem(max_attempts: object) -> str | None:
    """What is wrong with a number of attempts, or None: one rule for tasks and for jobs."""
    if (
        isinstance(max_attempts, bool)
        or not isinstance(max_attempts, int)
        or not 1 <= max_attempts <= MAX_ATTEMPTS
    ):
        return f"must be a whole number from 1 to {MAX_ATTEMPTS}"
    return None


def option_problem(
    max_attempts: object, backoff: object, max_backoff: object, timeout: object, throws: object
) -> str | None:
    """What is wrong with a task's retry and timeout options, or None."""
    problem = attempts_problem(max_attempts)
    if problem:
        return f"max_attempts {problem}, got {max_attempts!r}"
    if not (
        isinstance(throws, tuple)
        and all(isinstance(exc, type) and issubclass(exc, BaseException) for exc in throws)
    ):
        return f"throws must be a tuple of exception classes, got {throws!r}"
    for option, value in (("backoff", backoff), ("max_backoff", max_backoff)):
        if not (is_seconds(value) and value >= 0):
            return f"{option} must be a number of seconds of at least 0, got {value!r}"
    if timeout is not None and not (is_seconds(timeout) and timeout > 0):
        return f"timeout must be a number of seconds above 0, or None, got {timeout!r}"
    return None


def job(
    name: str | None = None,
    *,
    backend: str = "spooler",
    max_attempts: int = 3,
    backoff: float = 2.0,
    max_backoff: float = 300.0,
    timeout: float | None = None,
    on_full: str = "error",
    throws: tuple[type[BaseException], ...] = (),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as a task and return it unchanged.

    ``name`` defaults to ``module.function``. ``backoff`` is the first retry's delay in
    seconds, doubled on each attempt up to ``max_backoff``, with jitter. ``on_full`` says what a
    mule task does when the mule queue is full: ``error`` (the caller is told) or ``spooler``.
    ``throws`` names the exceptions that are final: the job fails at once, without a retry (as
    when the task raises ``PermanentFailure``).
    Raises ``JobError`` on a bad option or a name already taken by another function.
    """
    if backend not in BACKENDS:
        raise JobError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if on_full not in ON_FULL:
        raise JobError(f"on_full must be one of {', '.join(ON_FULL)}, got {on_full!r}")
    problem = option_problem(max_attempts, backoff, max_backoff, timeout, throws)
    if problem:
        raise JobError(problem)

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        registry.register(
            Task(
                name=name or f"{func.__module__}.{func.__qualname__}",
                func=func,
                backend=backend,
                max_attempts=max_attempts,
                backoff=backoff,
                max_backoff=max_backoff,
                timeout=timeout,
                on_full=on_full,
                throws=throws,
                description=(inspect.getdoc(func) or "").split("\n")[0],
            )
        )
        return func

    return decorate

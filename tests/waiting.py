"""Waiting on a condition with a deadline, instead of sleeping a guessed time before an assert."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T],
    timeout: float,
    interval: float = 0.1,
    *,
    what: str,
    detail: Callable[[], str] | None = None,
) -> T:
    """Calls `condition` every `interval` seconds until it returns something truthy, and returns that.
    Past `timeout` seconds the test fails naming `what` was awaited, followed by `detail()` if given
    (a log tail, the last output). The condition is checked at least once, and once more at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            message = f"waited {timeout:g} s for {what}, in vain"
            if detail is not None:
                message += f"\n{detail()}"
            pytest.fail(message)
        time.sleep(min(interval, remaining))

"""``runtests.py`` of the current folder, with djasynctest's classes swapped in."""

from __future__ import annotations

import atexit
import runpy
import sys
from typing import Any

from djasynctest_swap import record

import djasynctest

ran = 0
run = djasynctest.AsyncTestMixin.run


def counted(self: Any, result: Any = None) -> Any:
    global ran
    ran += 1
    return run(self, result)


djasynctest.AsyncTestMixin.run = counted  # type: ignore[method-assign]
atexit.register(lambda: record(ran))
sys.argv = ["runtests.py", *sys.argv[1:]]
sys.path.insert(0, ".")
runpy.run_path("runtests.py", run_name="__main__")

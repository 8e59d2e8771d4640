"""Loaded by Python at start-up when this folder is on PYTHONPATH (the multi-host harness's
clock-skew fault): ``time.time()`` and ``time.time_ns()`` run ``SLIMYQ_TEST_CLOCK_SKEW`` seconds
ahead (negative: behind). Linux time namespaces offset only the monotonic and boot clocks, not
the wall clock, so the skew is applied here, where slimyq reads the wall clock for its deadlines,
retry times and metrics minutes."""

from __future__ import annotations

import os
import time

_skew = float(os.environ.get("SLIMYQ_TEST_CLOCK_SKEW", "0") or 0)
if _skew:
    _time, _time_ns = time.time, time.time_ns
    time.time = lambda: _time() + _skew
    time.time_ns = lambda: _time_ns() + int(_skew * 1e9)

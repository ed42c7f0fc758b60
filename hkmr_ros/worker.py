"""LatestFrameWorker: run a slow callable on the newest input only, off the caller's thread.

A camera delivers frames faster than the network may process them; queueing them makes the
latency grow without bound. Here a submit replaces any frame still waiting (the replaced one is
counted in `dropped`), so the worker always works on the freshest frame and latency stays at
most one processing time plus one frame.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Optional

LOG = logging.getLogger("hkmr_ros.worker")


class LatestFrameWorker:
    """worker = LatestFrameWorker(fn, on_result=None, on_error=None); worker.submit(x); ...; worker.stop()

    `fn(item)` runs on a background thread; its return value goes to `on_result(item, result)`
    (on that thread), an exception to `on_error(item, exc)` (default: logged and counted in
    `errors`; the worker keeps running). Counters: submitted, processed, dropped, errors.
    """

    def __init__(self, fn: Callable[[Any], Any], on_result: Optional[Callable[[Any, Any], None]] = None,
                 on_error: Optional[Callable[[Any, BaseException], None]] = None, name: str = "hkmr-worker"):
        self._fn = fn
        self._on_result = on_result
        self._on_error = on_error
        self._cond = threading.Condition()
        self._pending: Optional[tuple] = None
        self._busy = False
        self._stopping = False
        self.submitted = 0
        self.processed = 0
        self.dropped = 0
        self.errors = 0
        self.last_result: Any = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> bool:
        """Queue `item`, replacing (and counting as dropped) any item not yet started.
        Returns False if the worker is stopped."""
        with self._cond:
            if self._stopping:
                return False
            self.submitted += 1
            if self._pending is not None:
                self.dropped += 1
            self._pending = (item,)
            self._cond.notify_all()
            return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stopping:
                    self._cond.wait()
                if self._pending is None:      # stopping and nothing left to do
                    return
                (item,), self._pending = self._pending, None
                self._busy = True
            try:
                result = self._fn(item)
            except BaseException as exc:  # noqa: BLE001 - the worker must survive any frame
                self.errors += 1
                if self._on_error is not None:
                    self._call(self._on_error, item, exc)
                else:
                    LOG.warning("processing a frame failed: %s: %s", type(exc).__name__, exc)
            else:
                self.last_result = result
                if self._on_result is not None:
                    self._call(self._on_result, item, result)
            finally:
                with self._cond:
                    self.processed += 1
                    self._busy = False
                    self._cond.notify_all()

    @staticmethod
    def _call(cb, item, value) -> None:
        try:
            cb(item, value)
        except Exception as exc:  # noqa: BLE001
            LOG.warning("worker callback failed: %s: %s", type(exc).__name__, exc)

    def wait_idle(self, timeout: Optional[float] = None) -> bool:
        """Block until nothing is pending or running; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending is not None or self._busy:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def stop(self, drain: bool = False, timeout: Optional[float] = 5.0) -> bool:
        """Stop the thread: the frame in progress finishes; a pending one is processed when
        `drain`, else dropped (and counted). Returns True when the thread has ended."""
        with self._cond:
            if not drain and self._pending is not None:
                self._pending = None
                self.dropped += 1
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    def __enter__(self) -> "LatestFrameWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

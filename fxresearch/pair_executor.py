"""An ``Executor`` that runs each submitted call in its own new process.

``concurrent.futures.ProcessPoolExecutor`` breaks as a whole when one worker process dies:
every running and pending future fails with ``BrokenProcessPool``, and none of them shows which
call killed it. ``PairProcessExecutor`` starts a fresh process (spawn start method by default)
for each call, at most ``max_workers`` at a time. A call whose process dies (a signal,
``os._exit``, a segfault in a native library, an out-of-memory kill) therefore fails only its
own future, with ``PairProcessDied`` naming the signal or the exit code.

Each child process:

- ignores SIGINT, because the parent decides what a Ctrl-C stops (``terminate_running``);
- runs a watchdog thread that ends the process when its parent has died, so a killed run
  leaves no orphan writing into the output folder;
- sends back the call's result, or its exception with the formatted traceback.

Before a queued call starts, the executor checks two things: whether its memory weight fits
the budget beside the calls already running, and the optional ``admission`` callable (load
and memory thresholds of ``--adaptive``). A call is never held when nothing runs, so the
queue always moves.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections import deque
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Callable

__all__ = ["PARENT_CHECK_SECONDS", "PairProcessDied", "PairProcessExecutor", "describe_exit_code"]

logger = logging.getLogger(__name__)

# Seconds between the child watchdog's checks that its parent is still alive.
PARENT_CHECK_SECONDS = 1.0
# Exit code of a child that ended because its parent died.
EXIT_PARENT_DIED = 70
# Seconds a held queue waits before asking the admission checks again.
ADMISSION_RETRY_SECONDS = 2.0


class PairProcessDied(RuntimeError):
    """Error raised when the process running a call ends without sending its result.

    ``exit_code`` follows ``multiprocessing.Process.exitcode``: negative for the signal
    that killed the process.
    """

    def __init__(self, reason: str, exit_code: int | None, pid: int | None) -> None:
        super().__init__(reason)
        self.exit_code = exit_code
        self.pid = pid


class RemoteTraceback(Exception):
    """The formatted traceback of an exception raised in a child process."""


def describe_exit_code(exit_code: int | None) -> str:
    """Return how a process ended, in words: ``killed by signal SIGKILL`` or ``exited with code 3``."""
    if exit_code is None:
        return "did not exit"
    if exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        hint = {"SIGKILL": " (often the kernel's out-of-memory killer)", "SIGSEGV": " (a crash in native code)"}
        return f"killed by signal {name}{hint.get(name, '')}"
    if exit_code == EXIT_PARENT_DIED:
        return f"exited with code {exit_code} because its parent process died"
    return f"exited with code {exit_code}"


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(PARENT_CHECK_SECONDS)
        if os.getppid() != parent_pid:
            # The parent died and another process adopted this one, so stop before writing more.
            os._exit(EXIT_PARENT_DIED)


def _child_main(conn: Connection, parent_pid: int, initializer: Callable[..., Any] | None,
                initargs: tuple, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    """Run one call in the child process and send ``("result", value)`` or ``("error", exc, text)``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="parent-watchdog", daemon=True).start()
    try:
        if initializer is not None:
            initializer(*initargs)
        message: tuple = ("result", fn(*args, **kwargs))
    except BaseException as exc:  # send every exception to the parent, SystemExit included
        message = ("error", exc, traceback.format_exc())
    try:
        try:
            conn.send(message)
        except (BrokenPipeError, ConnectionResetError):
            raise
        except Exception as exc:  # the result or the exception cannot be pickled
            conn.send(("error", RuntimeError(f"cannot send the result back to the parent: {exc!r}"),
                       traceback.format_exc()))
    except (BrokenPipeError, ConnectionResetError):
        # The parent is gone, so no one can receive the result. The ledger and the manifest
        # record the pair's state.
        pass
    finally:
        conn.close()


@dataclass
class _WorkItem:
    future: Future
    fn: Callable[..., Any]
    args: tuple
    kwargs: dict
    weight: float = 0.0


@dataclass
class _Running:
    item: _WorkItem
    process: Any
    conn: Connection
    started: float = field(default_factory=time.monotonic)
    received: bool = False
    # True once the result pipe reached its end without a message (the process died).
    pipe_closed: bool = False


class PairProcessExecutor(Executor):
    """Run each call in its own process, at most ``max_workers`` at once.

    Parameters
    ----------
    max_workers
        Calls running at once.
    mp_context
        A ``multiprocessing`` context; spawn by default, so a child starts without the
        parent's threads and thread pools.
    initializer, initargs
        Called in each child before the call, as in ``ProcessPoolExecutor``.
    memory_budget_bytes
        A call submitted with ``submit_weighted`` starts only while the weights of the
        running calls plus its own fit in this budget, or when nothing runs. None for no budget.
    admission
        Called before a queued call starts while others run. It returns None to start the
        call, or the reason to wait (for example a load above a threshold).
    on_hold
        Called with the reason whenever the queue starts waiting for a new reason.
    """

    def __init__(self, max_workers: int, mp_context: Any = None,
                 initializer: Callable[..., Any] | None = None, initargs: tuple = (), *,
                 memory_budget_bytes: float | None = None,
                 admission: Callable[[], str | None] | None = None,
                 on_hold: Callable[[str], None] | None = None) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        self.max_workers = max_workers
        self._context = mp_context or multiprocessing.get_context("spawn")
        self._initializer, self._initargs = initializer, initargs
        self.memory_budget_bytes = memory_budget_bytes
        self._admission, self._on_hold = admission, on_hold
        self._queue: deque[_WorkItem] = deque()
        self._running: dict[int, _Running] = {}
        self._lock = threading.Lock()
        self._wakeup_reader, self._wakeup_writer = multiprocessing.Pipe(duplex=False)
        self._shutdown = False
        self._hold_reason: str | None = None
        self._manager = threading.Thread(target=self._manage, name="pair-executor", daemon=True)
        self._manager.start()

    # ------------------------------------------------------------------ public interface

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Queue ``fn(*args, **kwargs)`` to run in a new process and return its future."""
        return self.submit_weighted(0.0, fn, *args, **kwargs)

    def submit_weighted(self, weight: float, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Queue a call whose process needs about ``weight`` bytes of memory at its peak."""
        future: Future = Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit after shutdown")
            self._queue.append(_WorkItem(future, fn, args, kwargs, float(weight)))
        self._wake()
        return future

    def running_pids(self) -> list[int]:
        """Return the process ids of the calls running now."""
        with self._lock:
            return [running.process.pid for running in self._running.values()]

    @property
    def hold_reason(self) -> str | None:
        """Why the next queued call waits, or None when it does not."""
        return self._hold_reason

    def terminate_running(self, grace_seconds: float = 5.0) -> list[int]:
        """Stop every running call's process (SIGTERM, then SIGKILL after ``grace_seconds``).

        Their futures fail with ``PairProcessDied``. Returns the stopped process ids, so the
        caller can remove files those processes left.
        """
        with self._lock:
            processes = [running.process for running in self._running.values()]
        for process in processes:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + grace_seconds
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(5.0)
        self._wake()
        # Wait for the manager thread to settle the futures of the stopped processes.
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            with self._lock:
                if not any(running.process in processes for running in self._running.values()):
                    break
            time.sleep(0.02)
        return [process.pid for process in processes]

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting calls, cancel the queued ones with ``cancel_futures``, and wait for the rest with ``wait``."""
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while self._queue:
                    self._queue.popleft().future.cancel()
        self._wake()
        if wait:
            self._manager.join()

    # ------------------------------------------------------------------ the manager thread

    def _wake(self) -> None:
        try:
            self._wakeup_writer.send_bytes(b"")
        except OSError:  # the manager already closed the pipe
            pass

    def _next_hold_reason(self, item: _WorkItem) -> str | None:
        """Return why ``item`` must wait, or None to start it. Nothing waits while no call runs."""
        if not self._running:
            return None
        if self.memory_budget_bytes is not None and item.weight > 0:
            in_use = sum(running.item.weight for running in self._running.values())
            if in_use + item.weight > self.memory_budget_bytes:
                return (f"memory: {len(self._running)} running pairs need an estimated "
                        f"{in_use / 1024 ** 3:.2f} GB and the next one {item.weight / 1024 ** 3:.2f} GB, "
                        f"above the {self.memory_budget_bytes / 1024 ** 3:.2f} GB budget")
        if self._admission is not None:
            return self._admission()
        return None

    def _start_queued(self) -> None:
        while True:
            with self._lock:
                if not self._queue or len(self._running) >= self.max_workers:
                    self._set_hold(None)
                    return
                item = self._queue[0]
                if item.future.cancelled():
                    self._queue.popleft()
                    continue
                reason = self._next_hold_reason(item)
                if reason is not None:
                    self._set_hold(reason)
                    return
                self._queue.popleft()
                if not item.future.set_running_or_notify_cancel():
                    continue
                self._set_hold(None)
                reader, writer = self._context.Pipe(duplex=False)
                process = self._context.Process(
                    target=_child_main, name="pair-process",
                    args=(writer, os.getpid(), self._initializer, self._initargs, item.fn, item.args, item.kwargs))
                try:
                    process.start()
                except Exception as exc:  # e.g. arguments that cannot be pickled
                    reader.close()
                    writer.close()
                    item.future.set_exception(exc)
                    continue
                writer.close()
                self._running[process.sentinel] = _Running(item, process, reader)

    def _set_hold(self, reason: str | None) -> None:
        if reason is not None and reason != self._hold_reason:
            logger.info("Next pair waits: %s", reason)
            if self._on_hold is not None:
                self._on_hold(reason)
        self._hold_reason = reason

    def _manage(self) -> None:
        while True:
            self._start_queued()
            with self._lock:
                if self._shutdown and not self._running and (not self._queue or self._all_queued_cancelled()):
                    break
                running = list(self._running.values())
            waitables: list[Any] = [self._wakeup_reader]
            for entry in running:
                waitables.append(entry.process.sentinel)
                if not entry.received and not entry.pipe_closed:
                    waitables.append(entry.conn)
            timeout = ADMISSION_RETRY_SECONDS if self._hold_reason is not None else None
            ready = wait(waitables, timeout=timeout)
            if self._wakeup_reader in ready:
                while self._wakeup_reader.poll():
                    self._wakeup_reader.recv_bytes()
            for entry in running:
                if entry.conn in ready and not entry.received:
                    self._receive(entry)
                if entry.process.sentinel in ready:
                    self._finish(entry)
        self._wakeup_reader.close()
        self._wakeup_writer.close()

    def _all_queued_cancelled(self) -> bool:
        return all(item.future.cancelled() for item in self._queue)

    def _receive(self, entry: _Running) -> None:
        try:
            message = entry.conn.recv()
        except (EOFError, OSError):
            entry.pipe_closed = True  # the process died, and _finish reports how
            return
        entry.received = True
        if message[0] == "result":
            entry.item.future.set_result(message[1])
        else:
            exc = message[1]
            exc.__cause__ = RemoteTraceback(message[2])
            entry.item.future.set_exception(exc)

    def _finish(self, entry: _Running) -> None:
        if not entry.received and not entry.pipe_closed and entry.conn.poll():
            self._receive(entry)
        entry.process.join()
        entry.conn.close()
        with self._lock:
            self._running.pop(entry.process.sentinel, None)
        if not entry.received:
            reason = f"pair process {entry.process.pid} {describe_exit_code(entry.process.exitcode)}"
            # The caller reports the failure on screen, so this record goes to the run log file only.
            logger.error("%s while running %s", reason, getattr(entry.item.fn, "__name__", entry.item.fn),
                         extra={"file_only": True})
            entry.item.future.set_exception(PairProcessDied(reason, entry.process.exitcode, entry.process.pid))

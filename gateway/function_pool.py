"""Function instances as Lambda runs them: separate processes, one invocation at a time each.

A ``FunctionPool`` per function starts instances lazily (a cold start), reuses idle ones (warm), and
never runs more than its concurrency at once; further invocations wait for an instance. An instance that
crashes is dropped (502) and replaced by the next cold start; one that overruns its deadline is killed
(504). The gateway and an instance talk over a socket pair with length-prefixed JSON frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from typing import Any

from gateway.framing import FrameError, encode_frame, read_frame
from gateway.spec import LOCAL_ACCOUNT_ID, FunctionSpec
from shared.errors import BerthError
from shared.observability import get_logger, log_event

# Lambda gives a function's init phase 10 s; a loaded CI machine importing a FastAPI app needs headroom.
INIT_TIMEOUT_SECONDS = 20.0
STOP_GRACE_SECONDS = 3.0

logger = get_logger("gateway")
# Reaping killed processes runs in the background; keep the tasks referenced until they finish.
_background: set[asyncio.Task[None]] = set()


class FunctionFailure(BerthError):
    """The function behind a route did not answer normally."""

    status = 502
    code = "function_failed"


class FunctionCrashed(FunctionFailure):
    code = "function_crashed"


class FunctionErrored(FunctionFailure):
    code = "function_error"


class FunctionStartFailed(FunctionFailure):
    code = "function_start_failed"


class FunctionTimedOut(FunctionFailure):
    status = 504
    code = "function_timeout"


class FunctionThrottled(FunctionFailure):
    status = 503
    code = "function_busy"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": "1"}


def function_arn(function: FunctionSpec, region: str) -> str:
    return f"arn:aws:lambda:{region}:{LOCAL_ACCOUNT_ID}:function:{function.function_name}"


class FunctionInstance:
    """One running instance (process) of a function; ``invoke`` is never called concurrently."""

    def __init__(
        self,
        function: FunctionSpec,
        process: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pid: int,
    ) -> None:
        self.function = function
        self.process = process
        self.pid = pid
        self._reader = reader
        self._writer = writer
        self._timed_out = False
        self.alive = True
        self.invocations = 0

    @classmethod
    async def start(
        cls,
        function: FunctionSpec,
        *,
        arn: str,
        env: Mapping[str, str] | None = None,
        init_timeout: float = INIT_TIMEOUT_SECONDS,
    ) -> FunctionInstance:
        """Start a process for ``function`` and wait until its handler is imported (a cold start)."""
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        command = [
            sys.executable,
            "-m",
            "gateway.function_host",
            function.handler,
            "--fd",
            str(child.fileno()),
            "--function-name",
            function.function_name,
            "--memory-mb",
            str(function.memory_mb),
            "--arn",
            arn,
        ]
        if function.code_dir is not None:
            command += ["--code-dir", str(function.code_dir)]
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=sys.stderr.fileno(),
                env=None if env is None else dict(env),
            )
        finally:
            child.close()
        try:
            parent.setblocking(False)
            reader, writer = await asyncio.open_unix_connection(sock=parent)
            ready = await asyncio.wait_for(read_frame(reader), init_timeout)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, FrameError) as exc:
            _kill(process)
            parent.close()
            await _reap(process)
            raise FunctionStartFailed(
                f"The {function.logical_id} function did not start; see the gateway's log."
            ) from exc
        if not isinstance(ready, dict) or not ready.get("ready"):
            writer.close()
            await _reap(process)
            reason = ready.get("error") if isinstance(ready, dict) else None
            log_event(logger, "function failed to start", function=function.logical_id, reason=reason)
            # The reason (an import error, a settings error quoting its input) stays in the log.
            raise FunctionStartFailed(f"The {function.logical_id} function failed to start; see the gateway's log.")
        return cls(function, process, reader, writer, int(ready.get("pid") or process.pid))

    async def invoke(self, event: dict[str, Any], *, request_id: str, time_limit: float) -> Any:
        """The handler's result for ``event``; raises a ``FunctionFailure`` when there is none."""
        self.invocations += 1
        deadline_ms = int((time.time() + time_limit) * 1000)
        self._writer.write(
            encode_frame(
                {
                    "event": event,
                    "context": {"aws_request_id": request_id, "deadline_epoch_ms": deadline_ms},
                }
            )
        )
        # A timer rather than wait_for: one call_later per invocation is cheaper than a task.
        timer = asyncio.get_running_loop().call_later(time_limit, self._time_out)
        try:
            reply = await read_frame(self._reader)
        except (asyncio.IncompleteReadError, ConnectionError, FrameError) as exc:
            self.kill()
            log_event(
                logger,
                "function instance lost",
                function=self.function.logical_id,
                pid=self.pid,
                reason="timed out" if self._timed_out else "crashed",
                request_id=request_id,
            )
            if self._timed_out:
                raise FunctionTimedOut(
                    f"The {self.function.logical_id} function did not answer within {time_limit:g} s."
                ) from exc
            raise FunctionCrashed(
                f"The {self.function.logical_id} function crashed while handling the request."
            ) from exc
        except BaseException:
            # Cancelled mid-invocation: the instance's next frame would answer the wrong request.
            self.kill()
            raise
        finally:
            timer.cancel()
        if not isinstance(reply, dict):
            self.kill()
            raise FunctionCrashed(f"The {self.function.logical_id} function answered garbage.")
        if "error" in reply:
            error = reply["error"] or {}
            log_event(
                logger,
                "function raised",
                function=self.function.logical_id,
                error_type=error.get("errorType"),
                request_id=request_id,
            )
            raise FunctionErrored(
                f"The {self.function.logical_id} function failed ({error.get('errorType', 'error')})."
            )
        return reply.get("result")

    def _time_out(self) -> None:
        self._timed_out = True
        self.kill()

    def kill(self) -> None:
        """Stop the process now (SIGKILL), as Lambda does with an instance that timed out."""
        if self.alive:
            self.alive = False
            _kill(self.process)
            self._writer.close()
            task = asyncio.get_running_loop().create_task(_reap(self.process))
            _background.add(task)
            task.add_done_callback(_background.discard)

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Close the channel (the instance exits on EOF); kill it if it lingers past ``grace``."""
        if not self.alive:
            return
        self.alive = False
        self._writer.close()
        try:
            await asyncio.wait_for(self.process.wait(), grace)
        except TimeoutError:
            _kill(self.process)
            await _reap(self.process)


def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGKILL)


async def _reap(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(process.wait(), STOP_GRACE_SECONDS)


class FunctionPool:
    """The instances of one function: lazily started, reused while warm, at most ``max_instances``."""

    def __init__(
        self, function: FunctionSpec, *, max_instances: int, region: str, env: Mapping[str, str] | None = None
    ) -> None:
        self.function = function
        self.max_instances = max_instances
        self.arn = function_arn(function, region)
        self._env = env
        self._idle: list[FunctionInstance] = []
        self._live: set[FunctionInstance] = set()
        self._slots = asyncio.Semaphore(max_instances)
        self._closed = False
        self.cold_starts = 0

    def set_environment(self, env: Mapping[str, str]) -> None:
        """The environment of instances started from now on."""
        self._env = env

    @property
    def pids(self) -> list[int]:
        return sorted(instance.pid for instance in self._live)

    async def invoke(self, event: dict[str, Any], *, request_id: str | None = None, time_limit: float) -> Any:
        """Run ``event`` on an idle instance (or a new one) within ``time_limit`` seconds in all: waiting for
        a free slot, a cold start and the invocation share that one deadline, as API Gateway's integration
        timeout covers a Lambda's init too (a cold start on a busy machine once made a call take 34 s)."""
        if self._closed:
            raise FunctionThrottled("The gateway is shutting down.")
        deadline = time.monotonic() + time_limit
        if self._slots.locked():
            try:
                await asyncio.wait_for(self._slots.acquire(), time_limit)
            except TimeoutError as exc:
                raise FunctionThrottled(
                    f"Every {self.function.logical_id} instance stayed busy; try again shortly."
                ) from exc
        else:
            await self._slots.acquire()
        try:
            instance = self._idle.pop() if self._idle else await self._cold_start(deadline)
            try:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise FunctionTimedOut(
                        f"The {self.function.logical_id} function did not answer within {time_limit:g} s."
                    )
                return await instance.invoke(event, request_id=request_id or uuid.uuid4().hex, time_limit=remaining)
            finally:
                if instance.alive and not self._closed:
                    self._idle.append(instance)
                else:
                    self._live.discard(instance)
        finally:
            self._slots.release()

    async def _cold_start(self, deadline: float) -> FunctionInstance:
        """A new instance, given until ``deadline`` (the request's) or the init limit, whichever comes first."""
        remaining = deadline - time.monotonic()
        try:
            instance = await FunctionInstance.start(
                self.function, arn=self.arn, env=self._env, init_timeout=max(0.0, min(INIT_TIMEOUT_SECONDS, remaining))
            )
        except FunctionStartFailed as exc:
            if remaining < INIT_TIMEOUT_SECONDS and time.monotonic() >= deadline:
                raise FunctionTimedOut(
                    f"The {self.function.logical_id} function did not start within the request's time limit."
                ) from exc
            raise
        self.cold_starts += 1
        self._live.add(instance)
        log_event(
            logger,
            "function instance started",
            function=self.function.logical_id,
            pid=instance.pid,
            instances=len(self._live),
        )
        return instance

    async def close(self) -> None:
        """Stop every instance; in-flight invocations have finished by now (the server drained)."""
        self._closed = True
        instances = list(self._live)
        self._live.clear()
        self._idle.clear()
        await asyncio.gather(*(instance.stop() for instance in instances), return_exceptions=True)

"""One function instance in its own process, as a Lambda execution environment would run it.

The gateway starts ``python -m gateway.function_host module:attr --fd N ...`` with one end of a
socket pair as fd N. The instance imports the handler (its cold start), answers ``{"ready": true}``,
then serves one invocation at a time: a frame ``{"event", "context"}`` in, a frame ``{"result"}`` or
``{"error"}`` out. It exits when the gateway closes the socket; the gateway kills it on a timeout.
Its stdout goes to stderr, because the gateway's stdout carries nothing but access log lines.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from gateway.framing import FrameError, encode_frame, read_frame, send_frame

Handler = Callable[[dict[str, Any], Any], Any]


class LambdaContext:
    """The context object a Lambda handler receives, with the same attribute names."""

    def __init__(
        self,
        *,
        aws_request_id: str,
        function_name: str,
        memory_limit_in_mb: int,
        invoked_function_arn: str,
        deadline_epoch_ms: int,
    ) -> None:
        self.aws_request_id = aws_request_id
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = memory_limit_in_mb
        self.invoked_function_arn = invoked_function_arn
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = f"local/{os.getpid()}"
        self.identity = None
        self.client_context = None
        self._deadline_epoch_ms = deadline_epoch_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_epoch_ms - int(time.time() * 1000))


def load_handler(spec: str, code_dir: str | None = None) -> Handler:
    """Import ``module:attr`` (or SAM's ``module.attr``), with ``code_dir`` first on the path."""
    if code_dir and Path(code_dir).is_dir() and code_dir not in sys.path:
        sys.path.insert(0, code_dir)
    module_name, separator, attribute = spec.partition(":")
    if not separator:
        module_name, _, attribute = spec.rpartition(".")
    if not module_name or not attribute:
        raise ValueError(f"handler {spec!r} is not 'module:attr' or 'module.attr'")
    handler = getattr(importlib.import_module(module_name), attribute)
    if not callable(handler):
        raise TypeError(f"handler {spec!r} is not callable")
    return handler


def _new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        return asyncio.new_event_loop()


class MangumInvoker:
    """Runs a Mangum handler's app on the instance's event loop, which keeps running between invocations.

    ``Mangum.__call__`` does ``loop.run_until_complete`` per invocation, which makes every invocation a
    new root task: AnyIO then starts a worker thread for it (FastAPI runs sync dependencies there) and
    stops it at the end, close to a millisecond each time. This does exactly what ``Mangum.__call__``
    does, with Mangum's own pieces (event -> scope, the HTTP cycle, response -> payload 2.0), as one
    awaited coroutine of a long-lived root task instead. Only for ``lifespan="off"`` (what
    ``shared.http_app.lambda_handler`` makes); anything else goes through ``ThreadInvoker``.
    """

    def __init__(self, adapter: Any) -> None:
        from mangum.protocols import HTTPCycle

        self._adapter = adapter
        self._cycle = HTTPCycle

    @staticmethod
    def applies_to(handler: Handler) -> bool:
        if not type(handler).__module__.startswith("mangum"):
            return False
        from mangum import Mangum

        return isinstance(handler, Mangum) and handler.lifespan == "off"

    async def __call__(self, event: dict[str, Any], context: LambdaContext) -> Any:
        protocol = self._adapter.infer(event, context)
        cycle = self._cycle(protocol.scope, protocol.body)
        await cycle.run(self._adapter.app)
        return protocol({"status": cycle.status, "headers": cycle.headers, "body": cycle.body})


class ThreadInvoker:
    """Calls any other handler as Lambda does, synchronously, on a thread with an event loop of its own
    (so a handler may use ``asyncio.get_event_loop().run_until_complete`` or ``asyncio.run``)."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._executor = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="invocation",
            initializer=lambda: asyncio.set_event_loop(_new_event_loop()),
        )

    async def __call__(self, event: dict[str, Any], context: LambdaContext) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._handler, event, context)


Invoker = Callable[[dict[str, Any], LambdaContext], Awaitable[Any]]


async def _invoke(invoker: Invoker, request: dict[str, Any], function: dict[str, Any]) -> dict[str, Any]:
    context_fields = request.get("context") or {}
    context = LambdaContext(
        aws_request_id=str(context_fields.get("aws_request_id", "")),
        function_name=function["name"],
        memory_limit_in_mb=function["memory_mb"],
        invoked_function_arn=function["arn"],
        deadline_epoch_ms=int(context_fields.get("deadline_epoch_ms") or 0),
    )
    try:
        return {"result": await invoker(request.get("event") or {}, context)}
    except Exception as exc:
        # Lambda reports an unhandled exception as errorType/errorMessage and logs the traceback.
        traceback.print_exc(file=sys.stderr)
        return {"error": {"errorType": type(exc).__name__, "errorMessage": str(exc)}}


async def serve(sock: socket.socket, invoker: Invoker, function: dict[str, Any]) -> int:
    """Answer invocations one at a time until the gateway closes the socket."""
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    writer.write(encode_frame({"ready": True, "pid": os.getpid()}))
    while True:
        try:
            request = await read_frame(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            return 0
        reply = await _invoke(invoker, request, function)
        try:
            frame = encode_frame(reply)
        except (TypeError, ValueError, FrameError) as exc:
            frame = encode_frame(
                {
                    "error": {
                        "errorType": "Runtime.MarshalError",
                        "errorMessage": f"the handler's result is not JSON: {exc}",
                    }
                }
            )
        writer.write(frame)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gateway.function_host", description=__doc__)
    parser.add_argument("handler", help="module:attr (or SAM's module.attr) of the Lambda handler")
    parser.add_argument("--fd", type=int, required=True, help="this instance's end of the socket pair")
    parser.add_argument("--code-dir", default=None, help="the function's CodeUri, put first on sys.path")
    parser.add_argument("--function-name", default="function")
    parser.add_argument("--memory-mb", type=int, default=128)
    parser.add_argument("--arn", default="arn:aws:lambda:us-east-1:000000000000:function:function")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    # Ctrl+C reaches the whole process group; the gateway, not the terminal, decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=args.fd)
    # One loop for the instance's whole life, set before the handler's module is imported (Mangum and
    # the clients cached per loop find it there), and running for as long as the instance lives.
    loop = _new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        handler = load_handler(args.handler, args.code_dir)
        invoker: Invoker = MangumInvoker(handler) if MangumInvoker.applies_to(handler) else ThreadInvoker(handler)
    except BaseException as exc:
        traceback.print_exc(file=sys.stderr)
        send_frame(sock, {"ready": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    function = {"name": args.function_name, "memory_mb": args.memory_mb, "arn": args.arn}
    try:
        return loop.run_until_complete(serve(sock, invoker, function))
    except (ConnectionError, FrameError):
        return 0
    finally:
        sock.close()


if __name__ == "__main__":
    sys.exit(main())

"""The function host's pieces: handler loading, the Lambda context, and frames."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gateway.framing import HEADER, decode_payload, encode_frame
from gateway.function_host import LambdaContext, MangumInvoker, load_handler
from shared.http_app import create_app, lambda_handler

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "gateway"


@pytest.mark.parametrize("spec", ["gateway_probe:echo", "gateway_probe.echo"])
def test_handlers_load_from_the_code_dir_in_either_spelling(spec: str) -> None:
    handler = load_handler(spec, str(FIXTURES))
    assert handler.__name__ == "echo"


@pytest.mark.parametrize("spec", ["nothing", "gateway_probe:missing", "gateway_probe:__doc__"])
def test_a_handler_that_is_not_there_fails_the_cold_start(spec: str) -> None:
    with pytest.raises((ValueError, AttributeError, TypeError)):
        load_handler(spec, str(FIXTURES))


def test_the_context_counts_down_to_the_deadline() -> None:
    context = LambdaContext(
        aws_request_id="r",
        function_name="AuthFunction",
        memory_limit_in_mb=512,
        invoked_function_arn="arn:aws:lambda:us-east-1:0:function:AuthFunction",
        deadline_epoch_ms=int(time.time() * 1000) + 3000,
    )
    assert 2500 < context.get_remaining_time_in_millis() <= 3000
    assert context.log_group_name == "/aws/lambda/AuthFunction"
    expired = LambdaContext(
        aws_request_id="r", function_name="f", memory_limit_in_mb=1, invoked_function_arn="a", deadline_epoch_ms=0
    )
    assert expired.get_remaining_time_in_millis() == 0


def test_only_lifespan_off_mangum_handlers_take_the_fast_path() -> None:
    app = create_app("probe", [])
    assert MangumInvoker.applies_to(lambda_handler(app))
    assert not MangumInvoker.applies_to(load_handler("gateway_probe:echo", str(FIXTURES)))


def test_a_frame_is_a_length_prefix_and_json() -> None:
    frame = encode_frame({"a": "\u00e9"})
    (length,) = HEADER.unpack(frame[: HEADER.size])
    assert length == len(frame) - HEADER.size
    assert decode_payload(frame[HEADER.size :]) == {"a": "\u00e9"}

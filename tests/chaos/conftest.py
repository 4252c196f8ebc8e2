"""The chaos suite's table, printed at the end of the run whether its assertions passed or not."""

from __future__ import annotations

from typing import Any

from tests.chaos.outcomes import RESULTS, render_table


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if RESULTS:
        terminalreporter.section("chaos: one component at a time, under traffic")
        terminalreporter.write_line(render_table(RESULTS))

"""docs/cli.md is generated from `berth`'s parser: it must match it, and so must the completion script."""

from __future__ import annotations

import subprocess

from cli.main import build_parser
from cli.user.reference import bash_completion, markdown_reference, walk
from cli.user.session import EXIT_CODE_TABLE, ExitCode
from shared.config import PROJECT_ROOT

REFERENCE = PROJECT_ROOT / "docs" / "cli.md"


def test_docs_cli_md_is_up_to_date() -> None:
    expected = markdown_reference(build_parser())

    assert REFERENCE.read_text() == expected, "docs/cli.md is stale: run `.venv/bin/berth docs`"


def test_every_user_command_and_the_exit_codes_are_documented() -> None:
    text = REFERENCE.read_text()
    for words in (
        "login",
        "logout",
        "whoami",
        "images push",
        "images ls",
        "images rm",
        "images show",
        "containers run",
        "containers ls",
        "containers logs",
        "containers stats",
        "containers stop",
        "containers start",
        "containers rm",
        "listeners create",
        "listeners ls",
        "listeners rm",
        "tokens create",
        "tokens ls",
        "tokens revoke",
        "push",
        "admin grant",
        "completion",
        "docs",
    ):
        assert f"### `berth {words}`" in text or f"## `berth {words}`" in text or f"#### `berth {words}`" in text, words
    codes = {code for code, _ in EXIT_CODE_TABLE}
    assert codes == {v for k, v in vars(ExitCode).items() if k.isupper()}
    for code, meaning in EXIT_CODE_TABLE:
        assert f"| {code} | {meaning} |" in text


def test_listings_take_json() -> None:
    for path, parser, _ in walk(build_parser()):
        if path[-1] in ("ls", "show", "whoami", "run", "create", "stats"):
            options = {option for action in parser._actions for option in action.option_strings}
            assert "--json" in options, path


def test_bash_completion_is_valid_bash_and_knows_the_commands() -> None:
    script = bash_completion(build_parser())

    checked = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert checked.returncode == 0, checked.stderr
    assert '"containers") words="run ls logs stats stop start restart rm' in script
    assert "complete -o default -F _berth berth" in script

"""Run the `metering` command in-process, as the tests of each command do."""

from __future__ import annotations

import pytest

from metering.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Exit status, standard output and standard error of ``metering ARGS...``."""
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err

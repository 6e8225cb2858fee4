"""Run the FinOps Foundation's focus-validator (FOCUS 1.2) on FOCUS exports and fail on any failure.

    python .ci/focus_validate.py --validator-python VENV/bin/python FILE.csv FILE.parquet

The validator lives in its own Python >= 3.12 venv (CI makes it with pyenv's Python). It reads its
currency list from a path relative to its working directory, so it runs from its site-packages.
Its exit code is 0 even with failures, so the summary line is read instead.

One rule is excused, and only while its parent holds: focus-validator 2.2.1 counts both leaves of
InvoiceId's nullability OR (InvoiceId-C-003-C = C-004-C "must be null" OR C-005-C "must not be
null", both unconditional), so every dataset fails one of them. InvoiceId-C-003-C must pass.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

VERSION = "1.2"
# The applicability criteria this data supports (docs/focus.md says why each one).
CRITERIA = (
    "ACCOUNT_NAMING_SUPPORTED", "BILLING_BASED_ON_PROVISIONED_RESOURCES_SUPPORTED", "NEGOTIATED_PRICING_SUPPORTED",
    "PUBLIC_PRICE_LIST_SUPPORTED", "REGION_SUPPORTED", "RESOURCE_TYPE_ASSIGNMENT_SUPPORTED", "SUB_ACCOUNT_SUPPORTED",
    "TAGGING_SUPPORTED", "UNIT_PRICING_SUPPORTED", "USAGE_MEASUREMENT_SUPPORTED",
)
# rule id → the rule that must pass for the excuse to hold
VALIDATOR_BUGS = {"InvoiceId-C-004-C": "InvoiceId-C-003-C"}


def site_packages(python: str) -> str:
    code = "import focus_validator, os; print(os.path.dirname(os.path.dirname(focus_validator.__file__)))"
    return subprocess.run([python, "-c", code], check=True, capture_output=True, text=True, timeout=60).stdout.strip()


def validate(python: str, path: str, timeout: int = 300) -> tuple[list[str], str]:
    """(the failures that count, the validator's output) of one file."""
    python, path = os.path.abspath(python), os.path.abspath(path)  # it runs from its site-packages
    command = [python, "-c", "import sys; from focus_validator.main import main; sys.argv[0] = 'focus-validator'; main()",
               "--data-file", path, "--validate-version", VERSION, "--block-download",
               "--applicability-criteria", ",".join(CRITERIA)]
    done = subprocess.run(command, cwd=site_packages(python), capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    summary = re.search(r"Total: (\d+) \| Pass: (\d+) \| Fail: (\d+)", output)
    if done.returncode != 0 or summary is None:
        return [f"the validator did not finish (exit {done.returncode})"], output
    failed = re.findall(r"^\S+ (\S+): FAIL", output, re.MULTILINE)
    passed = set(re.findall(r"^\S+ (\S+): PASS", output, re.MULTILINE))
    if len(failed) != int(summary.group(3)):
        return [f"could not read the failures ({len(failed)} listed, {summary.group(3)} counted)"], output
    return [rule for rule in failed if VALIDATOR_BUGS.get(rule) not in passed], output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--validator-python", required=True, help="the python of the venv with focus-validator")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    bad = 0
    for path in args.files:
        failures, output = validate(args.validator_python, path)
        summary = re.search(r"Total: .*", output)
        print(f"focus-validator {VERSION} {path}: {summary.group(0) if summary else '(no summary)'}; "
              f"{len(failures)} failure(s) that count" + (f": {', '.join(failures)}" if failures else ""))
        if failures:
            bad += 1
            sys.stdout.write(output[-20000:])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

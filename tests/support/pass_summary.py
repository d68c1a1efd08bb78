"""One pass of the suite in a line, for `make test`'s report, from the JUnit XML the pass wrote:
how many tests passed, failed, errored and were skipped. A bare "passed" would hide a pass that
skipped everything (the PostgreSQL pass, where no PostgreSQL answers).

    python tests/support/pass_summary.py test-results/pytest-sqlite.xml
"""

from __future__ import annotations

import sys
from xml.etree import ElementTree


def summary(path: str) -> str:
    try:
        root = ElementTree.parse(path).getroot()  # our own pytest's report
    except (OSError, ElementTree.ParseError):
        return "no results: pytest stopped before running tests (see its output above)"
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return f"no results in {path}"
    counts = {
        name: int(suite.get(name, "0")) for name in ("tests", "failures", "errors", "skipped")
    }
    parts = [
        f"{counts['tests'] - counts['failures'] - counts['errors'] - counts['skipped']} passed"
    ]
    for name, label in (("failures", "failed"), ("errors", "errors"), ("skipped", "skipped")):
        if counts[name]:
            parts.append(f"{counts[name]} {label}")
    return f"{', '.join(parts)} in {float(suite.get('time', '0')):.0f} s"


if __name__ == "__main__":
    print(summary(sys.argv[1]))

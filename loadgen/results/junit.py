"""JUnit XML for CI systems: one test case per SLO or comparison check, a failure element when it fails."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path


def write_junit(path: str | Path, suite: str, cases: Sequence[tuple[str, bool, str]]) -> None:
    """``cases``: (name, passed, message). Writes a <testsuites> document with one <testsuite>."""
    failures = sum(1 for _n, ok, _m in cases if not ok)
    root = ET.Element("testsuites", name="qdeck", tests=str(len(cases)), failures=str(failures))
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(cases)), failures=str(failures), errors="0")
    for name, ok, message in cases:
        tc = ET.SubElement(ts, "testcase", classname=suite, name=name)
        if ok:
            ET.SubElement(tc, "system-out").text = message
        else:
            ET.SubElement(tc, "failure", message=message, type="SLOViolation").text = message
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(p, encoding="utf-8", xml_declaration=True)

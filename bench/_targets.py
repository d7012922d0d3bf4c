"""Each bench's targets: checked as the figures come, and the exit status says whether every one was met.

A bench prints its figures, then ``Targets.done()`` prints one line per target and exits 1 if any was missed
(2 stays argparse's usage error), so ``make bench`` and CI stop on a missed target instead of printing it."""

from __future__ import annotations

import sys


class Targets:
    def __init__(self, bench: str) -> None:
        self.bench = bench
        self.results: list[tuple[str, bool]] = []

    def at_most(self, what: str, value: float, limit: float, fmt: str = ".2f") -> bool:
        return self._add(f"{what} = {value:{fmt}} (target <= {limit:{fmt}})", value <= limit)

    def at_least(self, what: str, value: float, floor: float, fmt: str = ".2f") -> bool:
        return self._add(f"{what} = {value:{fmt}} (target >= {floor:{fmt}})", value >= floor)

    def _add(self, line: str, met: bool) -> bool:
        self.results.append((line, met))
        return met

    def done(self) -> None:
        """Print the verdict of every target; exit with status 1 when any was missed."""
        missed = [line for line, met in self.results if not met]
        print(f"\n{self.bench}: targets")
        for line, met in self.results:
            print(f"  {'met   ' if met else 'MISSED'}  {line}")
        sys.stdout.flush()
        if missed:
            print(f"{self.bench}: {len(missed)} of {len(self.results)} targets missed", file=sys.stderr)
            raise SystemExit(1)
        print(f"{self.bench}: all {len(self.results)} targets met", flush=True)

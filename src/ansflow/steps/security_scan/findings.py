"""What the ``security_scan`` step reports: findings, severities and path filtering.

Shared by the built-in secrets scanner (``secret_scanner``), the report parsers
(``sarif``) and the step itself. Pure: no I/O.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from ansflow.spec.glob import Glob, compile_glob

Severity = Literal["critical", "high", "medium", "low"]
SEVERITIES: tuple[Severity, ...] = ("critical", "high", "medium", "low")
"""Most severe first."""
_RANK: dict[str, int] = {name: len(SEVERITIES) - i for i, name in enumerate(SEVERITIES)}

SARIF_LEVELS: dict[str, Severity] = {"error": "high", "warning": "medium", "note": "low",
                                     "none": "low"}
EXCERPT_CHARS = 200
MESSAGE_CHARS = 500


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem one scanner found. ``file`` is relative to the scan's working directory
    (absolute only when the file lies outside it); ``excerpt`` never holds a full secret."""

    scanner: str
    rule: str
    severity: Severity
    file: str | None
    line: int | None
    message: str
    excerpt: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def sort_key(self) -> tuple[int, str, int, str]:
        return (-_RANK[self.severity], self.file or "", self.line or 0, self.rule)


def rank(severity: str) -> int:
    """Higher is more severe; ``none`` (and anything unknown) ranks below ``low``."""
    return _RANK.get(severity, 0)


def at_or_above(severity: str, threshold: str) -> bool:
    """Whether ``severity`` reaches ``threshold``; the threshold ``none`` is never reached."""
    return threshold in _RANK and rank(severity) >= rank(threshold)


def from_cvss(score: float) -> Severity:
    """CVSS v3 qualitative rating (as GitHub reads SARIF ``security-severity``)."""
    if score >= 9.0:
        return "critical"
    if score >= 7.0:
        return "high"
    if score >= 4.0:
        return "medium"
    return "low"


def count(findings: Iterable[Finding]) -> dict[str, int]:
    counts: dict[str, int] = dict.fromkeys(SEVERITIES, 0)
    for finding in findings:
        counts[finding.severity] += 1
    return counts


def describe_counts(counts: dict[str, int], threshold: str | None = None) -> str:
    """``critical: 1, high: 2``: the non-zero counts, only those at or above ``threshold``."""
    parts = [f"{name}: {counts[name]}" for name in SEVERITIES
             if counts.get(name) and (threshold is None or at_or_above(name, threshold))]
    return ", ".join(parts)


def threshold_message(counts: dict[str, int], fail_on: str) -> str | None:
    """The failure message when any finding is at or above ``fail_on``, else ``None``."""
    over = sum(n for name, n in counts.items() if at_or_above(name, fail_on))
    if not over:
        return None
    noun = "finding" if over == 1 else "findings"
    return f"{over} {noun} at or above {fail_on!r} ({describe_counts(counts, fail_on)})"


def clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def relative_path(path: str, root: str) -> str:
    """``path`` as a POSIX path relative to ``root`` when it lies inside it."""
    normal = os.path.normpath(path if os.path.isabs(path) else os.path.join(root, path))
    base = os.path.normpath(root)
    if normal == base or normal.startswith(base.rstrip(os.sep) + os.sep):
        return os.path.relpath(normal, base).replace(os.sep, "/")
    return normal.replace(os.sep, "/")


class PathFilter:
    """``exclude`` globs, gitignore-like: a pattern without ``/`` matches any path
    component (``*.min.js``, ``fixtures``); a pattern with ``/`` is anchored at the scan
    root (``docs/**``, ``src/generated``). A matching directory excludes all below it."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self._anchored: list[Glob] = []
        self._component: list[Glob] = []
        for raw in patterns:
            pattern = raw.strip().removeprefix("./").strip("/")
            if not pattern:
                continue
            target = self._anchored if "/" in pattern else self._component
            target.append(compile_glob(pattern))

    def __bool__(self) -> bool:
        return bool(self._anchored or self._component)

    def excluded(self, relative: str) -> bool:
        parts = [p for p in relative.split("/") if p not in ("", ".")]
        if any(rx.fullmatch(part) for rx in self._component for part in parts):
            return True
        prefixes = ("/".join(parts[:i]) for i in range(1, len(parts) + 1))
        return any(rx.fullmatch(prefix) for prefix in prefixes for rx in self._anchored)

"""The built-in ``secrets`` scanner: regular expressions plus an entropy check, no tool.

``scan_tree`` is blocking (it walks and reads files); the step calls it through
``asyncio.to_thread``. A reported excerpt shows each secret's first four characters
followed by ``****``; the full secret never leaves this module.
"""

from __future__ import annotations

import bisect
import math
import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ansflow.steps.security_scan.findings import (
    EXCERPT_CHARS,
    Finding,
    PathFilter,
    Severity,
    relative_path,
)

SKIP_DIRS = frozenset({".git", ".hg", ".svn", "node_modules", "vendor", "third_party", ".venv",
                       "__pycache__"})
"""Directories never scanned: version control data and vendored or generated code."""
MAX_FILE_BYTES = 5 * 1024 * 1024
BINARY_PROBE_BYTES = 8 * 1024
MIN_GENERIC_ENTROPY = 3.5
"""Bits per character. Random alphanumerics score about 5, words and repeats below 3.5."""
SCANNER = "secrets"

_ASSIGN = r"""["']?\s*(?::=|=>|[:=])\s*"""


@dataclass(frozen=True, slots=True)
class SecretRule:
    id: str
    severity: Severity
    message: str
    pattern: re.Pattern[str]
    group: str | int = 0
    """The group holding the secret (the part masked in excerpts)."""
    min_entropy: float | None = None
    masked: bool = True
    """False for matches that are markers, not the secret (a private key's header)."""


RULES: tuple[SecretRule, ...] = (
    SecretRule("private_key", "critical", "private key",
               re.compile(r"-----BEGIN (?:(?:RSA|DSA|EC|OPENSSH|PGP|ENCRYPTED) )?PRIVATE KEY"
                          r"(?: BLOCK)?-----"), masked=False),
    SecretRule("aws_access_key_id", "critical", "AWS access key id",
               re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b")),
    SecretRule("aws_secret_access_key", "critical", "AWS secret access key",
               re.compile(r"(?i)aws_?secret_?(?:access_?)?key" + _ASSIGN
                          + r"""["']?(?P<secret>[A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"""),
               group="secret"),
    SecretRule("github_token", "high", "GitHub token",
               re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9]{22}_"
                          r"[A-Za-z0-9]{59})\b")),
    SecretRule("gitlab_token", "high", "GitLab personal access token",
               re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}")),
    SecretRule("slack_webhook", "high", "Slack incoming webhook URL",
               re.compile(r"https://hooks\.slack\.com/services/T[A-Za-z0-9_]+/B[A-Za-z0-9_]+"
                          r"/[A-Za-z0-9_]+")),
    SecretRule("slack_token", "high", "Slack token",
               re.compile(r"\bxox[baprs]-[A-Za-z0-9-]{10,}")),
    SecretRule("generic_secret", "medium", "high-entropy value assigned to a secret-like name",
               # the name's tail is bounded: unbounded, a line of repeated ``token`` costs
               # a scan to the line's end from each of its words (quadratic)
               re.compile(r"(?i)(?:passw(?:or)?d|pwd|secret|token|api[_-]?key|access[_-]?key|"
                          r"auth[_-]?key|credentials?)[a-z0-9_.-]{0,64}" + _ASSIGN
                          + r"""(?P<q>["'])(?P<secret>[^"'\s]{16,}+)(?P=q)"""),
               group="secret", min_entropy=MIN_GENERIC_ENTROPY),
)
"""Specific rules first: a span claimed by one is not reported again by a later rule."""


@dataclass(frozen=True, slots=True)
class SecretMatch:
    rule: SecretRule
    start: int
    end: int


@dataclass(slots=True)
class TreeScan:
    """The outcome of ``scan_tree``."""

    findings: list[Finding] = field(default_factory=list)
    files: int = 0
    skipped_binary: int = 0
    skipped_large: int = 0
    unreadable: list[str] = field(default_factory=list)


def shannon_entropy(text: str) -> float:
    """Bits per character of ``text``'s own character distribution."""
    if not text:
        return 0.0
    total = len(text)
    return -sum(n / total * math.log2(n / total) for n in Counter(text).values())


def find_secrets(line: str) -> list[SecretMatch]:
    """Every secret on one line, ordered by position, without overlaps. Linear in the
    line's length: every rule's pattern is, and claimed spans are found by bisection."""
    found: list[SecretMatch] = []
    starts: list[int] = []
    for rule in RULES:
        for match in rule.pattern.finditer(line):
            start, end = match.span(rule.group)
            if rule.min_entropy is not None and (
                    shannon_entropy(match.group(rule.group)) < rule.min_entropy):
                continue
            at = bisect.bisect_left(starts, start)
            if (at < len(found) and found[at].start < end) or (
                    at > 0 and found[at - 1].end > start):
                continue
            starts.insert(at, start)
            found.insert(at, SecretMatch(rule, start, end))
    return found


def _masked(line: str, matches: Sequence[SecretMatch]) -> tuple[str, list[int]]:
    """``line`` with every secret masked, and where each match starts in the result."""
    out: list[str] = []
    starts: list[int] = []
    pos = 0
    length = 0
    for match in matches:
        out.append(line[pos:match.start])
        length += match.start - pos
        starts.append(length)
        shown = line[match.start:match.end]
        if match.rule.masked:
            shown = shown[:4] + "****"
        out.append(shown)
        length += len(shown)
        pos = match.end
    out.append(line[pos:])
    return "".join(out), starts


def mask_secrets(text: str) -> str:
    """``text`` with every recognised secret cut to its first four characters + ``****``."""
    return "\n".join(_masked(line, find_secrets(line))[0] for line in text.split("\n"))


def _excerpt(masked: str, start: int) -> str:
    if len(masked) <= EXCERPT_CHARS:
        return masked.strip()
    begin = max(0, start - EXCERPT_CHARS // 3)
    return masked[begin:begin + EXCERPT_CHARS].strip()


def scan_text(text: str, relative: str) -> list[Finding]:
    """Findings in one file's text; ``relative`` is the path reported."""
    findings: list[Finding] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.removesuffix("\r")
        matches = find_secrets(line)
        if not matches:
            continue
        masked, starts = _masked(line, matches)
        for match, start in zip(matches, starts, strict=True):
            findings.append(Finding(SCANNER, match.rule.id, match.rule.severity, relative,
                                    number, f"possible {match.rule.message}",
                                    _excerpt(masked, start)))
    return findings


def _files(root: Path, targets: Sequence[Path], exclude: PathFilter) -> Iterator[Path]:
    seen: set[Path] = set()
    for target in targets:
        if target.is_file() and not target.is_symlink():
            if target not in seen:
                seen.add(target)
                yield target
            continue
        for current, dirs, names in os.walk(target):
            here = Path(current)
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS
                             and not (here / d).is_symlink()
                             and not exclude.excluded(relative_path(str(here / d), str(root))))
            for name in sorted(names):
                path = here / name
                if path in seen or path.is_symlink():
                    continue
                seen.add(path)
                if not exclude.excluded(relative_path(str(path), str(root))):
                    yield path


def _read_text(path: Path, scan: TreeScan, relative: str) -> str | None:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            scan.skipped_large += 1
            return None
        with path.open("rb") as handle:
            head = handle.read(BINARY_PROBE_BYTES)
            if b"\x00" in head:
                scan.skipped_binary += 1
                return None
            data = head + handle.read()
    except OSError as exc:
        scan.unreadable.append(f"{relative}: {exc.strerror or exc}")
        return None
    return data.decode("utf-8", errors="replace")


def scan_tree(root: Path, targets: Sequence[Path], exclude: PathFilter) -> TreeScan:
    """Scan the files under ``targets`` (directories or files inside ``root``).

    Skips ``SKIP_DIRS``, symbolic links, binary files (a NUL byte in the first 8 KiB),
    files over 5 MB and paths matching ``exclude`` (relative to ``root``).
    """
    scan = TreeScan()
    for path in _files(root, targets, exclude):
        relative = relative_path(str(path), str(root))
        text = _read_text(path, scan, relative)
        if text is None:
            continue
        scan.files += 1
        scan.findings.extend(scan_text(text, relative))
    return scan

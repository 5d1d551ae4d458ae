"""Replace secret values in text before it is stored or shown.

Besides the value itself, the common encodings a step may print are masked too: base64
(also shifted by one and two bytes, so a secret inside a longer base64 blob is found),
URL encoding (upper- or lower-case hex), JSON/shell escaping, and each line of a
multi-line secret. Keys of outputs are masked like values; a line cut at the long-line
limit is masked across the cut (``split``). Values of three
characters or fewer are not masked (they would mask half the log). Masking is a safety
net, not a guarantee: a step that transforms a secret in other ways can still leak it.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_LENGTH = 4


def _base64_variants(value: bytes) -> set[str]:
    """Substrings of the base64 of ``value`` at offsets 0, 1 and 2 that do not depend on
    the surrounding bytes (GitHub's approach)."""
    variants = set()
    for shift in range(3):
        encoded = base64.b64encode(b"\x00" * shift + value).decode()
        start = (shift * 4 + 2) // 3  # chars touched by the padding bytes
        end = len(encoded) - (4 if (shift + len(value)) % 3 else 0)
        stable = encoded[start:end].rstrip("=")
        if len(stable) >= 8:
            variants.add(stable)
    return variants


def variants(secret: str) -> set[str]:
    found = {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]}
    found |= _base64_variants(secret.encode())
    found |= {line.strip() for line in secret.splitlines()}
    return {v for v in found if len(v) >= MIN_LENGTH}


_PERCENT = re.compile(r"%([0-9A-F])([0-9A-F])")


def _fragment(variant: str) -> str:
    """The regex of one variant; percent-escapes match in either case (``%2f``, ``%2F``)."""
    def either_case(match: re.Match[str]) -> str:
        return "%" + "".join(d if d.isdigit() else f"[{d}{d.lower()}]" for d in match.groups())

    return _PERCENT.sub(either_case, re.escape(variant))


class Masker:
    """Callable that masks every known secret in a string. Cheap when there are none."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        every = set().union(*(variants(s) for s in secrets if len(s) >= MIN_LENGTH))
        ordered = sorted(every, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(_fragment, ordered))) if ordered else None
        self.longest = len(ordered[0]) if ordered else 0
        """Characters in the longest text masked: a match never spans more."""

    def __bool__(self) -> bool:
        return self._pattern is not None

    def __call__(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)

    def split(self, text: str) -> tuple[str, str]:
        """Mask the part of ``text`` that more text appended to it cannot change, and
        return it with the rest, to be put before that text (a line cut in pieces)."""
        if self._pattern is None:
            return text, ""
        # a match starting before ``safe`` ends within ``text``: it is final
        safe = max(len(text) - self.longest + 1, 0)
        out: list[str] = []
        done = 0
        for match in self._pattern.finditer(text):
            if match.start() >= safe:
                break
            out += [text[done:match.start()], MASK]
            done = match.end()
        cut = max(done, safe)
        out.append(text[done:cut])
        return "".join(out), text[cut:]

    def value(self, data: Any) -> Any:
        """Mask every string inside nested dicts and lists, keys included."""
        if self._pattern is None:
            return data
        if isinstance(data, str):
            return self(data)
        if isinstance(data, dict):
            return {self.value(k): self.value(v) for k, v in data.items()}
        if isinstance(data, list):
            return [self.value(v) for v in data]
        return data

"""What the masker covers beyond the plain value (PRODUCT.md section 8, "Masking")."""

from __future__ import annotations

from urllib.parse import quote

from hypothesis import given, settings
from hypothesis import strategies as st

from ansflow.trust.masking import MASK, Masker

SECRET = "p@ss/w0rd:Sup3r?"


def test_percent_encoding_is_masked_in_either_case() -> None:
    upper = quote(SECRET, safe="")
    assert upper == "p%40ss%2Fw0rd%3ASup3r%3F"
    lower = "p%40ss%2fw0rd%3aSup3r%3f"
    mixed = "p%40ss%2Fw0rd%3aSup3r%3F"
    masker = Masker([SECRET])
    for encoded in (upper, lower, mixed):
        assert masker(f"url=https://x/?q={encoded}&y") == f"url=https://x/?q={MASK}&y"
    # only the hex digits' case is free: the secret's own letters are not
    assert masker(lower.replace("Sup3r", "sup3r")) == lower.replace("Sup3r", "sup3r")


def test_keys_are_masked_like_values() -> None:
    masker = Masker([SECRET])
    masked = masker.value({SECRET: "v", "k": {f"x-{SECRET}": [SECRET]}})
    assert masked == {MASK: "v", "k": {f"x-{MASK}": [MASK]}}


@settings(max_examples=400, deadline=None)
@given(prefix=st.text("ab/%", max_size=40), suffix=st.text("ab/%", max_size=40),
       cut=st.integers(0, 200), secret=st.sampled_from([SECRET, "abab", "a/b%2Fab"]))
def test_split_masks_across_any_cut(prefix: str, suffix: str, cut: int, secret: str) -> None:
    """What ``split`` returns at once, followed by the masked rest once the rest of the
    text arrived, is exactly the masked whole: a cut never lets a secret through."""
    masker = Masker([secret])
    whole = prefix + secret + suffix + quote(secret, safe="").lower() + prefix
    cut = min(cut, len(whole))
    head, carry = masker.split(whole[:cut])
    assert head + masker(carry + whole[cut:]) == masker(whole)
    assert len(carry) < masker.longest

"""Signature checks with real HMACs: GitHub's documented vector, each provider's scheme,
and nothing but ``Unauthorized("invalid signature")`` for anything else."""

from __future__ import annotations

import urllib.parse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansflow.errors import NotFound, Unauthorized
from ansflow.triggers.webhooks.inbound import PROVIDERS, delivery_id, verify
from tests.triggers.webhooks.samples import (
    NOW,
    SAMPLES,
    SECRET,
    body,
    gitee_token,
    hex_hmac,
    signed,
)

GITHUB_VECTOR = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def rejected(provider: str, headers: dict[str, str], data: bytes, secret: str = SECRET,
             now: float = NOW) -> None:
    with pytest.raises(Unauthorized) as caught:
        verify(provider, headers, data, secret, now)
    assert caught.value.message == "invalid signature"
    assert caught.value.status_code == 401


def test_github_documented_test_vector() -> None:
    verify("github", {"X-Hub-Signature-256": GITHUB_VECTOR}, b"Hello, World!",
           "It's a Secret to Everybody", NOW)
    assert "sha256=" + hex_hmac("It's a Secret to Everybody", b"Hello, World!") == GITHUB_VECTOR


@pytest.mark.parametrize("name", ["X-Hub-Signature-256", "x-hub-signature-256",
                                  "X-HUB-SIGNATURE-256"])
def test_header_names_are_case_insensitive(name: str) -> None:
    verify("github", {name: GITHUB_VECTOR}, b"Hello, World!", "It's a Secret to Everybody", NOW)


@pytest.mark.parametrize("headers", [
    {},
    {"X-Hub-Signature-256": ""},
    {"X-Hub-Signature-256": GITHUB_VECTOR.removeprefix("sha256=")},
    {"X-Hub-Signature-256": GITHUB_VECTOR.replace("sha256=", "sha1=")},
    {"X-Hub-Signature-256": GITHUB_VECTOR[:-1] + "f"},
    {"X-Hub-Signature-256": GITHUB_VECTOR[:-2]},
    {"X-Hub-Signature": "sha1=" + "0" * 40},
    {"X-Hub-Signature-256": "sha256=é" + GITHUB_VECTOR[8:]},
])
def test_github_wrong_or_missing_signature(headers: dict[str, str]) -> None:
    rejected("github", headers, b"Hello, World!", "It's a Secret to Everybody")


def test_github_signature_covers_every_byte_of_the_body() -> None:
    headers = {"X-Hub-Signature-256": GITHUB_VECTOR}
    rejected("github", headers, b"Hello, World! ", "It's a Secret to Everybody")
    rejected("github", headers, b"Hello, World!", "It's a Secret to everybody")


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_each_recorded_sample_verifies_with_its_providers_signature(name: str) -> None:
    provider, _ = SAMPLES[name]
    data = body(name)
    verify(provider, signed(provider, data), data, SECRET, NOW)
    rejected(provider, signed(provider, data, secret="another secret"), data)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_empty_secret_authenticates_nothing(provider: str) -> None:
    data = body("generic")
    rejected(provider, signed(provider, data, secret=""), data, secret="")


def test_gitlab_token_is_compared_whole() -> None:
    data = body("gitlab_push")
    verify("gitlab", {"X-Gitlab-Token": SECRET}, data, SECRET, NOW)
    for token in ("", SECRET[:-1], SECRET + " x", SECRET.upper()):
        rejected("gitlab", {"X-Gitlab-Token": token}, data)
    rejected("gitlab", {}, data)


def test_generic_uses_its_own_header_name() -> None:
    data = body("generic")
    good = "sha256=" + hex_hmac(SECRET, data)
    verify("generic", {"X-AnsFlow-Signature-256": good}, data, SECRET, NOW)
    rejected("generic", {"X-Hub-Signature-256": good}, data)
    rejected("github", {"X-AnsFlow-Signature-256": good}, data)


def gitee_headers(stamp_ms: int, token: str | None = None) -> dict[str, str]:
    return {"X-Gitee-Timestamp": str(stamp_ms),
            "X-Gitee-Token": gitee_token(stamp_ms, SECRET) if token is None else token}


@pytest.mark.parametrize("skew", [0.0, -3599.0, 3599.0, -3600.0])
def test_gitee_accepts_timestamps_within_an_hour(skew: float) -> None:
    stamp = int((NOW + skew) * 1000)
    verify("gitee", gitee_headers(stamp), b"{}", SECRET, NOW)


@pytest.mark.parametrize("skew", [-3601.0, 3601.0, -86400.0 * 365])
def test_gitee_rejects_stale_and_future_timestamps(skew: float) -> None:
    rejected("gitee", gitee_headers(int((NOW + skew) * 1000)), b"{}")


def test_gitee_accepts_the_url_encoded_signature_gitee_documents() -> None:
    stamp = int(NOW * 1000)
    token = gitee_token(stamp, SECRET)
    encoded = urllib.parse.quote(token, safe="")
    assert encoded != token  # base64 of 32 bytes ends in '='
    verify("gitee", gitee_headers(stamp, encoded), b"{}", SECRET, NOW)


@pytest.mark.parametrize("headers", [
    {},
    {"X-Gitee-Token": gitee_token(int(NOW * 1000), SECRET)},
    {"X-Gitee-Timestamp": str(int(NOW * 1000))},
    {"X-Gitee-Timestamp": "", "X-Gitee-Token": gitee_token(int(NOW * 1000), SECRET)},
    {"X-Gitee-Timestamp": "1716220006500.0", "X-Gitee-Token": "x"},
    {"X-Gitee-Timestamp": "١٧١٦٢٢٠٠٠٦٥٠٠", "X-Gitee-Token": "x"},
    {"X-Gitee-Timestamp": "9" * 40, "X-Gitee-Token": "x"},
    {"X-Gitee-Timestamp": str(int(NOW * 1000)), "X-Gitee-Token": SECRET},
    {"X-Gitee-Timestamp": str(int(NOW * 1000) + 1),
     "X-Gitee-Token": gitee_token(int(NOW * 1000), SECRET)},
])
def test_gitee_rejects_missing_malformed_or_plain_password_tokens(
        headers: dict[str, str]) -> None:
    rejected("gitee", headers, b"{}")


def test_gitee_signature_does_not_cover_the_body_so_the_delivery_id_comes_from_it() -> None:
    """A captured Gitee signature verifies with any body (PITFALLS 9); the delivery id
    is the same for both, so the replay counts as the delivery already seen."""
    original, forged = body("gitee_push"), body("gitee_pull_request")
    headers = signed("gitee", original, {"X-Gitee-Event": "Push Hook"})
    verify("gitee", headers, original, SECRET, NOW)
    verify("gitee", headers, forged, SECRET, NOW)
    chosen = dict(headers, **{"X-Gitee-Delivery": "something-new", "Idempotency-Key": "new"})
    assert delivery_id("gitee", headers, original) == delivery_id("gitee", chosen, forged)
    # the same signature spelled URL-encoded is the same delivery
    encoded = dict(headers, **{"X-Gitee-Token": urllib.parse.quote(headers["X-Gitee-Token"],
                                                                   safe="")})
    assert encoded["X-Gitee-Token"] != headers["X-Gitee-Token"]
    verify("gitee", encoded, forged, SECRET, NOW)
    assert delivery_id("gitee", encoded, forged) == delivery_id("gitee", headers, original)
    later = signed("gitee", original, now=NOW + 1)
    assert delivery_id("gitee", later, original) != delivery_id("gitee", headers, original)


def test_unknown_provider_is_not_found() -> None:
    with pytest.raises(NotFound):
        verify("bitbucket", {}, b"", SECRET, NOW)


any_text = st.characters(exclude_categories=())  # lone surrogates too
header_text = st.text(any_text, max_size=80)
header_maps = st.dictionaries(
    st.sampled_from(["X-Hub-Signature-256", "X-Gitlab-Token", "X-Gitee-Token",
                     "X-Gitee-Timestamp", "X-AnsFlow-Signature-256", "x-hub-signature-256"])
    | st.text(any_text, max_size=20), header_text, max_size=6)


@settings(max_examples=400, deadline=None)
@given(provider=st.sampled_from(PROVIDERS), headers=header_maps, data=st.binary(max_size=256),
       secret=st.text(any_text, max_size=40), now=st.floats(allow_nan=False, allow_infinity=False,
                                                  min_value=0, max_value=4e9))
def test_arbitrary_requests_raise_nothing_but_unauthorized(
        provider: str, headers: dict[str, str], data: bytes, secret: str, now: float) -> None:
    try:
        verify(provider, headers, data, secret, now)
    except Unauthorized as exc:
        assert exc.message == "invalid signature"


@settings(max_examples=200, deadline=None)
@given(provider=st.sampled_from(PROVIDERS), data=st.binary(max_size=512),
       secret=st.text(min_size=1, max_size=64),
       now=st.floats(min_value=1e9, max_value=4e9, allow_nan=False))
def test_any_body_signed_with_any_secret_verifies(provider: str, data: bytes, secret: str,
                                                   now: float) -> None:
    verify(provider, signed(provider, data, secret=secret, now=now), data, secret, now)

"""Hypothesis profiles for parity runs: `dev` (quick, the default), `ci`
(more examples, derandomized so that reruns agree), `nightly` (many examples).
Select one with `--hypothesis-profile=NAME` or HYPOTHESIS_PROFILE."""

from __future__ import annotations

PROFILES = {
    "dev": dict(max_examples=10),
    "ci": dict(max_examples=25, derandomize=True, print_blob=True),
    "nightly": dict(max_examples=200),
}


def register_profiles() -> None:
    from hypothesis import HealthCheck, settings

    for name, values in PROFILES.items():
        settings.register_profile(name, deadline=None,
                                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                                  **values)

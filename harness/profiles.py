"""Hypothesis profiles for parity runs: `dev` (quick, the default), `ci`
(more examples, derandomized so that reruns agree), `nightly` (many examples).
Select one with `--hypothesis-profile=NAME` or HYPOTHESIS_PROFILE.

The plugin registers them and, where nobody chose a profile (no option, no
HYPOTHESIS_PROFILE, no conftest that loaded one), loads `dev` (`ci` where the
CI environment variable is set): a user's project gets the harness's budget,
not hypothesis' own default of 100 examples per case. Every case runs its
corner examples first (`inputs.corner_recipes`), which is what lets `dev`'s 10
catch every planted bug of the harness's tests (docs/reference/benchmarks.md, "Corners first").
"""

from __future__ import annotations

import os

PROFILES = {
    "dev": dict(max_examples=10),
    "ci": dict(max_examples=25, derandomize=True, print_blob=True),
    "nightly": dict(max_examples=200),
}


def register_profiles() -> None:
    from hypothesis import HealthCheck, settings

    # Each from hypothesis' own default, never from whatever profile is loaded now (register_profile's
    # parent where none is given): registered while a profile without shrinking was loaded, `ci` kept
    # no shrink phase for the rest of the process.
    for name, values in PROFILES.items():
        settings.register_profile(name, settings.get_profile("default"), deadline=None,
                                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                                  **values)


def default_profile() -> str:
    """HYPOTHESIS_PROFILE if set, else `ci` under CI, else `dev`."""
    return os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")


def load_default_profile() -> None:
    """Register the profiles and load the default one, unless a profile other
    than hypothesis' own default is already loaded (a conftest chose)."""
    from hypothesis import settings

    register_profiles()
    current = settings.get_current_profile_name() if hasattr(settings, "get_current_profile_name") \
        else getattr(settings, "_current_profile", "default")
    if current in (None, "default"):
        settings.load_profile(default_profile())

"""Repo-local pytest settings: the hypothesis profiles for the harness's own
tests, as the plugin loads them for parity runs (`dev`, `ci` when CI is set;
choose with `--hypothesis-profile=dev|ci|nightly` or HYPOTHESIS_PROFILE)."""

from harness.profiles import load_default_profile

load_default_profile()

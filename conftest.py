"""Repo-local pytest settings: the hypothesis profiles for parity runs.

`dev` is the default, `ci` is used when CI is set; choose explicitly with
`--hypothesis-profile=dev|ci|nightly` (or HYPOTHESIS_PROFILE).
"""

import os

from hypothesis import settings

from harness.profiles import register_profiles

register_profiles()
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))

"""Localization of a failed case: the first tensor where the converted model
leaves the reference, the error's growth from there to the failing output,
and a minimal reproduction to attach to the converter's or runtime's tracker.
Knows nothing of pytest."""

"""Headless Chromium for the browser tests (the report, the docs site)."""

import os
import shutil

import pytest


def chromium() -> str:
    """Path of Debian's chromium with the playwright package present; skips the test without
    them, fails it when JAXINTERP_BROWSER_TESTS is set (CI installs both)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import playwright.sync_api  # noqa: F401 — present?
    except ImportError:
        path = None
    if path is None and os.environ.get("JAXINTERP_BROWSER_TESTS"):
        pytest.fail("JAXINTERP_BROWSER_TESTS is set but chromium or playwright is missing")
    if path is None:
        pytest.skip("needs Debian's chromium and the playwright package (.ci/run installs them)")
    return path

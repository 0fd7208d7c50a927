"""The documentation site (mkdocs.yml, docs/site/, scripts/docs_hooks.py).

Cheap checks in the default run: every public name has an API-reference entry and a docstring,
and the generated command-line page covers every subcommand. The browser check (marked slow)
builds the site (or takes an already built one from JAXINTERP_SITE_DIR), serves it on localhost
and loads every page in headless Chromium: no console errors, every image loaded, search works.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import inspect
import os
import pathlib
import re
import subprocess
import sys
import threading

import pytest
from browser import chromium

import jaxinterp as ji

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = ROOT / "docs" / "site"


def _api_entries() -> set[str]:
    """Dotted paths with a mkdocstrings entry `::: jaxinterp.<path>` in the docs sources."""
    paths = set()
    for page in PAGES.rglob("*.md"):
        paths |= set(re.findall(r"^:::\s+jaxinterp\.([A-Za-z_][\w.]*)\s*$", page.read_text(),
                                re.M))
    return paths


def _resolve(path: str):
    """The object at `jaxinterp.<path>`: the longest importable module prefix, then attributes.
    (`ji.cam` is the function, but the static analysis behind mkdocstrings sees the module
    `jaxinterp.attribution.cam` under that name, so such entries use the defining path,
    `jaxinterp.attribution.cam.cam`.)"""
    parts = ["jaxinterp", *path.split(".")]
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for part in parts[i:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(path)


def test_every_public_name_has_an_api_entry():
    documented = {id(_resolve(p)) for p in _api_entries()}
    missing = [n for n in ji.__all__ if id(getattr(ji, n)) not in documented]
    assert not missing, (f"names of jaxinterp.__all__ without a `::: jaxinterp.NAME` entry "
                         f"in docs/site/: {missing}")


def test_api_entries_resolve():
    for path in _api_entries():
        _resolve(path)  # raises for a name that does not exist


def _own_doc(obj) -> str:
    if inspect.isclass(obj):
        doc = obj.__dict__.get("__doc__") or ""
        # NamedTuple and dataclass fill in "Name(field, ...)" when the class has no docstring
        return "" if doc.startswith(f"{obj.__name__}(") else doc
    return getattr(obj, "__doc__", None) or ""


def test_every_public_name_has_a_docstring():
    missing = [n for n in ji.__all__ if not _own_doc(getattr(ji, n)).strip()]
    assert not missing, f"public names without a docstring: {missing}"


def _doc_blocks():
    spec = importlib.util.spec_from_file_location("run_doc_blocks",
                                                  ROOT / "scripts" / "run_doc_blocks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_runnable_blocks_are_found_and_parse(tmp_path):
    # CI's docs step runs them (scripts/run_doc_blocks.py); here: found, valid Python, and a
    # mark without its fence is an error, not a silently skipped block
    import ast

    mod = _doc_blocks()
    found = {p.relative_to(ROOT).as_posix(): mod.blocks(p) for p in mod.pages([])}
    found = {k: v for k, v in found.items() if v}
    assert {"docs/site/metrics.md", "docs/site/transformers.md", "docs/site/own-model.md",
            "README.md"} <= set(found)
    for page, blocks in found.items():
        for line, code in blocks:
            ast.parse(code, f"{page}:{line}")
    bad = tmp_path / "bad.md"
    bad.write_text("text\n<!-- runnable -->\nnot a fence\n")
    with pytest.raises(ValueError, match="must be followed"):
        mod.blocks(bad)


def test_cli_reference_covers_every_subcommand():
    pytest.importorskip("mkdocs")
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import docs_hooks
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    import argparse

    from jaxinterp import cli

    page = docs_hooks.cli_markdown()
    parser = cli.build_parser()
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]  # noqa: SLF001
    for name in subs[0].choices:
        assert f"## `jaxinterp {name}`" in page, name
    assert "## `jaxinterp weights import`" in page and "usage: jaxinterp attribute" in page


# --- the built site in a browser -----------------------------------------------------------


_chromium = chromium


def _site(tmp_path) -> pathlib.Path:
    given = os.environ.get("JAXINTERP_SITE_DIR")
    if given:
        site = pathlib.Path(given).resolve()
        assert (site / "index.html").is_file(), f"JAXINTERP_SITE_DIR={given} holds no built site"
        return site
    if importlib.util.find_spec("mkdocs") is None:
        if os.environ.get("JAXINTERP_BROWSER_TESTS"):
            pytest.fail("JAXINTERP_BROWSER_TESTS is set but mkdocs is missing "
                        "(pip install -e \".[docs]\")")
        pytest.skip("needs the docs extra: pip install -e \".[docs]\"")
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                        str(site)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return site


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_site_in_headless_chromium(tmp_path):
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    site = _site(tmp_path)
    pages = sorted(p.relative_to(site).parent.as_posix() for p in site.rglob("index.html"))
    pages = ["" if p == "." else p + "/" for p in pages]
    assert len(pages) >= 25, pages
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    shots = pathlib.Path(os.environ.get("JAXINTERP_DOCS_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    problems = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=executable, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            failed = []
            # a request the previous page left pending is aborted by the next navigation
            page.on("requestfailed", lambda r: None if "ERR_ABORTED" in (r.failure or "")
                    else failed.append(f"{r.url} ({r.failure})"))
            for path in pages:
                errors.clear()
                failed.clear()
                response = page.goto(base + path)
                page.wait_for_load_state("networkidle")
                if response is None or response.status != 200:
                    problems.append(f"{path}: HTTP {response and response.status}")
                images = page.evaluate(
                    "Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
                broken = [src for src, width in images if not width]
                if broken:
                    problems.append(f"{path}: images not loaded: {broken}")
                if errors or failed:
                    problems.append(f"{path}: console errors {errors}, failed requests {failed}")
                if path == "":
                    page.screenshot(path=str(shots / "docs_home.png"), full_page=False)
                if path == "api/attribution/":
                    page.screenshot(path=str(shots / "docs_api.png"), full_page=False)
            # search: type a term on the home page, results appear
            page.goto(base)
            page.wait_for_load_state("load")
            page.click("label.md-search__icon, .md-search__input", timeout=10_000)
            # typed key by key: Material searches on key events, so a fill() made after the
            # index is ready (timing-dependent) never runs a query
            page.locator("input.md-search__input").press_sequentially(
                "integrated gradients", delay=20)
            page.wait_for_selector(".md-search-result__item", timeout=60_000)
            results = page.eval_on_selector_all(".md-search-result__item", "r => r.length")
            if not results:
                problems.append("search: no results for 'integrated gradients'")
            page.screenshot(path=str(shots / "docs_search.png"), full_page=False)
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    assert not problems, "\n".join(problems)

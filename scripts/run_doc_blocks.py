"""Runs every code block of the docs marked runnable, page by page (CI's docs step).

A block is runnable when the line before its ```` ```python ```` fence is `<!-- runnable -->`
(an HTML comment: the rendered page does not show it). The runnable blocks of one page run in
order in one fresh Python process, in an empty temporary directory, so a block may use what an
earlier block of its page defined; blocks not marked (those naming files a reader has, say a
downloaded `.pth`) are not run.

    python scripts/run_doc_blocks.py            # every page under docs/site and README.md
    python scripts/run_doc_blocks.py --list     # what would run
    python scripts/run_doc_blocks.py docs/site/metrics.md
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARK = "<!-- runnable -->"
FENCE = re.compile(r"^```python\s*$")


def blocks(path: Path) -> list[tuple[int, str]]:
    """`(line, code)` of each runnable block of a Markdown file (1-based line of the fence)."""
    lines = path.read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        if line.strip() != MARK:
            continue
        if i + 1 >= len(lines) or not FENCE.match(lines[i + 1]):
            raise ValueError(f"{path}:{i + 1}: {MARK} must be followed by a ```python fence")
        end = next((j for j in range(i + 2, len(lines)) if lines[j].startswith("```")), None)
        if end is None:
            raise ValueError(f"{path}:{i + 2}: unclosed code block")
        out.append((i + 2, "\n".join(lines[i + 2:end])))
    return out


def pages(paths: list[str]) -> list[Path]:
    if paths:
        return [Path(p).resolve() for p in paths]
    return sorted((ROOT / "docs" / "site").rglob("*.md")) + [ROOT / "README.md"]


def program(path: Path, found: list[tuple[int, str]]) -> str:
    """One script running the page's blocks in order, naming the failing block."""
    parts = ["import sys, traceback"]
    for line, code in found:
        parts.append(f"print({f'-- {path.relative_to(ROOT)}:{line}'!r}, flush=True)")
        parts.append(f"try:\n    exec(compile({code!r}, {f'{path.name}:{line}'!r}, 'exec'))\n"
                     "except Exception:\n    traceback.print_exc()\n    sys.exit(1)")
    return "\n".join(parts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pages", nargs="*", help="Markdown files (default: the docs and README)")
    ap.add_argument("--list", action="store_true", help="list the runnable blocks and stop")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per page")
    args = ap.parse_args(argv)
    todo = [(p, blocks(p)) for p in pages(args.pages)]
    todo = [(p, b) for p, b in todo if b]
    if args.list:
        for p, b in todo:
            print(f"{p.relative_to(ROOT)}: {len(b)} block(s) at lines "
                  f"{', '.join(str(line) for line, _ in b)}")
        return 0
    failed = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    for p, b in todo:
        t0 = time.time()
        with tempfile.TemporaryDirectory(prefix="jaxinterp-doc-") as cwd:
            try:
                r = subprocess.run([sys.executable, "-c", program(p, b)], cwd=cwd, env=env,
                                   capture_output=True, text=True, timeout=args.timeout)
                ok, out = r.returncode == 0, r.stdout + r.stderr
            except subprocess.TimeoutExpired:
                ok, out = False, f"timed out after {args.timeout:.0f} s"
        print(f"{'ok  ' if ok else 'FAIL'} {p.relative_to(ROOT)} ({len(b)} blocks, "
              f"{time.time() - t0:.0f} s)", flush=True)
        if not ok:
            failed.append(p)
            print(out[-4000:], flush=True)
    print(f"{sum(len(b) for _, b in todo)} runnable blocks on {len(todo)} pages; "
          f"{len(failed)} page(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

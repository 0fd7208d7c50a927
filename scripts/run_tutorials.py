"""Runs the documentation's tutorials and rewrites their figures.

    python scripts/run_tutorials.py                  # every docs/tutorials/*.py, one at a time
    python scripts/run_tutorials.py attribution      # some of them, by file stem

Each tutorial is a jupytext percent-format script; it is run with plain `python` from
docs/tutorials/ (its working directory), so the figures it saves land in docs/tutorials/figures/,
which the site shows (`scripts/docs_hooks.py` adds them to the build). The figures are committed
as the tutorials last produced them; CI runs this script before `mkdocs build --strict`, so the
published pages show the figures of that run and a tutorial that breaks fails CI.
Exit status: 0 when every tutorial ran, 1 otherwise (each failure's last output lines shown).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import time

TUTORIALS = pathlib.Path(__file__).resolve().parents[1] / "docs" / "tutorials"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="tutorial file stems (default: all)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per tutorial")
    args = ap.parse_args(argv)
    files = sorted(TUTORIALS.glob("*.py"))
    if args.names:
        unknown = set(args.names) - {f.stem for f in files}
        if unknown:
            ap.error(f"unknown tutorial {', '.join(sorted(unknown))}; "
                     f"valid: {', '.join(f.stem for f in files)}")
        files = [f for f in files if f.stem in args.names]
    env = dict(os.environ, MPLBACKEND="Agg")
    failed = []
    for f in files:
        start = time.time()
        try:
            r = subprocess.run([sys.executable, f.name], cwd=TUTORIALS, env=env, text=True,
                               capture_output=True, timeout=args.timeout)
            code, output = r.returncode, r.stdout + r.stderr
        except subprocess.TimeoutExpired as e:
            code, output = "timeout", f"{e.stdout or ''}{e.stderr or ''}"
        print(f"{f.name}: {'ok' if code == 0 else f'FAILED ({code})'} in {time.time() - start:.1f} s",
              flush=True)
        if code != 0:
            failed.append(f.name)
            print("\n".join(str(output).splitlines()[-30:]), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Writing results without harming users' files: temporary names, moves into place, markers.

* `RunDir`: a command's output directory. Everything is written into a fresh hidden directory
  beside it and moved into place by `commit()`, with a `run.json` marker written last, so a
  run's directory holds only that run's files and an interrupted run leaves nothing in place.
  An existing non-empty directory is replaced only with `force` and only if it is a previous
  run's output (its marker and nothing foreign).
* `write_file`: one file written under a temporary name and renamed over the target.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

MARKER = "run.json"


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (this process counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_leftovers(path: Path, kinds: tuple[str, ...] = ("partial",)) -> list[tuple[Path, str]]:
    """`(entry, kind)` for every `.NAME.<kind>-PID...` beside `path` whose process is gone."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.({'|'.join(kinds)})-(\d+)(-.*)?$")
    if not path.parent.is_dir():
        return []
    return [(entry, m.group(1)) for entry in path.parent.iterdir()
            if (m := pattern.match(entry.name)) and not pid_alive(int(m.group(2)))]


def clean_stale(path: Path) -> None:
    """Removes `.NAME.partial-PID-*` entries beside `path` left by dead processes."""
    for entry, _ in stale_leftovers(path):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def is_run_dir(path: Path) -> bool:
    """Whether `path` is a finished jaxinterp run directory (its marker names every entry)."""
    try:
        record = json.loads((path / MARKER).read_text())
        entries = set(record["entries"]) | {MARKER}
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return set(os.listdir(path)) <= entries


def safe_name(name: str, fallback: str = "image") -> str:
    """A file-name component that stays inside its directory: letters, digits, `._-` only,
    no leading dots (so never `..`), at most 100 characters."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).lstrip(".")[:100]
    return name or fallback


class RunDir:
    """A run's output directory, built under a temporary name and moved into place at the end.

    Args:
      out: the directory the user asked for.
      force: replace an existing previous run's output (never anything else).
    """

    def __init__(self, out: str | os.PathLike, force: bool = False):
        self.out, self.force = Path(os.path.abspath(out)), force
        self._check_target()
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            clean_stale(self.out)
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.partial-{os.getpid()}-",
                                             dir=self.out.parent))
        except OSError as e:
            raise ValueError(f"cannot write --out {self.out}: {e.strerror or e}") from None
        self.tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes it private
        self.names: set[str] = set()

    def _check_target(self):
        out = self.out
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} is a file, not a directory")
        if out.is_dir() and any(out.iterdir()):
            if not self.force:
                raise FileExistsError(f"{out} is not empty; pass --force to replace a previous "
                                      "jaxinterp output there")
            if not is_run_dir(out):
                raise FileExistsError(f"{out} is not empty and is not a jaxinterp output "
                                      "directory (no run.json listing its files); refusing to "
                                      "replace it, even with --force")

    def unique(self, name: str) -> str:
        """A unique, safe entry name for `name` (`cat`, `cat-2`, ...)."""
        base = safe_name(name)
        candidate, i = base, 1
        while candidate in self.names or candidate == MARKER:
            i += 1
            candidate = f"{base}-{i}"
        self.names.add(candidate)
        return candidate

    def path(self, *parts: str) -> Path:
        """A path inside the temporary directory (`parts` must come from `unique`)."""
        p = self.tmp.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def commit(self, record: dict) -> Path:
        """Writes the marker and moves the directory into place; returns the final path."""
        entries = sorted(os.listdir(self.tmp))
        record = {**record, "entries": entries, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (self.tmp / MARKER).write_text(json.dumps(record, indent=1))
        try:
            os.rename(self.tmp, self.out)  # atomic; succeeds over a missing or empty directory
            return self.out
        except OSError:
            pass
        if not (self.force and is_run_dir(self.out)):
            self.abort()
            raise FileExistsError(f"{self.out} was written by another run meanwhile; this run's "
                                  "output was discarded (pass --force to replace it)")
        old = self.out.with_name(f".{self.out.name}.partial-{os.getpid()}-old")
        os.rename(self.out, old)
        os.rename(self.tmp, self.out)
        shutil.rmtree(old, ignore_errors=True)
        return self.out

    def abort(self) -> None:
        """Removes the temporary directory (nothing of this run stays)."""
        shutil.rmtree(self.tmp, ignore_errors=True)


def write_file(path: str | os.PathLike, write: Callable[[Path], None], force: bool = False) -> Path:
    """Writes one file through `write(tmp_path)` under a temporary name, then renames it over
    `path` (refused without `force` if `path` exists; never a directory)."""
    path = Path(os.path.abspath(path))
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give a file name")
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass --force to overwrite")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.partial-{os.getpid()}-",
                                   suffix=path.suffix, dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise ValueError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def replace_dir(tmp: Path, path: Path) -> None:
    """Moves the finished directory `tmp` to `path`; an existing `path` (already checked by the
    caller as the library's own) is moved aside first and removed only after the move."""
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.rename(path, old)
        os.rename(tmp, path)
        shutil.rmtree(old)
    else:
        os.rename(tmp, path)


def current_umask() -> int:
    """The process's file-creation mask (read without changing it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask

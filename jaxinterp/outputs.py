"""Writing results without harming users' files: temporary names, moves into place, markers.

* `RunDir`: a command's output directory. Everything is written into a fresh hidden directory
  beside it and moved into place by `commit()`, with a `run.json` marker written last, so a
  run's directory holds only that run's files and an interrupted run leaves nothing in place.
  An existing non-empty directory is replaced only with `force` and only if it is a previous
  run's output (its marker and nothing foreign).
* `write_file`: one file written under a temporary name and renamed over the target.
* `replace_dir` / `swap_dirs`: a finished directory put in place of an existing one in one
  atomic exchange (Linux `renameat2(RENAME_EXCHANGE)`), so a kill at any moment leaves either
  the old complete directory or the new complete one at the name; then the old one is removed
  file by file, only what the caller recognises as its own (`foreign_files`).
* `DirLock`: an exclusive lock beside an output directory (`.NAME.lock`, `flock`), holding the
  holder's PID; released by the kernel when the process dies, so a dead holder's lock is taken
  over.

The rule for every directory jaxinterp writes: decide everything (is it ours? anything foreign
in it?) before touching anything; with force, an existing directory that holds anything the
library did not write is refused before anything changes (never deleted); the new content is
written beside it and swapped in.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
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
            raise FileExistsError(f"{self.out} was written by another run meanwhile, or holds "
                                  "files jaxinterp did not write; this run's output was "
                                  "discarded (pass --force to replace a previous run)")
        old_entries = set(json.loads((self.out / MARKER).read_text())["entries"]) | {MARKER}
        swap_dirs(self.tmp, self.out)  # self.tmp now holds the previous run
        remove_ours(self.tmp, lambda rel, is_dir: rel.split("/")[0] in old_entries)
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


def replace_dir(tmp: Path, path: Path,
                ours: Callable[[str, bool], bool] | None = None) -> None:
    """Puts the finished directory `tmp` at `path`.

    An existing `path` (checked by the caller as the library's own, before anything was
    written) is exchanged with `tmp` atomically, then removed entry by entry: with `ours`
    (`ours(relative_path, is_dir)`), only what it recognises; anything else is left where it
    is, in `tmp`, and named in the `FileExistsError` raised (so a file that appeared meanwhile
    is never deleted)."""
    if not path.exists():
        os.rename(tmp, path)
        return
    if ours is not None:
        foreign = foreign_files(path, ours)
        if foreign:
            raise FileExistsError(f"{path} holds files jaxinterp did not write "
                                  f"({', '.join(foreign[:5])}); not replacing it")
    swap_dirs(tmp, path)
    if ours is None:
        shutil.rmtree(tmp)
        return
    left = remove_ours(tmp, ours)
    if left:
        raise FileExistsError(f"{path} was replaced, but the previous one held files jaxinterp "
                              f"did not write; they are kept in {tmp}: {', '.join(left[:5])}")


_RENAME_EXCHANGE = 2


def _renameat2(a: Path, b: Path) -> bool:
    """`renameat2(a, b, RENAME_EXCHANGE)`; False where the system does not have it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def swap_dirs(new: Path, path: Path) -> None:
    """Exchanges the directories `new` and `path` (both exist, same parent): afterwards `path`
    holds the new content and `new` the old. Atomic on Linux; elsewhere two renames, with the
    old one parked at `new`'s name in between (`.NAME.partial-…`), never deleted here."""
    if _renameat2(new, path):
        return
    parked = new.with_name(new.name + "-old")
    os.rename(path, parked)
    os.rename(new, path)
    os.rename(parked, new)


def walk_entries(path: Path) -> list[tuple[str, bool]]:
    """`(relative path with /, is_dir)` of everything under `path`, parents before children."""
    out = []
    for root, dirs, files in os.walk(path):
        rel = os.path.relpath(root, path)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        for d in list(dirs):
            if os.path.islink(os.path.join(root, d)):
                files.append(d)  # a link is an entry, never followed
                dirs.remove(d)
        out += [(prefix + d, True) for d in sorted(dirs)]
        out += [(prefix + f, False) for f in sorted(files)]
    return out


def foreign_files(path: Path, ours: Callable[[str, bool], bool]) -> list[str]:
    """The entries under `path` that `ours(relative_path, is_dir)` does not recognise (a
    directory not recognised counts once, its content not listed)."""
    foreign: list[str] = []
    for rel, is_dir in walk_entries(path):
        if any(rel.startswith(f + "/") for f in foreign):
            continue
        if not ours(rel, is_dir):
            foreign.append(rel + ("/" if is_dir else ""))
    return foreign


def remove_ours(path: Path, ours: Callable[[str, bool], bool]) -> list[str]:
    """Deletes the files under `path` that `ours` recognises, then the directories left empty
    (`path` included); returns what was left (foreign entries)."""
    entries = walk_entries(path)
    foreign = [rel for rel, is_dir in entries if not is_dir and not ours(rel, False)]
    for rel, is_dir in entries:
        if not is_dir and ours(rel, False):
            (path / rel).unlink(missing_ok=True)
    for rel, is_dir in reversed(entries):
        if is_dir:
            try:
                (path / rel).rmdir()
            except OSError:
                pass  # not empty: something foreign below
    try:
        path.rmdir()
    except OSError:
        pass
    return foreign


class LockedError(FileExistsError):
    """Another live process holds the lock of an output directory (a `FileExistsError`: the
    command line reports it as a usage error, exit 2)."""


class DirLock:
    """An exclusive lock on the output directory `path`: `.NAME.lock` beside it, locked with
    `flock` and holding `{"pid": …, "host": …, "started": …}` (JSON). The kernel drops the lock
    when its process dies, so a dead holder's lock file is simply taken over. `acquire` raises
    `LockedError` naming the holder's PID. Local file systems only (NFS `flock` varies)."""

    def __init__(self, path: str | os.PathLike):
        path = Path(os.path.abspath(path))
        self.file = path.with_name(f".{path.name}.lock")
        self.fd: int | None = None

    def acquire(self) -> "DirLock":
        self.file.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o666 & ~current_umask())
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = self.holder()
                os.close(fd)
                who = f"process {holder.get('pid', '?')}" + (
                    f" on {holder['host']}" if holder.get("host") else "") + (
                    f" since {holder['started']}" if holder.get("started") else "")
                raise LockedError(f"{self.file.with_name(self.file.name[1:-5])} is being written "
                                  f"by {who} (lock {self.file}); wait for it to finish, or end "
                                  "that process") from None
            try:  # the file we locked is still the one at the name (not unlinked meanwhile)?
                same = os.stat(self.file).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        record = {"pid": os.getpid(), "host": os.uname().nodename,
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(record).encode())
        os.fsync(fd)
        self.fd = fd
        return self

    def holder(self) -> dict:
        try:
            return json.loads(self.file.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.file.unlink(missing_ok=True)  # while still locked: no one holds a stale inode
        finally:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "DirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def current_umask() -> int:
    """The process's file-creation mask (read without changing it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask

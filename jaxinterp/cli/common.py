"""Shared pieces of the command line: argument types and bounds, input batches, output
directories and files, progress, interrupts and the exit-status convention."""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
from pathlib import Path


COMPARE_ROWS = 16  # images shown in overview figures (every image gets its own pictures)


def progress(iterable, **kw):
    """`tqdm(iterable, **kw)` when tqdm is installed; else as is. Where the bar is disabled
    (`disable=True`: one item) a status line (`busy`) shows if the work takes over `BUSY_DELAY`
    s, so every step over ~2 s shows something."""
    if kw.get("disable") is True and kw.get("desc"):
        return _busy_iter(iterable, kw["desc"])
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, **kw)


def _busy_iter(iterable, desc):
    with busy(desc):  # open while the loop body runs too (the generator waits at yield)
        yield from iterable


BUSY_DELAY = 2.0  # seconds of silent work before a status line appears


class busy:
    """`with busy("tcav color:red"):` shows "tcav color:red: 00:12" on stderr, refreshed every
    second, once the block has run `BUSY_DELAY` s (a single compiled call, a t-SNE fit: steps
    that cannot report progress); nothing for quicker blocks. Not on a terminal (a log) or
    without tqdm: "tcav color:red ..." then "tcav color:red: 12.3 s"."""

    def __init__(self, desc: str):
        self.desc = desc

    def __enter__(self):
        import threading
        import time

        self._done = threading.Event()
        self._start = time.monotonic()
        self._bar = None
        self._thread = threading.Thread(target=self._show, daemon=True)
        self._thread.start()
        return self

    def _show(self):
        if self._done.wait(BUSY_DELAY):
            return
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
        if tqdm is None or not sys.stderr.isatty():  # a log: one line now, one at the end
            print(f"{self.desc} ...", file=sys.stderr, flush=True)
            self._bar = False
            return
        self._bar = tqdm(total=None, desc=self.desc, bar_format="{desc}: {elapsed}",
                         file=sys.stderr)
        while not self._done.wait(1.0):
            self._bar.refresh()

    def __exit__(self, *exc):
        import time

        self._done.set()
        self._thread.join()
        if self._bar is False:
            print(f"{self.desc}: {time.monotonic() - self._start:.1f} s", file=sys.stderr)
        elif self._bar is not None:
            self._bar.refresh()
            self._bar.close()
        return False


CACHE_OFF = ("", "0", "off", "none", "false")


def enable_compilation_cache(enabled: bool = True) -> str | None:
    """Turns on JAX's persistent compilation cache so repeated commands skip compiling.

    Args:
      enabled: False (the CLI's `--no-cache`) leaves JAX's configuration alone (a cache that
        JAX itself was told to use, e.g. by `JAX_COMPILATION_CACHE_DIR`, stays in use).
    Returns:
      The cache directory (`$JAXINTERP_CACHE`, `~` expanded; default `~/.cache/jaxinterp/xla`),
      or None when not set here (`--no-cache`, or `JAXINTERP_CACHE` set to "", 0, off, none or
      false).
    """
    import jax

    path = os.environ.get("JAXINTERP_CACHE", str(Path.home() / ".cache" / "jaxinterp" / "xla"))
    if not enabled or path.strip().lower() in CACHE_OFF:
        return None
    path = os.path.expanduser(path)
    try:
        jax.config.update("jax_compilation_cache_dir", path)
        # every program: a command compiles dozens of small ones, each under JAX's 1 s default
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    except Exception:  # noqa: BLE001 — a cache is an optimization, never a failure
        return None
    return path


def _batches(args, m, batch: int, size: tuple[int, int] | None = None):
    """Yields `(names, images [n, H, W, 3])` `batch` images at a time, loading files lazily.

    Image files are loaded at `size` (default: the model's input size; `args.fit`); an unreadable one is
    reported on stderr, counted in `args.failed`, and skipped. With no files, `args.samples`
    shapes images of `args.seed` (image i depends on (seed, i) only); their names carry the
    true class.
    """
    import jax
    import numpy as np

    import jaxinterp as ji

    if not args.images:
        key = jax.random.key(args.seed)
        for start in range(0, args.samples, batch):
            _stop_if_interrupted()
            n = min(batch, args.samples - start)
            b = ji.data.shapes(key, n, start=start, size=(size or m.input_size)[0])
            names = [f"shapes{start + i} ({ji.data.CLASSES[int(y)]})"
                     for i, y in enumerate(b.labels)]
            yield names, np.asarray(b.images)
        return
    for start in range(0, len(args.images), batch):
        _stop_if_interrupted()
        names, images = [], []
        for path in args.images[start:start + batch]:
            try:
                images.append(load_input(path, size or m.input_size, fit=args.fit))
                names.append(str(path))
            except (OSError, ValueError) as e:
                args.failed.append(str(e))
                print(f"error: {e}", file=sys.stderr)
        if images:
            yield names, np.stack(images)


def _stop_if_interrupted() -> None:
    """Raises `Interrupted` if SIGINT / SIGTERM arrived while a library swallowed it (JAX's
    compilation-cache writer catches every exception): checked between batches."""
    if _interrupt.received is not None:
        raise Interrupted(signal.Signals(_interrupt.received).name)


def _padded(x, n: int):
    """`x` padded to `n` images by repeating its last one (one compiled shape for all batches)."""
    import numpy as np

    return x if len(x) >= n else np.concatenate([x, np.repeat(x[-1:], n - len(x), 0)])


def _total(args) -> int:
    return len(args.images) if args.images else args.samples


def _finish(args) -> int:
    """Exit status: 1 with a summary on stderr if any image failed, else 0."""
    if args.failed:
        print(f"{len(args.failed)} of {_total(args)} images failed", file=sys.stderr)
        return 1
    return 0


def _targets(arg, m, logits):
    import numpy as np

    if arg == "auto":
        return np.asarray(logits).argmax(-1)
    if arg.lstrip("-").isdigit():
        t = int(arg)
    elif arg in m.classes:
        t = m.classes.index(arg)
    else:
        raise ValueError(f"--target must be auto, a class index or a class name of {m.arch} "
                         f"({', '.join(m.classes[:10])}{', ...' if m.num_classes > 10 else ''}); "
                         f"got {arg!r}")
    if not 0 <= t < m.num_classes:
        raise ValueError(f"--target {t} out of range: {m.arch} has {m.num_classes} classes")
    return np.full(len(logits), t)


def channel_spec(text: str) -> list:
    """argparse type of `--channel`: "3", "0,5,9", "0-15" or names -> [int | (lo, hi) | name]."""
    parts = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise argparse.ArgumentTypeError(f"empty item in {text!r} (use 3, 0,5,9 or 0-15)")
        range_ = re.fullmatch(r"(\d+)-(\d+)", part)
        if range_:
            lo, hi = int(range_.group(1)), int(range_.group(2))
            if lo > hi:
                raise argparse.ArgumentTypeError(f"range {part!r} runs backwards (use {hi}-{lo})")
            parts.append((lo, hi))
        elif part.isdigit():
            parts.append(int(part))
        elif re.fullmatch(r"-\d+(-\d+)?", part):
            raise argparse.ArgumentTypeError(f"{part!r}: channels are numbered from 0")
        else:
            parts.append(part)  # a class name, resolved against the model
    return parts


def _parse_units(spec, m, layer, kind):
    """Unit indices from a parsed `--channel` (`channel_spec`); None: all of them."""
    is_class = kind in ("logit", "prob")
    n = m.num_classes if is_class else m.channels(layer)
    if spec is None:
        return list(range(n))
    what = "classes" if is_class else "channels"
    out = []
    for part in spec:
        if isinstance(part, str):
            if not (is_class and part in m.classes):
                kind_ = "class index or name" if is_class else "channel index"
                raise ValueError(f"--channel {part!r} is not a {kind_} (use 3, 0,5,9 or 0-15)")
            out.append(m.classes.index(part))
            continue
        lo, hi = part if isinstance(part, tuple) else (part, part)
        if hi >= n:  # checked before expanding a range
            shown = f"{lo}-{hi}" if isinstance(part, tuple) else str(hi)
            raise ValueError(f"--channel {shown} out of range: {layer} of {m.arch} has {n} "
                             f"{what} (0 … {n - 1})")
        out += list(range(lo, hi + 1))
    return out


def _run_dir_command(args, name: str, body) -> int:
    """Runs `body(run, m) -> (record, summary)` writing into a `RunDir` at `args.out`."""
    import jaxinterp as ji
    from jaxinterp.outputs import RunDir

    run = RunDir(args.out, force=args.force)  # checks --out before any computation
    try:
        m = ji.load_model(args.model)
        record, summary = body(run, m)
        if record is None:
            run.abort()
            return _finish(args) or 1
        if _interrupt.received is not None:  # a library swallowed the interrupt: still stop
            raise Interrupted(signal.Signals(_interrupt.received).name)
        out = run.commit({"command": name, "model": args.model or "vgg-mini", **record,
                          "failed": args.failed})
    except BaseException:
        run.abort()
        raise
    print(f"{summary} {out}")
    return _finish(args)


def _entry(args, run, name):
    return run.unique(Path(name).stem if args.images else name.split(" ")[0])


def _save_new(save, image, path, force):
    from jaxinterp.outputs import write_file

    write_file(path, lambda tmp: save(image, tmp), force)


def _check_out_file(args) -> None:
    """Refuses a single-file `--out` before any computation: a directory, or an existing file
    without `--force` (`write_file` checks again when writing)."""
    if Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a directory; give a PNG file name")
    if Path(args.out).exists() and not args.force:
        raise FileExistsError(f"{args.out} exists; pass --force to overwrite")


def _save_figure(draw, args) -> None:
    """Writes a figure through `draw(path)` atomically at `args.out`."""
    from jaxinterp.outputs import write_file

    write_file(args.out, draw, args.force)


def _number(kind: type, minimum: float, strict: bool, maximum: float | None = None,
            why: str = "", below: bool = False):
    """An argparse type: `kind` (int or float), finite, `> minimum` (strict) or `>= minimum`, and
    `<= maximum` (`< maximum` if `below`); `why` says where the maximum comes from."""
    noun = "integer" if kind is int else "number"
    an = "n" if kind is int else ""
    if maximum is not None and below:
        want = f"a {noun} in ({minimum:g}, {maximum:g})" if strict else \
            f"a {noun} in [{minimum:g}, {maximum:g})"
    else:
        want = (f"a positive {noun}" if strict and minimum == 0 else
                f"a{an} {noun} {'>' if strict else '>='} {minimum:g}")

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{an} {noun}") from None
        if not (v > minimum if strict else v >= minimum) or v == float("inf"):
            raise argparse.ArgumentTypeError(f"must be {want}, got {text}")
        if maximum is not None and (v >= maximum if below else v > maximum):
            if below:
                raise argparse.ArgumentTypeError(f"must be {want}, got {text}")
            raise argparse.ArgumentTypeError(f"at most {maximum:g}{why}, got {text}")
        return v

    parse.__name__ = f"{'positive' if strict else 'nonnegative'}_{kind.__name__}"
    return parse


positive_int = _number(int, 0, strict=True)
nonnegative_int = _number(int, 0, strict=False)
positive_float = _number(float, 0, strict=True)
nonnegative_float = _number(float, 0, strict=False)

# ------------------------------------------------------------------------------------- bounds
# Every size and count option has a maximum. Two kinds of check, both before anything is
# allocated (exit 2, one line):
# * fixed caps in the parser, documented in --help: MAX_SIDE (a 4096-px image through VGG16
#   holds ~70 GB of activations forward, twice that with the backward pass), MAX_THUMB,
#   MAX_ZOOM, MAX_BATCH, MAX_REPORT_PIXELS;
# * an estimate from shapes (`check_memory`): the model's activations at the requested side
#   (`jax.eval_shape`, nothing allocated) times the images in flight, against the accelerator's
#   memory, else the machine's RAM, or JAXINTERP_MEMORY (e.g. 8G).
MAX_SIDE = 4096
MAX_THUMB = 1024
MAX_ZOOM = 64
MAX_BATCH = 4096
MAX_REPORT_PIXELS = 2 ** 28  # --limit x --thumb² of one method: 768 MB of RGB thumbnails

side = _number(int, 0, strict=True, maximum=MAX_SIDE,
               why=" px (a VGG16 forward pass at 4096 px holds ~70 GB of activations)")
side.__name__ = "side"
batch_size = _number(int, 0, strict=True, maximum=MAX_BATCH, why=" images per compiled call")
batch_size.__name__ = "batch"
probability = _number(float, 0, strict=True, maximum=1, below=True)  # in (0, 1)
probability.__name__ = "probability"
unit_interval = _number(float, 0, strict=False, maximum=1)  # in [0, 1]
unit_interval.__name__ = "unit_interval"
at_least_one = _number(float, 1, strict=False)
at_least_one.__name__ = "at_least_one"


def _parse_bytes(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kKmMgGtT]?)i?[bB]?\s*", text)
    if not m:
        raise ValueError(f"JAXINTERP_MEMORY={text!r}: use a size like 8G or 512M")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " "))


def memory_limit() -> tuple[int, str]:
    """(bytes, where the number comes from): JAXINTERP_MEMORY, else the first device's memory
    (accelerators report it), else the machine's physical memory."""
    if os.environ.get("JAXINTERP_MEMORY"):
        return _parse_bytes(os.environ["JAXINTERP_MEMORY"]), "JAXINTERP_MEMORY"
    try:
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        if stats.get("bytes_limit"):
            return int(stats["bytes_limit"]), f"{jax.devices()[0].platform} memory"
    except Exception:  # noqa: BLE001 — fall back to the host's memory
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "memory"
    except (ValueError, OSError, AttributeError):
        return 2 ** 62, "memory"


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PB"


def activation_bytes(m, side: int | tuple[int, int], layer: str | None = None) -> int:
    """float32 bytes of one image's activations at `side` (every layer, or one `layer`), from
    shapes only (`jax.eval_shape`: nothing is computed or allocated); 0 if unknown."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    h, w = (side, side) if isinstance(side, int) else side
    try:
        _, feats = jax.eval_shape(lambda x: m(x, check=False),
                                  jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32))
    except Exception:  # noqa: BLE001 — the library reports a bad size with its own message
        return 0
    if layer is not None:
        return 4 * int(np.prod(feats[layer].shape[1:]))
    return 4 * sum(int(np.prod(f.shape[1:])) for f in feats.values()) + 12 * h * w


def check_memory(what: str, nbytes: float) -> None:
    """Refuses (ValueError, exit 2) work whose estimated memory exceeds `memory_limit()`."""
    limit, source = memory_limit()
    if nbytes > limit:
        raise ValueError(f"{what} needs about {_fmt_bytes(nbytes)} (estimated from shapes), more "
                         f"than the {_fmt_bytes(limit)} of {source}; use smaller values "
                         "(or set JAXINTERP_MEMORY)")


def check_images_memory(m, what: str, images: int, side, *, backward: bool = True) -> None:
    """`check_memory` for `images` images of `side` px through `m` (forward activations, twice
    that with a backward pass)."""
    check_memory(what, images * activation_bytes(m, side) * (2 if backward else 1))


def layer_list(text: str) -> list[str]:
    """argparse type of `--layers`: comma-separated layer names or aliases (checked later
    against the model)."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise argparse.ArgumentTypeError("no layer given (e.g. relu1_1,pool2)")
    return names


def method_list(text: str) -> list[str]:
    """argparse type of `--method`: comma-separated registered attribution methods."""
    from jaxinterp.attribution.registry import METHODS

    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"no method given; valid: {', '.join(METHODS)}")
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown method {', '.join(unknown)}; valid: "
                                         f"{', '.join(METHODS)}")
    return list(dict.fromkeys(names))


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and a --help hint (not the usage block), and values that
    start like a negative number (-1/255, -1e-3) read as values, so their own check explains
    what is wrong instead of "expected one argument"."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self._negative_number_matcher = re.compile(r"^-\.?\d")

    def error(self, message):
        message = " ".join(str(message).split())
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def warn(message: str) -> None:
    """A one-line warning on stderr."""
    print(f"jaxinterp: warning: {' '.join(str(message).split())}", file=sys.stderr)


def one_line_warning(message, category, filename, lineno, file=None, line=None):
    """`warnings.showwarning` of the command line: one line, no source excerpt."""
    warn(message)


ASPECT_WARNING = 2.0  # a resize that changes the proportions more than this many times
ENLARGE_WARNING = 8.0  # an image enlarged more than this many times


def load_input(path, size, fit: str = "resize"):
    """`load_image(path, size, fit)` with one-line warnings: for an image over Pillow's
    decompression-bomb warning limit (instead of its raw DecompressionBombWarning), one stretched
    out of proportion or enlarged many times to `size`, and any other warning of the reader."""
    import warnings

    from PIL import Image

    from jaxinterp.images import load_image

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dims = None
        try:
            with Image.open(path) as im:  # the header only: the size before decoding
                dims = im.size
        except Exception:  # noqa: BLE001 — load_image reports what is wrong with the file
            pass
        x = load_image(path, size, fit=fit)
    bomb = False
    for w in caught:
        if issubclass(w.category, Image.DecompressionBombWarning):
            bomb = True
        else:
            warn(w.message)
    if dims is None:
        return x
    W, H = dims
    if bomb:
        warn(f"{path} is {W}x{H} ({W * H / 1e6:.3g} Mpx, over Pillow's "
             f"{Image.MAX_IMAGE_PIXELS / 1e6:.3g} Mpx warning limit): decoding it took "
             f"~{_fmt_bytes(W * H * 4)}"
             + (f"; it is shrunk to {size[1]}x{size[0]}" if size else ""))
    if size is not None and W > 0 and H > 0:
        h, w = size
        distortion = max((W / H) / (w / h), (w / h) / (W / H))
        if fit == "resize" and distortion >= ASPECT_WARNING:
            warn(f"{path} is {W}x{H}: stretched to {w}x{h}, its proportions change "
                 f"{distortion:.3g}x (--fit crop keeps them)")
        elif fit == "crop" and distortion >= 2 * ASPECT_WARNING:
            warn(f"{path} is {W}x{H}: --fit crop keeps {100 / distortion:.2g}% of it at {w}x{h}")
        enlarge = max(h / H, w / W)  # the scale of the short side for crop, too
        if enlarge >= ENLARGE_WARNING:
            warn(f"{path} is {W}x{H}: enlarged {enlarge:.3g}x to {w}x{h}, it carries little "
                 "detail at that size")
    return x


def add_inputs(p, samples):
    """--model, --fit, --samples, --seed: options of the commands that read images or shapes."""
    p.add_argument("--model", default=None, help="model name or checkpoint (default vgg-mini)")
    p.add_argument("--fit", choices=["resize", "crop"], default="resize",
                   help="how images are brought to the model's input size")
    p.add_argument("--samples", type=positive_int, default=samples,
                   help="shapes samples when no image is given")
    p.add_argument("--seed", type=nonnegative_int, default=1,
                   help="seed of the shapes samples (and of random starts / rolls)")


# Errors that mean "the command was given something it cannot use": exit 2, like argparse's.
USAGE_ERRORS = (ValueError, TypeError, KeyError, LookupError, FileNotFoundError, FileExistsError,
                IsADirectoryError, NotADirectoryError, PermissionError, ImportError)


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived (raised from the signal handler)."""


def _interrupt(signum, frame):
    _interrupt.received = signum
    raise Interrupted(signal.Signals(signum).name)


_interrupt.received = None

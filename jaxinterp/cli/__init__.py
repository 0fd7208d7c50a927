"""`jaxinterp` command line: thin subcommands over the library.

    jaxinterp info [MODEL]                              layers, shapes, parameters, preprocessing
    jaxinterp weights import SRC --arch vgg16 --out DIR torchvision .pth/.safetensors, Keras .h5, ViT .npz
    jaxinterp predict [IMAGE ...] [--model M] [--top K] class names and percentages
    jaxinterp attribute [IMAGE ...] --method a,b --out DIR   the seed's pictures and figures
    jaxinterp evaluate --methods a,b --metrics all --out DIR   the leaderboard (ji.metrics)
    jaxinterp text --prompt "a=3 b=7 ; b ?" --method ig,attn_lrp --out DIR   token heat maps
    jaxinterp filters --layer L --out F.png              a conv layer's filters as a grid
    jaxinterp activations [IMAGE] --layer L --out F.png  an image's feature maps as a grid
    jaxinterp visualize --layer L [--channel C] --out F.png   feature visualization (Lucid-style)
    jaxinterp dream [IMAGE ...] --layer L --out DIR     DeepDream with octaves
    jaxinterp invert [IMAGE ...] --out F.png            reconstructions from several layers
    jaxinterp attack [IMAGE ...] --eps 2/255,8/255 --out DIR   FGSM / PGD and a success table
    jaxinterp texture STYLE --out DIR                   Gram-matrix texture synthesis
    jaxinterp style CONTENT STYLE --out DIR             neural style transfer
    jaxinterp dissect --layers L1,L2 --samples 2000 --out DIR   network dissection on shapes
    jaxinterp top --layer L --channel 0-7 --out F.png   top-activating patches per unit
    jaxinterp neighbors [IMAGE ...] --layer L --out F.png   nearest neighbours in feature space
    jaxinterp embed --layer L --method tsne --out F.png   a 2-D map of the data set
    jaxinterp tcav --layer L --concept color:red --target star   TCAV with a t-test

Layout: one module per command family, each with a `register(sub)` that adds its parsers and
their handlers (`models`, `attribution`, `evaluate`, `runs`, `optimization`, `concepts`, `text`); the shared checks,
argument types, bounds, input batches and output helpers live once in `common`. A new command
touches one family module (and, for a new family, `FAMILIES` below).

Bounds: every size / count option has a maximum (`common`: fixed caps in the parser, and an
estimate of activation memory from shapes against the device's or machine's memory, or
JAXINTERP_MEMORY), checked before anything is allocated: exit 2 with one line.
"""

from __future__ import annotations

import argparse
import signal
import sys
import traceback
import warnings

from . import attribution, concepts, common, evaluate, models, optimization, runs, text
from .common import (USAGE_ERRORS, Interrupted, Parser, _interrupt, busy, channel_spec,
                     enable_compilation_cache, layer_list, method_list, nonnegative_float,
                     nonnegative_int, one_line_warning, positive_float, positive_int, progress)
from .models import describe
from .optimization import eps_list

FAMILIES = (models, attribution, evaluate, runs, concepts, optimization, text)


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(prog="jaxinterp", description="Interpretability for JAX / Flax models.")
    ap.add_argument("--debug", action="store_true", help="print the traceback of an error")
    ap.add_argument("--no-cache", action="store_true",
                    help="do not use JAX's persistent compilation cache ($JAXINTERP_CACHE, "
                    "default ~/.cache/jaxinterp/xla; JAXINTERP_CACHE=off also disables it)")
    sub = ap.add_subparsers(dest="command", required=True)
    for family in FAMILIES:
        family.register(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Runs a command. Exit status: 0 done, 1 a failure (or some inputs failed), 2 a usage
    error (bad option, file, model or value), 130 interrupted (SIGINT/SIGTERM; nothing
    half-written is left in place)."""
    args = build_parser().parse_args(argv)
    args.failed = []
    _interrupt.received = None
    enable_compilation_cache(not args.no_cache)
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    show_warning, warnings.showwarning = warnings.showwarning, one_line_warning
    interrupted = False
    try:
        code = args.func(args) or 0
    except (Interrupted, KeyboardInterrupt):
        code, interrupted = 130, True
    except Exception as e:  # noqa: BLE001 — one handler: a one-line message, the trace on --debug
        if args.debug:
            traceback.print_exc()
        message = str(e).strip() or type(e).__name__
        usage = isinstance(e, USAGE_ERRORS)
        if type(e).__name__ == "JaxRuntimeError":  # XLA failed; a usage error only if a check
            usage = "InputError" in message       # compiled into the program raised it
            message = message.strip().splitlines()[-1]
        kind = "error" if usage else f"failed ({type(e).__name__})"
        print(f"jaxinterp: {kind}: {message}", file=sys.stderr)
        code = 2 if usage else 1
    finally:
        warnings.showwarning = show_warning
        for s, handler in previous.items():
            signal.signal(s, handler)
    if interrupted or _interrupt.received is not None:  # even if a library swallowed it
        print("jaxinterp: interrupted; nothing half-written was left in place", file=sys.stderr)
        return 130
    return code


__all__ = ["main", "build_parser", "describe", "progress", "busy", "Parser",
           "enable_compilation_cache",
           "channel_spec", "eps_list", "layer_list", "method_list", "positive_int",
           "nonnegative_int", "positive_float", "nonnegative_float", "Interrupted", "USAGE_ERRORS",
           "common", "models", "attribution", "runs", "optimization", "concepts"]

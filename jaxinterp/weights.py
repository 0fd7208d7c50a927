"""Weights on disk: torchvision `.pth` / `.safetensors` and Keras `.h5` import; orbax checkpoints.

A checkpoint is a directory with `metadata.json` (architecture, classes, preprocessing) and
`state/` (an orbax checkpoint of the Flax variables). Directories are written under a temporary
name and renamed into place when complete, so an interrupted write never looks like a checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.resources
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxinterp import model as model_lib
from jaxinterp.outputs import current_umask, replace_dir, stale_leftovers
from jaxinterp.models import resnet as resnet_lib
from jaxinterp.models import vgg as vgg_lib
from jaxinterp.models import gpt2 as gpt2_lib
from jaxinterp.models import vit as vit_lib

FORMAT = "jaxinterp-checkpoint"
VERSION = 1
REPO_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"

SUFFIXES = {".pth": "torch", ".pt": "torch", ".bin": "torch", ".safetensors": "safetensors",
            ".h5": "keras", ".hdf5": "keras", ".npz": "npz"}
# shipped models besides vgg-mini, and how to train them when a build lacks them
TRAINED_HERE = {"vit-mini": "scripts/train_default.py --arch vit-mini",
                "lm-mini": "scripts/train_lm.py"}
FORMATS = ("torch", "safetensors", "keras", "npz")


class CheckpointError(ValueError):
    """A weight file or checkpoint that cannot be read or does not fit the architecture."""


def _shipped_roots() -> list[Path]:
    """Where shipped checkpoints may be: `$JAXINTERP_WEIGHTS` alone when set; else the package's
    data (`jaxinterp._weights`, in wheels and installs) and the repository's `weights/`."""
    if os.environ.get("JAXINTERP_WEIGHTS"):
        return [Path(os.environ["JAXINTERP_WEIGHTS"])]
    packaged = importlib.resources.files("jaxinterp") / "_weights"  # absent in a checkout
    return [Path(str(packaged)), REPO_WEIGHTS]


def shipped_checkpoint(name: str = "vgg-mini") -> Path | None:
    """Directory of a shipped checkpoint (`vgg-mini`, `vit-mini`), or None if not shipped."""
    for root in _shipped_roots():
        if (root / name / "metadata.json").exists():
            return root / name
    return None


def default_checkpoint() -> Path:
    """Directory of the shipped `vgg-mini` checkpoint (`$JAXINTERP_WEIGHTS/vgg-mini` overrides)."""
    path = shipped_checkpoint("vgg-mini")
    if path is not None:
        return path
    roots = _shipped_roots()
    raise FileNotFoundError(
        "the default vgg-mini checkpoint is missing (looked in "
        f"{', '.join(str(r / 'vgg-mini') for r in roots)}); reinstall jaxinterp, set "
        "JAXINTERP_WEIGHTS to a directory holding vgg-mini/, or train it with "
        "scripts/train_default.py")


# --------------------------------------------------------------------------- checkpoints


def _flat(tree: Any) -> dict[str, Any]:
    return {"/".join(str(getattr(k, "key", k)) for k in path): v
            for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def check_variables(variables: Any, module: vgg_lib.VGG | None, source: str,
                    expected: Any = None) -> None:
    """Raises `CheckpointError` listing missing, unexpected and mis-shaped entries, against
    `module`'s variables (or the abstract tree `expected`)."""
    expected = model_lib.abstract_variables(module) if expected is None else expected
    want = {k: tuple(v.shape) for k, v in _flat(expected).items()}
    have = {k: tuple(np.shape(v)) for k, v in _flat(variables).items()}
    problems = [f"  missing {k} {want[k]}" for k in want if k not in have]
    problems += [f"  unexpected {k} {have[k]}" for k in have if k not in want]
    problems += [f"  {k}: file has {have[k]}, architecture expects {want[k]}"
                 for k in want if k in have and have[k] != want[k]]
    if problems:
        raise CheckpointError(f"{source} does not match the architecture:\n" + "\n".join(problems))


def params_checksum(variables: Any) -> str:
    """SHA-256 of every variable's float32 bytes, in sorted path order (stored in metadata)."""
    h = hashlib.sha256()
    for name, v in sorted(_flat(variables).items()):
        h.update(name.encode())
        h.update(np.ascontiguousarray(np.asarray(v, np.float32)).tobytes())
    return h.hexdigest()


CHECKPOINT_ENTRIES = {"metadata.json", "state"}


def is_checkpoint_dir(path: str | os.PathLike) -> bool:
    """Whether `path` is recognisably a jaxinterp checkpoint: our metadata file and nothing else
    besides the orbax `state/` directory (so replacing it can delete no user file)."""
    path = Path(path)
    if not path.is_dir() or path.is_symlink():
        return False
    if not set(os.listdir(path)) <= CHECKPOINT_ENTRIES or not (path / "metadata.json").is_file():
        return False
    try:
        return json.loads((path / "metadata.json").read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _clean_stale(path: Path) -> None:
    """Removes what interrupted writes of `path` left behind (their process is gone).

    `.NAME.partial-PID-*`: an unfinished new checkpoint, removed. `.NAME.old-PID`: the previous
    checkpoint moved aside; removed if `path` is complete, else moved back into place.
    """
    for entry, kind in stale_leftovers(path, ("partial", "old")):
        if not entry.is_dir() or not set(os.listdir(entry)) <= CHECKPOINT_ENTRIES:
            continue  # not something we wrote: leave it
        if kind == "old" and not path.exists():
            os.rename(entry, path)  # the replacement never landed: restore the previous one
        else:
            shutil.rmtree(entry, ignore_errors=True)


def _is_language_model(m) -> bool:
    from jaxinterp.text.model import LanguageModel

    return isinstance(m, LanguageModel)


def _state_of(m):
    return {"params": m.params} if _is_language_model(m) else m.variables


def _records_of(m) -> dict:
    return m.metadata() if _is_language_model(m) else m.meta.to_dict()


def save_model(m: model_lib.Model, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Writes `m` as a checkpoint directory (orbax state + metadata.json), atomically.

    The checkpoint is written under a hidden temporary name beside `path` and renamed into place
    when complete; an existing checkpoint is replaced only after that, and only if it is
    recognisably one (`is_checkpoint_dir`): anything else at `path` is refused and left as is.
    What an interrupted earlier write left behind is cleaned first.

    Args:
      m: the model (an image model or a `text.LanguageModel`).
      path: directory to create.
      overwrite: replace an existing jaxinterp checkpoint at `path`.
    Returns:
      The absolute path written.
    """
    import orbax.checkpoint as ocp

    path = Path(os.path.abspath(path))
    _clean_stale(path)
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --force) to replace it")
        if not is_checkpoint_dir(path):
            raise FileExistsError(f"{path} exists and is not a jaxinterp checkpoint (a directory "
                                  "with only metadata.json and state/); refusing to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-{os.getpid()}-", dir=path.parent))
    try:
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes it private
        variables = jax.tree_util.tree_map(np.asarray, _state_of(m))
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(tmp / "state", variables)
            ckptr.wait_until_finished()
        meta = {"format": FORMAT, "version": VERSION, **_records_of(m),
                "params_sha256": params_checksum(variables)}
        (tmp / "metadata.json").write_text(json.dumps(meta, indent=1))
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata of a checkpoint directory; raises `CheckpointError` if it is not one."""
    path = Path(path)
    f = path / "metadata.json"
    if not f.exists():
        raise CheckpointError(f"{path} is not a jaxinterp checkpoint (no metadata.json)")
    try:
        meta = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{f} is not valid JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{f} is not a {FORMAT} file")
    return meta


def read_meta(path: str | os.PathLike) -> model_lib.Meta:
    """The validated `Meta` of a checkpoint directory (`CheckpointError` naming what is wrong)."""
    try:
        return model_lib.Meta.from_dict(read_metadata(path))
    except CheckpointError:
        raise
    except ValueError as e:
        raise CheckpointError(f"{Path(path) / 'metadata.json'}: {e}") from None


@contextlib.contextmanager
def _quiet_orbax():
    """Keeps orbax/tensorstore/asyncio from logging tracebacks of a read that we report."""
    names = ("absl", "orbax", "asyncio", "jax._src.distributed", "tensorstore")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def load_checkpoint(path: str | os.PathLike) -> model_lib.Model:
    """Loads a checkpoint directory written by `save_model` (or `import_weights(out=...)`).

    The parameters are verified against the checksum in the metadata (checkpoints written before
    checksums existed load unverified); a mismatch, a truncated or unreadable state, or metadata
    of the wrong form raise `CheckpointError`.
    """
    import orbax.checkpoint as ocp

    path = Path(os.path.abspath(path))
    raw = read_metadata(path)
    if raw.get("kind") == "language_model":
        return _load_language_model(path, raw)
    meta = read_meta(path)
    module = model_lib.build_module(meta)
    target = model_lib.abstract_variables(module)
    variables = _restore(path, target, module, raw)
    return model_lib.assemble(module, variables, meta)


def _load_language_model(path: Path, raw: dict):
    from jaxinterp.text import model as text_model

    try:
        module, tokenizer, arch, extra = text_model.from_metadata(raw)
    except ValueError as e:
        raise CheckpointError(f"{path / 'metadata.json'}: {e}") from None
    target = {"params": text_model.abstract_params(module)}
    variables = _restore(path, target, None, raw)
    return text_model.LanguageModel(module, variables["params"], tokenizer, arch, extra)


def _restore(path: Path, target, module, raw: dict):
    """The state of checkpoint `path` restored into `target` (shapes checked against `module`
    when given, else against `target`), verified against the metadata's checksum."""
    import orbax.checkpoint as ocp

    try:
        with _quiet_orbax(), ocp.StandardCheckpointer() as ckptr:
            stored = ckptr.metadata(path / "state")
            stored = getattr(stored, "item_metadata", stored)
            if not _flat(stored):
                raise ValueError("its state lists no arrays")
            shapes = jax.tree_util.tree_map(lambda v: np.empty(v.shape, np.uint8), stored,
                                            is_leaf=lambda v: hasattr(v, "shape"))
            check_variables(shapes, module, str(path), None if module is not None else target)
            variables = ckptr.restore(path / "state", target)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 — orbax/tensorstore raise many kinds
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is truncated or corrupt: could not read its state "
                              f"({first[:300]})") from None
    want = raw.get("params_sha256")
    if want is not None and params_checksum(variables) != want:
        raise CheckpointError(f"{path} is corrupt: its parameters do not match the checksum in "
                              "metadata.json (changed or damaged files)")
    return jax.device_put(variables)  # once, not host -> device at every call on accelerators



# --------------------------------------------------------------------------- which model


def locate(name: str | os.PathLike | None = None, key: Any = None, **config) -> tuple[str, Any]:
    """What `load_model(name, key=..., **config)` loads: `("default" | "checkpoint", path)` or
    `("arch", name)`.

    An architecture name is an architecture (random weights), even if a directory of that name
    exists, when `key=` or options are given; without them such a clash is refused as
    ambiguous. A path is a path: write `./vgg16` for a directory named like an architecture.
    """
    if name is None or (name == "vgg-mini" and key is None and not config):
        return "default", default_checkpoint()
    if name in TRAINED_HERE and key is None and not config:
        path = shipped_checkpoint(name)
        if path is None:
            raise ValueError(f"{name}'s trained weights are not shipped with this version "
                             f"(train them with {TRAINED_HERE[name]}); "
                             f"load_model({name!r}, key=0) gives random weights")
        return "default", path
    name = os.fspath(name)
    is_arch = _is_arch(name)
    if is_arch and (key is not None or config):
        return "arch", name
    if os.path.isdir(name):
        if is_arch:
            raise ValueError(f"{name!r} is both an architecture and a directory here; pass key= "
                             f"for the architecture with random weights, or './{name}' for the "
                             "checkpoint directory")
        return "checkpoint", Path(name)
    if is_arch:
        return "arch", name
    if os.path.isfile(name):
        raise ValueError(f"{name!r} is a file, not a checkpoint directory; import it first with "
                         "ji.import_weights(src, arch=...) or `jaxinterp weights import`")
    raise ValueError(f"{name!r} is neither a known architecture nor a checkpoint directory; "
                     f"valid architectures: {', '.join(model_lib.ARCHS)}")


def _is_arch(name: str) -> bool:
    return name in model_lib.ARCHS or name in gpt2_lib.ARCHS


def load_model(name: str | os.PathLike | None = None, *, key: Any = None,
               **config) -> model_lib.Model:
    """Loads a model by name or checkpoint directory.

    Args:
      name: None or "vgg-mini" for the shipped default (trained on `shapes`, offline);
        "vit-mini" for the shipped ViT trained on `shapes` (when shipped); "lm-mini" for the
        shipped decoder trained on a procedural language (`text.language`); "gpt2",
        "gpt2-medium", … for a random decoder (`text.LanguageModel`); an image
        architecture name (`vgg11`, `vgg13`, `vgg16`, `vgg19`, `_bn` variants) for random weights;
        or the path of a checkpoint directory written by `save_model` / `import_weights`.
      key: PRNG key (or int seed) for random weights. Given with "vgg-mini", it initializes the
        architecture randomly instead of loading the shipped weights.
      **config: options for random initialization (`num_classes`, `pool`, ...).
    Returns:
      A `Model`.
    """
    kind, where = locate(name, key, **config)
    if kind != "arch":
        return load_checkpoint(where)
    from jaxinterp.checks import as_key

    if where in gpt2_lib.ARCHS:
        from jaxinterp.text.model import init_language_model

        return init_language_model(where, as_key(key), **config)
    return model_lib.init_model(where, as_key(key), **config)


def load_meta(name: str | os.PathLike | None = None) -> tuple[model_lib.Meta, str]:
    """`(Meta, source)` of what `load_model(name)` would load, without reading any weights."""
    kind, where = locate(name)
    if kind == "arch":
        return model_lib.model_meta(where), "random initialization (load_model(arch, key=...))"
    return read_meta(where), str(where)


# --------------------------------------------------------------------------- import


def read_state_dict(src: str | os.PathLike, fmt: str) -> dict[str, np.ndarray]:
    """A flat `name -> array` dict from a `.pth` (torch, weights_only) or `.safetensors` file."""
    src = str(src)
    if fmt == "safetensors":
        try:
            from safetensors.numpy import load_file
        except ImportError:
            raise ImportError("reading .safetensors needs the safetensors package: "
                              "pip install safetensors") from None
        try:
            return dict(load_file(src))
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"could not read {src} as safetensors: {e}") from e
    try:
        import torch
    except ImportError:
        raise ImportError("reading .pth needs PyTorch (pip install torch); or convert the file "
                          "to .safetensors, which needs no torch") from None
    try:
        state = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"could not read {src} as a PyTorch state dict: {e}") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(hasattr(v, "numpy") for v in state.values()):
        raise CheckpointError(f"{src} holds a {type(state).__name__}, not a state dict of tensors")
    return {k.removeprefix("module."): v.detach().float().numpy() if v.is_floating_point()
            else v.numpy() for k, v in state.items()}


def _dense_kernel_from_torch(w: np.ndarray, spec: vgg_lib.LayerSpec, channels: int) -> np.ndarray:
    k = w.T
    if k.ndim == 2 and spec.name == "classifier.0" and k.shape[0] == channels * 49:
        # torch flattens (C, 7, 7); our flatten is NHWC (7, 7, C): permute the input rows
        k = k.reshape(channels, 7, 7, -1).transpose(1, 2, 0, 3).reshape(channels * 49, -1)
    return k


def convert_torch(state: dict[str, np.ndarray], module: vgg_lib.VGG) -> dict:
    """torchvision VGG state dict -> Flax variables (OIHW -> HWIO, dense transposed, CHW flatten)."""
    params, stats, used = {}, {}, set()

    def take(key):
        used.add(key)
        return state[key] if key in state else None

    channels = [v for v in module.cfg if v != "M"][-1]
    for s in module.specs():
        p = vgg_lib.param_name(s.name)
        if s.kind == "conv":
            w, b = take(f"{s.name}.weight"), take(f"{s.name}.bias")
            # a tensor of the wrong rank is kept as is and reported by check_variables
            k = w.transpose(2, 3, 1, 0) if w is not None and w.ndim == 4 else w
            params[p] = {"kernel": k, "bias": b}
        elif s.kind == "bn":
            params[p] = {"scale": take(f"{s.name}.weight"), "bias": take(f"{s.name}.bias")}
            stats[p] = {"mean": take(f"{s.name}.running_mean"),
                        "var": take(f"{s.name}.running_var")}
            used.add(f"{s.name}.num_batches_tracked")
        elif s.kind == "dense":
            w, b = take(f"{s.name}.weight"), take(f"{s.name}.bias")
            k = None if w is None else _dense_kernel_from_torch(w, s, channels)
            params[p] = {"kernel": k, "bias": b}
    variables = {"params": params, **({"batch_stats": stats} if stats else {})}
    variables = {c: {l: {k: v for k, v in d.items() if v is not None} for l, d in layers.items()}
                 for c, layers in variables.items()}
    for k in state:
        if k not in used:  # surface unexpected keys through check_variables
            variables["params"][k] = state[k]
    return variables


def read_keras(src: str | os.PathLike, module: vgg_lib.VGG) -> dict:
    """Keras VGG16/19 `.h5` (layers block1_conv1 … predictions) -> Flax variables."""
    try:
        import h5py
    except ImportError:
        raise ImportError("reading Keras .h5 needs h5py: pip install h5py") from None
    try:
        f = h5py.File(src, "r")
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"could not read {src} as HDF5: {e}") from e
    with f:
        if "layers" in f:  # Keras 3 `.weights.h5`: layers/<name>/vars/{0,1}
            root = f["layers"]
        else:
            root = f["model_weights"] if "model_weights" in f else f
        keras_names = {"fc6": "fc1", "fc7": "fc2", "fc8": "predictions"}
        params = {}
        for s in module.specs():
            if s.kind not in ("conv", "dense"):
                continue
            if s.kind == "conv":
                b, c = s.alias[4:].split("_")
                lname = f"block{b}_conv{c}"
            else:
                lname = keras_names.get(s.alias, s.alias)
            if lname not in root:
                continue  # reported as missing by check_variables
            arrays = _keras_layer_arrays(root[lname])
            kernel = [a for a in arrays if a.ndim >= 2]
            bias = [a for a in arrays if a.ndim == 1]
            params[vgg_lib.param_name(s.name)] = {"kernel": kernel[0], "bias": bias[0]} \
                if kernel and bias else {}
    return {"params": params}


def _keras_layer_arrays(group) -> list[np.ndarray]:
    if "vars" in group:
        return [np.asarray(group["vars"][k]) for k in sorted(group["vars"], key=int)]
    names = group.attrs.get("weight_names")
    if names is not None:
        return [np.asarray(group[n.decode() if isinstance(n, bytes) else n]) for n in names]
    out = []
    group.visititems(lambda _, o: out.append(np.asarray(o)) if hasattr(o, "shape") else None)
    return out


def infer_format(src: str | os.PathLike) -> str:
    suffix = Path(src).suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"cannot tell the format of {src!s} from its suffix; pass fmt= one of "
                         f"{', '.join(map(repr, FORMATS))}")
    return SUFFIXES[suffix]


def import_weights(src: str | os.PathLike, arch: str, fmt: str | None = None,
                   out: str | os.PathLike | None = None, *, classes: list[str] | None = None,
                   overwrite: bool = False) -> model_lib.Model:
    """Imports VGG weights from torchvision (`.pth`, `.safetensors`) or Keras (`.h5`),
    torchvision ResNet weights, or ViT weights from torchvision or google-research's
    vision_transformer (`.npz`).

    Args:
      src: the weight file.
      arch: `vgg11`, `vgg13`, `vgg16`, `vgg19` (`_bn` variants for torchvision), `vgg-mini`,
        `resnet18|34|50|101|152` (torchvision files only), `gpt2` (any Hugging Face
        `GPT2LMHeadModel` / `GPT2Model`: a `model.safetensors` or `.bin`, or the directory
        `save_pretrained` wrote; sizes from the `config.json` beside it, else from the
        shapes with heads of width 64; a `tokenizer.json` beside it is attached when the
        `tokenizers` package is installed; returns a `text.LanguageModel`), or
        `vit_b_16|vit_b_32|vit_l_16|vit_l_32|vit_h_14|vit-mini` (torchvision files, or a
        vision_transformer `.npz`: tanh-approximate GELU and inputs scaled to [-1, 1], as that
        repository's models). ResNets and ViTs are returned as wrapped models; a ViT's input
        size and class count are read off its position embedding and head.
      fmt: "torch", "safetensors", "keras" or "npz"; inferred from the suffix if omitted.
      out: if given, the checkpoint directory to write (atomically).
      classes: class names; ImageNet's when the head has 1,000 outputs, else `class_i`.
      overwrite: replace an existing checkpoint at `out`.
    Returns:
      The imported `Model` (torchvision preprocessing for torch files, caffe BGR for Keras).
    """
    if arch in gpt2_lib.ARCHS:
        return _import_gpt2(src, arch, fmt, out, overwrite)
    fmt = fmt or infer_format(src)
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(map(repr, FORMATS))}, got {fmt!r}")
    if not Path(src).is_file():
        raise FileNotFoundError(f"weight file not found: {src}")
    if arch in vit_lib.ARCHS:
        return _import_vit(src, arch, fmt, out, classes, overwrite)
    if fmt == "npz":
        raise ValueError(f".npz import is for ViTs (vision_transformer's checkpoints), not "
                         f"{arch!r}")
    if arch in resnet_lib.ARCHS:
        return _import_resnet(src, arch, fmt, out, classes, overwrite)
    probe = vgg_lib.vgg(arch)  # validates arch
    if fmt == "keras":
        if probe.batch_norm or probe.head != "classifier":
            raise ValueError(f"Keras import supports vgg16 and vgg19, not {arch!r}")
        variables = read_keras(src, probe)
        pre = model_lib.CAFFE
    else:
        state = read_state_dict(src, fmt)
        variables = convert_torch(state, probe)
        pre = model_lib.TORCHVISION if arch != "vgg-mini" else model_lib.SHAPES
    last = vgg_lib.param_name(probe.specs()[-1].name)
    head = variables["params"].get(last, {})
    num_classes = int(np.shape(head["kernel"])[-1] if "kernel" in head
                      else np.shape(head.get("bias", np.zeros(1000)))[0])
    config = {}
    if probe.head == "classifier":
        hidden = variables["params"].get("classifier_0", {}).get("bias")
        if hidden is not None and hidden.shape[0] != probe.hidden:
            config["hidden"] = int(hidden.shape[0])
    meta = model_lib.model_meta(arch, num_classes, **config)
    if classes is not None:
        if len(classes) != num_classes:
            raise ValueError(f"classes has {len(classes)} names but the file has {num_classes} outputs")
        meta = model_lib.Meta(meta.arch, meta.config, tuple(classes), meta.input_size, pre)
    extra = json.dumps({"source": {"file": Path(src).name, "format": fmt}})
    meta = model_lib.Meta(meta.arch, meta.config, meta.classes, meta.input_size, pre, extra)
    return _finish_import(variables, model_lib.build_module(meta), meta, src, out, overwrite)


def _finish_import(variables, module, meta, src, out, overwrite):
    """Checks imported variables against the architecture, casts them, saves if asked."""
    check_variables(variables, module, str(src))
    m = model_lib.assemble(module, _finite_float32(variables, src), meta)
    if out is not None:
        save_model(m, out, overwrite=overwrite)
    return m


def _finite_float32(variables, src):
    """Imported arrays as float32 device arrays; `CheckpointError` naming any non-finite one."""
    bad = [k for k, v in _flat(variables).items() if not np.isfinite(np.asarray(v)).all()]
    if bad:
        raise CheckpointError(f"{src} has NaN or infinite values in {', '.join(bad)}")
    return jax.tree_util.tree_map(lambda a: jax.numpy.asarray(a, np.float32), variables)


def _import_resnet(src, arch, fmt, out, classes, overwrite):
    if fmt == "keras":
        raise ValueError(f"Keras import supports vgg16 and vgg19, not {arch!r}")
    variables = resnet_lib.convert_torch(read_state_dict(src, fmt), resnet_lib.resnet(arch))
    fc = variables["params"].get("fc", {})
    num_classes = int(np.shape(fc["kernel"])[-1] if "kernel" in fc
                      else np.shape(fc.get("bias", np.zeros(1000)))[0])
    meta = _named_and_sourced(model_lib.model_meta(arch, num_classes), classes, src, fmt)
    return _finish_import(variables, model_lib.build_module(meta), meta, src, out, overwrite)


def _named_and_sourced(meta, classes, src, fmt):
    """`meta` with the user's class names (checked against the head) and the source file."""
    if classes is not None:
        if len(classes) != len(meta.classes):
            raise ValueError(f"classes has {len(classes)} names but the file has "
                             f"{len(meta.classes)} outputs")
        meta = dataclasses.replace(meta, classes=tuple(classes))
    return dataclasses.replace(meta, extra_json=json.dumps(
        {"source": {"file": Path(src).name, "format": fmt}}))


def _read_npz(src) -> dict:
    try:
        with np.load(src, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"could not read {src} as an .npz archive: {e}") from e


def _import_vit(src, arch, fmt, out, classes, overwrite):
    if fmt == "keras":
        raise ValueError(f"Keras import supports vgg16 and vgg19, not {arch!r}")
    probe = vit_lib.vit(arch)
    npz = fmt == "npz"
    raw = _read_npz(src) if npz else read_state_dict(src, fmt)
    variables = (vit_lib.convert_npz if npz else vit_lib.convert_torch)(raw, probe)
    sizes = vit_lib.sizes_from_params(variables["params"], arch)
    config = {"image_size": sizes.get("image_size", probe.image_size)}
    if npz:
        config["approximate_gelu"] = True
    meta = model_lib.model_meta(arch, sizes.get("num_classes"), **config)
    if npz:  # vision_transformer's models take images in [-1, 1]
        meta = dataclasses.replace(meta, preprocess=model_lib.Preprocess((0.5,) * 3, (0.5,) * 3))
    meta = _named_and_sourced(meta, classes, src, fmt)
    return _finish_import(variables, model_lib.build_module(meta), meta, src, out, overwrite)


def _import_gpt2(src, arch, fmt, out, overwrite):
    from jaxinterp.text.model import LanguageModel, abstract_params
    from jaxinterp.text.tokenizer import Tokenizer

    src = Path(src)
    if src.is_dir():
        found = [src / n for n in ("model.safetensors", "pytorch_model.bin") if (src / n).is_file()]
        if not found:
            raise FileNotFoundError(f"{src} holds no model.safetensors or pytorch_model.bin")
        src = found[0]
    if not src.is_file():
        raise FileNotFoundError(f"weight file not found: {src}")
    fmt = fmt or infer_format(src)
    if fmt not in ("torch", "safetensors"):
        raise ValueError(f"GPT-2 weights are read from .safetensors or torch files, not {fmt!r}")
    state = read_state_dict(src, fmt)
    config_file = src.parent / "config.json"
    try:
        if config_file.is_file():
            config = gpt2_lib.GPT2Config.from_dict(json.loads(config_file.read_text()))
        else:
            params, _ = gpt2_lib.convert_hf(state, gpt2_lib.GPT2Config())
            config = gpt2_lib.config_from_params(params)
    except (ValueError, TypeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read the decoder's sizes ({config_file}): {e}") from None
    params, untied = gpt2_lib.convert_hf(state, config)
    if untied:
        raise CheckpointError(f"{src}: {untied[0]}; jaxinterp's GPT-2 ties the head to wte")
    module = gpt2_lib.GPT2LMHeadModel(config)
    check_variables(params, None, str(src), abstract_params(module))
    params = _finite_float32(params, src)
    tokenizer = None
    if (src.parent / "tokenizer.json").is_file():
        try:
            tokenizer = Tokenizer.from_file(src.parent / "tokenizer.json")
        except ImportError:
            tokenizer = None  # optional: the model works on ids
    m = LanguageModel(module, params, tokenizer, arch,
                      {"source": {"file": src.name, "format": fmt}})
    if out is not None:
        save_model(m, out, overwrite=overwrite)
    return m

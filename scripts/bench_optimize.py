"""The `optimize` section of scripts/bench.py: PGD, DeepDream and feature inversion against the
same algorithms written as PyTorch loops (one Python iteration per step, torchattacks-style),
on identical weights.

Each row: the first call of ours (compile included), then the median of 3 timed calls of each
side (after one warm-up call), seconds per call; speed-up = PyTorch / ours.
"""

from __future__ import annotations

import statistics
import time

import jax
import numpy as np


def _median(f, reps=3):
    f()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _first(f):
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def torch_pgd(tm, x, y, eps, alpha, steps, restarts=1, seed=0):
    """torchattacks' PGD (random start, sign step, ε-clamp, [0, 1]-clamp), best of `restarts`."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    best = None
    for _ in range(restarts):
        adv = (x + torch.empty_like(x).uniform_(-eps, eps, generator=g)).clamp(0, 1)
        for _ in range(steps):
            adv.requires_grad_(True)
            cost = F.cross_entropy(tm(adv), y)
            grad = torch.autograd.grad(cost, adv)[0]
            adv = adv.detach() + alpha * grad.sign()
            adv = (x + (adv - x).clamp(-eps, eps)).clamp(0, 1).detach()
        with torch.no_grad():
            wrong = tm(adv).argmax(1) != y
        best = adv if best is None else torch.where(wrong[:, None, None, None], adv, best)
    return best


def torch_dream(tm, x, layer_index, octaves=4, scale=1.4, steps=10, step=1.5 / 255, jitter=9,
                seed=0):
    """The deepdream notebook's loop: octave pyramid, detail carry-over, roll jitter, mean-|g|
    normalized steps, clip to [0, 1]."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    feats = {}
    hook = tm.net.features[layer_index].register_forward_hook(
        lambda m, i, o: feats.__setitem__("a", o))
    bases = [x]
    for _ in range(octaves - 1):
        h, w = bases[-1].shape[2:]
        bases.append(F.interpolate(bases[-1], size=(round(h / scale), round(w / scale)),
                                   mode="bilinear", align_corners=True))
    detail = torch.zeros_like(bases[-1])
    for base in bases[::-1]:
        if detail.shape != base.shape:
            detail = F.interpolate(detail, size=base.shape[2:], mode="bilinear", align_corners=True)
        src = (base + detail).clamp(0, 1)
        for _ in range(steps):
            oy, ox = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=g))
            src = torch.roll(src, (oy, ox), (2, 3)).requires_grad_(True)
            tm(src)
            (feats["a"] ** 2).mean().backward()
            gr = src.grad
            src = src.detach() + step / (gr.abs().flatten(1).mean(1) + 1e-8)[:, None, None, None] * gr
            src = torch.roll(src, (-oy, -ox), (2, 3)).clamp(0, 1)
        detail = src - base
    hook.remove()
    return src


def torch_invert(tm, x, layer_index, steps, lr=0.05, tv=0.5, alpha_w=1e-3, seed=0):
    """Feature inversion as `ji.invert` computes it: pixels (straight-through clip), Adam,
    relative feature loss + TV(β = 2) + α-norm(6)."""
    import torch

    feats = {}
    hook = tm.net.features[layer_index].register_forward_hook(
        lambda m, i, o: feats.__setitem__("a", o))
    with torch.no_grad():
        tm(x)
        target = feats["a"].clone()
    g = torch.Generator().manual_seed(seed)
    p = (0.01 * torch.randn(x.shape, generator=g)).requires_grad_(True)
    opt = torch.optim.Adam([p], lr=lr)
    for _ in range(steps):
        raw = p + 0.5
        img = raw + (raw.clamp(0, 1) - raw).detach()
        tm(img)
        a = feats["a"]
        match = ((a - target) ** 2).flatten(1).sum(1) / (target ** 2).flatten(1).sum(1)
        dy = img[:, :, 1:, :-1] - img[:, :, :-1, :-1]
        dx = img[:, :, :-1, 1:] - img[:, :, :-1, :-1]
        prior = tv * (dx ** 2 + dy ** 2).flatten(1).mean(1) + \
            alpha_w * ((2 * img - 1).abs() ** 6).flatten(1).mean(1)
        loss = (match + prior).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    hook.remove()
    return p


def torch_style_loop(tm, content, style, content_idx, style_idx, evaluations, normalization,
                     style_weight, init="content", seed=0):
    """The PyTorch tutorial's loop: the network truncated after the last loss layer,
    `optim.LBFGS` defaults (lr 1, no line search, 20 iterations per `step`), the input clamped
    to [0, 1] in the closure; `evaluations` closure calls. Returns (seconds, losses per call)."""
    import torch
    import torch.nn.functional as F

    last = max([*style_idx, content_idx if content_idx is not None else 0])
    layers = tm.net.features[:last + 1]

    def feats(x):
        out, h = {}, (x - tm.mean) / tm.std
        for i, layer in enumerate(layers):
            h = layer(h)
            out[i] = h
        return out

    def gram(f):
        a, b, c, d = f.size()
        g = f.view(a * b, c * d) @ f.view(a * b, c * d).t()
        return g / (a * b * c * d) if normalization == "tutorial" else g / (c * d)

    def layer_loss(g, t):
        return F.mse_loss(g, t) if normalization == "tutorial" else \
            ((g - t) ** 2).sum() / (4 * g.shape[0] ** 2)

    with torch.no_grad():
        fs, fc = feats(style), feats(content)
        targets = {i: gram(fs[i]) for i in style_idx}
        ctarget = fc[content_idx] if content_idx is not None else None
    g = torch.Generator().manual_seed(seed)
    x = (content.clone() if init == "content" else torch.rand(content.shape, generator=g))
    x.requires_grad_(True)
    opt = torch.optim.LBFGS([x])
    w = 1.0 if normalization == "tutorial" else 1.0 / len(style_idx)
    losses = []

    def closure():
        with torch.no_grad():
            x.clamp_(0, 1)
        opt.zero_grad()
        f = feats(x)
        loss = style_weight * sum(w * layer_loss(gram(f[i]), targets[i]) for i in style_idx)
        if ctarget is not None:
            loss = loss + F.mse_loss(f[content_idx], ctarget)
        loss.backward()
        losses.append(loss.item())
        return loss

    t0 = time.perf_counter()
    while len(losses) < evaluations:
        opt.step(closure)
    return time.perf_counter() - t0, losses[:evaluations]


def bench_style(setup, quick) -> list[dict]:
    """Texture synthesis and style transfer against the PyTorch tutorial's L-BFGS loop:
    seconds per iteration, and seconds to reach the loss the tutorial's loop ends with; ours
    with optimizer="lbfgs" (zoom line search) and "lbfgs-fixed" (the tutorial's algorithm)."""
    import torch

    import jaxinterp as ji

    torch.set_grad_enabled(True)
    rows = []
    cases = [("texture", "vgg-mini", 64, 100), ("style", "vgg-mini", 64, 100)]
    if not quick:
        cases += [("style", "vgg16", 128, 100)]
    for kind, arch, size, n in cases:
        jm, tm, net, _, _, _ = setup(arch, 1)
        for p in tm.parameters():
            p.requires_grad_(False)
        convs = [i for i, s in enumerate(jm.specs) if s.kind == "conv"]
        style_idx, content_idx = convs[:5], (convs[3] if kind == "style" else None)
        d = ji.data.shapes(jax.random.key(5), 2, size=size).images
        content, style = np.asarray(d[:1]), np.asarray(d[1:])
        to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))  # noqa: E731
        norm = "paper" if kind == "texture" else "tutorial"
        sw = 1.0 if kind == "texture" else 1e6
        names = [f"features.{i}" for i in style_idx]
        runs = sorted(torch_style_loop(tm, to_t(content), to_t(style), content_idx, style_idx, n,
                                       norm, sw, init="noise" if kind == "texture" else "content",
                                       seed=s) for s in range(3))
        t_theirs, theirs_losses = runs[1]  # the median time
        for opt in ("lbfgs", "lbfgs-fixed"):
            rows.append(_style_row(jm, kind, arch, size, n, opt, names, content_idx, content,
                                   style, t_theirs, theirs_losses))
    return rows


def _style_row(jm, kind, arch, size, n, opt, names, content_idx, content, style, t_theirs,
               theirs_losses):
    import jaxinterp as ji

    if kind == "texture":
        call = lambda: ji.texture(jm, style, layers=names, steps=n, key=0,  # noqa: E731
                                  optimizer=opt)
    else:
        call = lambda: ji.style_transfer(jm, content, style, style_layers=names,  # noqa: E731
                                         content_layer=f"features.{content_idx}", steps=n,
                                         optimizer=opt)
    first = _first(lambda: jax.block_until_ready(call().images))
    t_ours = _median(lambda: jax.block_until_ready(call().images))
    ours_losses = np.asarray(call().losses[:, 0])
    goal = min(theirs_losses)
    reached = np.nonzero(ours_losses <= goal)[0]
    k = int(reached[0]) + 1 if reached.size else None
    r = {"name": f"{kind} {opt}", "model": f"{arch} {size} px", "n": 1, "iterations": n,
         "ours_s": t_ours, "torch_s": t_theirs, "speedup": t_theirs / t_ours,
         "ours_first_s": first, "ours_final_loss": float(ours_losses[-1]),
         "torch_final_loss": float(goal), "ours_iterations_to_torch_loss": k,
         "ours_s_to_torch_loss": None if k is None else t_ours * k / n,
         "torch_s_to_its_loss": t_theirs * (int(np.argmin(theirs_losses)) + 1) / n}
    print(r, flush=True)
    return r


def bench_optimize(setup, quick) -> list[dict]:
    """Rows: PGD (vgg-mini, 64 images; 10 and 40 steps; 10 steps x 4 restarts), DeepDream
    (vgg-mini 16 images at 64 px; VGG16 1 image at 224 px), inversion (vgg-mini 4 images)."""
    import torch

    import jaxinterp as ji

    torch.set_grad_enabled(True)
    rows = []

    def row(name, model, n, ours, theirs, **extra):
        first = _first(ours)
        t_ours, t_theirs = _median(ours), _median(theirs)
        r = {"name": name, "model": model, "n": n, "ours_s": t_ours, "torch_s": t_theirs,
             "speedup": t_theirs / t_ours, "ours_first_s": first, **extra}
        print(r, flush=True)
        rows.append(r)

    jm, tm, net, x, _, _ = setup("vgg-mini", 64)
    for p in tm.parameters():
        p.requires_grad_(False)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    y = np.array(jm(x)[0].argmax(-1))  # writable: torch.from_numpy shares it
    yt = torch.from_numpy(y).long()
    eps = 8 / 255
    for steps, restarts in ((10, 1), (40, 1), (10, 4)):
        if quick and steps == 40:
            continue
        ours = lambda: jax.block_until_ready(ji.pgd(jm, x, y, eps=eps, steps=steps,  # noqa: E731
                                                    restarts=restarts, early_stop=False))
        theirs = lambda: torch_pgd(tm, xt, yt, eps, 2.5 * eps / steps, steps, restarts)  # noqa: E731
        row(f"PGD L∞ {steps} steps" + (f" x {restarts} restarts" if restarts > 1 else ""),
            "vgg-mini 64 px", 64, ours, theirs)

    xd, xdt = x[:16], xt[:16]
    ours = lambda: jax.block_until_ready(ji.deepdream(jm, xd, "features.16", key=0))  # noqa: E731
    theirs = lambda: torch_dream(tm, xdt, 16)  # noqa: E731
    row("DeepDream 4 octaves x 10 steps", "vgg-mini 64 px", 16, ours, theirs)

    xi, xit = x[:4], xt[:4]
    isteps = 100 if quick else 300
    ours = lambda: jax.block_until_ready(ji.invert(jm, xi, "features.3", steps=isteps).images)  # noqa: E731
    theirs = lambda: torch_invert(tm, xit, 3, isteps)  # noqa: E731
    row(f"inversion {isteps} steps (pool1)", "vgg-mini 64 px", 4, ours, theirs)

    if not quick:
        jm, tm, net, x, _, _ = setup("vgg16", 1)
        for p in tm.parameters():
            p.requires_grad_(False)
        xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        ours = lambda: jax.block_until_ready(ji.deepdream(jm, x, "features.22", key=0))  # noqa: E731
        theirs = lambda: torch_dream(tm, xt, 22, jitter=32)  # noqa: E731
        row("DeepDream 4 octaves x 10 steps (relu4_3)", "VGG16 224 px", 1, ours, theirs)
    return rows

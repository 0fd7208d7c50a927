"""A plain-torch ViT with torchvision's `VisionTransformer` layout and names (no torchvision):
the parity reference for jaxinterp's ViT, and Chefer et al.'s explanations transcribed on it."""

from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import jaxinterp as ji
from jaxinterp.models.vit import CONFIGS


class MLPBlock(nn.Sequential):
    """torchvision's `MLPBlock`: Linear, GELU, Dropout, Linear, Dropout (`mlp.0`, `mlp.3`)."""

    def __init__(self, d, mlp):
        super().__init__(nn.Linear(d, mlp), nn.GELU(), nn.Dropout(0.0), nn.Linear(mlp, d),
                         nn.Dropout(0.0))


class EncoderBlock(nn.Module):
    def __init__(self, heads, d, mlp):
        super().__init__()
        self.num_heads = heads
        self.ln_1 = nn.LayerNorm(d, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(d, eps=1e-6)
        self.mlp = MLPBlock(d, mlp)
        self.record = None  # a dict: the forward runs attention by hand and keeps its parts
        self.divide = None  # LXT's divide_gradient, applied to q, k, v (AttnLRP)

    def attention(self, x):
        """`self_attention(x, x, x)` written out, keeping q, k, v and the probabilities (with
        their gradient) in `self.record`."""
        mha, n, t, d = self.self_attention, *x.shape
        h = self.num_heads
        q, k, v = F.linear(x, mha.in_proj_weight, mha.in_proj_bias).chunk(3, -1)
        if self.divide is not None:  # LXT's attention wrapper: query / 4, key / 4, value / 2
            q, k, v = self.divide(q, 4), self.divide(k, 4), self.divide(v, 2)
        split = lambda z: z.reshape(n, t, h, d // h).transpose(1, 2)  # noqa: E731
        a = torch.softmax(split(q) @ split(k).transpose(-1, -2) / (d // h) ** 0.5, -1)
        if a.requires_grad:
            a.retain_grad()
        o = (a @ split(v)).transpose(1, 2).reshape(n, t, d)
        if self.record is not None:
            self.record.update(h1=x, q=q, k=k, v=v, a=a, o=o)
        return mha.out_proj(o)

    def forward(self, inp):
        x = self.ln_1(inp)
        if self.record is None and self.divide is None:
            x, _ = self.self_attention(x, x, x, need_weights=False)
        else:
            if self.record is not None:
                self.record["x_in"] = inp
            x = self.attention(x)
        x = x + inp
        y = self.ln_2(x)
        if self.record is not None:
            self.record.update(y=x, h2=y, u=self.mlp[0](y))
        y = self.mlp(y)
        if self.record is not None:
            self.record["m"] = y
        return x + y


class Encoder(nn.Module):
    def __init__(self, seq, layers, heads, d, mlp):
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.zeros(1, seq, d))
        self.layers = nn.Sequential(OrderedDict(
            (f"encoder_layer_{i}", EncoderBlock(heads, d, mlp)) for i in range(layers)))
        self.ln = nn.LayerNorm(d, eps=1e-6)

    def forward(self, x):
        return self.ln(self.layers(x + self.pos_embedding))


class TorchViT(nn.Module):
    """torchvision's `VisionTransformer`; `forward` takes normalized NCHW images."""

    def __init__(self, arch, num_classes=1000, image_size=None):
        super().__init__()
        patch, layers, heads, d, mlp = CONFIGS[arch]
        self.image_size = image_size or (64 if arch == "vit-mini" else 224)
        self.patch = patch
        self.conv_proj = nn.Conv2d(3, d, patch, patch)
        self.class_token = nn.Parameter(torch.zeros(1, 1, d))
        self.encoder = Encoder((self.image_size // patch) ** 2 + 1, layers, heads, d, mlp)
        self.heads = nn.Sequential(OrderedDict(head=nn.Linear(d, num_classes)))

    def forward(self, x):
        n = x.shape[0]
        x = self.conv_proj(x).reshape(n, self.conv_proj.out_channels, -1).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], 1)
        self.encoded = self.encoder(x)
        return self.heads(self.encoded[:, 0])

    def recording(self, on=True):
        for blk in self.encoder.layers:
            blk.record = {} if on else None
        return [blk.record for blk in self.encoder.layers]


def seeded_vit(arch, seed, num_classes=10, image_size=None, sharpness=3.0):
    """A TorchViT with every parameter drawn from a seeded normal (LayerNorm scales about 1),
    scaled so that activations stay O(1) and attention is not uniform (`sharpness` scales the
    query / key / value weights: sharp attention over 12 blocks makes the logits amplify
    input rounding ~1000x, so deep twins take a milder one)."""
    torch.manual_seed(seed)
    net = TorchViT(arch, num_classes, image_size)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln.weight")):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif p.ndim == 1 or name.endswith(("class_token", "pos_embedding")):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                fan_in = p[0].numel()
                scale = sharpness if "in_proj" in name else 1.0
                p.copy_(torch.randn_like(p) * scale / fan_in ** 0.5)
    return net.eval()


class Normalized(nn.Module):
    """Images in [0, 1] NCHW -> the twin's input, as jaxinterp's preprocessing."""

    def __init__(self, net, mean, std):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).reshape(1, 3, 1, 1))

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


def export_vit(net, arch, path, fmt="safetensors"):
    """Writes the twin's state dict (`.safetensors` or `.pth`) and imports it into jaxinterp."""
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    if fmt == "safetensors":
        from safetensors import torch as safetensors_torch

        safetensors_torch.save_file(state, str(path))
    else:
        torch.save(state, str(path))
    jm = ji.import_weights(path, arch=arch)
    return jm, Normalized(net, jm.preprocess.mean, jm.preprocess.std).eval()


# --------------------------------------------------------------------------- Chefer et al.
# Transcribed from hila-chefer/Transformer-Explainability: `modules/layers_ours.py` (the
# relprop rules, autograd as there), `baselines/ViT/ViT_LRP.py` (the block / attention order),
# `baselines/ViT/ViT_explanation_generator.py` (rollout, `transformer_attribution`), and
# Transformer-MM-Explainability's ViT notebook (`generate_relevance`, ICCV 2021). Batch 1.


def safe_divide(a, b):
    den = b.clamp(min=1e-9) + b.clamp(max=1e-9)
    den = den + den.eq(0).type(den.type()) * 1e-9
    return a / den * b.ne(0).type(b.type())


def _leaf(x):
    return x.detach().clone().requires_grad_(True)


def linear_relprop(x, weight, r, alpha=1):
    x = _leaf(x)
    beta = alpha - 1
    pw, nw = torch.clamp(weight, min=0), torch.clamp(weight, max=0)
    px, nx = torch.clamp(x, min=0), torch.clamp(x, max=0)

    def f(w1, w2, x1, x2):
        z1, z2 = F.linear(x1, w1), F.linear(x2, w2)
        s1 = safe_divide(r, z1 + z2)
        s2 = safe_divide(r, z1 + z2)
        c1 = x1 * torch.autograd.grad(z1, x1, s1, retain_graph=True)[0]
        c2 = x2 * torch.autograd.grad(z2, x2, s2, retain_graph=True)[0]
        return c1 + c2

    return alpha * f(pw, nw, px, nx) - beta * f(nw, pw, px, nx)


def simple_relprop(forward, xs, r):
    xs = [_leaf(x) for x in xs]
    z = forward(*xs)
    c = torch.autograd.grad(z, xs, safe_divide(r, z), retain_graph=True)
    return [x * g for x, g in zip(xs, c)]


def add_relprop(a_in, b_in, r):
    a, b = simple_relprop(lambda p, q: torch.add(p, q), [a_in, b_in], r)
    a_sum, b_sum = a.sum(), b.sum()
    a_fact = safe_divide(a_sum.abs(), a_sum.abs() + b_sum.abs()) * r.sum()
    b_fact = safe_divide(b_sum.abs(), a_sum.abs() + b_sum.abs()) * r.sum()
    return a * safe_divide(a_fact, a.sum()), b * safe_divide(b_fact, b.sum())


def clone_relprop(x, r1, r2):
    x = _leaf(x)
    z = [x, x]
    c = torch.autograd.grad(z, x, [safe_divide(r1, x), safe_divide(r2, x)],
                            retain_graph=True)[0]
    return x * c


def chefer_attention_cams(net, records, index):
    """`blk.attn.get_attn_cam()` of every block after `model.relprop(one_hot, alpha=1)`."""
    d = net.heads.head.in_features
    r = torch.zeros(1, net.heads.head.out_features, dtype=torch.float64)
    r[0, index] = 1
    cls = net.encoded[:, 0]
    r = linear_relprop(cls, net.heads.head.weight, r)  # head
    r = simple_relprop(lambda e: torch.index_select(e, 1, torch.tensor([0])),  # pool
                       [net.encoded], r.unsqueeze(1))[0]
    cams = [None] * len(records)
    for i in reversed(range(len(records))):  # norm: identity
        blk, rec = net.encoder.layers[i], records[i]
        cam1, cam2 = add_relprop(rec["y"], rec["m"], r)  # add2
        g = F.gelu(rec["u"])
        cam2 = linear_relprop(g, blk.mlp[3].weight, cam2)  # fc2; GELU: identity
        cam2 = linear_relprop(rec["h2"], blk.mlp[0].weight, cam2)  # fc1; norm2: identity
        r = clone_relprop(rec["y"], cam1, cam2)  # clone2
        cam1, cam2 = add_relprop(rec["x_in"], rec["y"] - rec["x_in"], r)  # add1
        h = blk.num_heads
        n, t, _ = rec["o"].shape
        heads = lambda z: z.reshape(n, t, h, d // h).transpose(1, 2)  # noqa: E731
        cam = linear_relprop(rec["o"], blk.self_attention.out_proj.weight, cam2)  # proj
        cam = heads(cam)
        a_cam, v_cam = simple_relprop(lambda a, v: torch.einsum("bhij,bhjd->bhid", a, v),
                                      [rec["a"], heads(rec["v"])], cam)  # matmul2
        a_cam, v_cam = a_cam / 2, v_cam / 2
        cams[i] = a_cam  # save_attn_cam; softmax: identity
        q_cam, k_cam = simple_relprop(lambda q, k: torch.einsum("bhid,bhjd->bhij", q, k),
                                      [heads(rec["q"]), heads(rec["k"])], a_cam)  # matmul1
        q_cam, k_cam = q_cam / 2, k_cam / 2
        qkv = torch.cat([z.transpose(1, 2).reshape(n, t, d) for z in (q_cam, k_cam, v_cam)], -1)
        cam2 = linear_relprop(rec["h1"], blk.self_attention.in_proj_weight, qkv)  # qkv
        r = clone_relprop(rec["x_in"], cam1, cam2)  # norm1: identity; clone1
    return cams


def compute_rollout_attention(all_layer_matrices, start_layer=0):
    num_tokens = all_layer_matrices[0].shape[1]
    batch_size = all_layer_matrices[0].shape[0]
    eye = torch.eye(num_tokens, dtype=all_layer_matrices[0].dtype).expand(
        batch_size, num_tokens, num_tokens)
    all_layer_matrices = [m + eye for m in all_layer_matrices]
    all_layer_matrices = [m / m.sum(dim=-1, keepdim=True) for m in all_layer_matrices]
    joint_attention = all_layer_matrices[start_layer]
    for i in range(start_layer + 1, len(all_layer_matrices)):
        joint_attention = all_layer_matrices[i].bmm(joint_attention)
    return joint_attention


def chefer(tm, x_nchw, index, method, start_layer=0, head_fusion="mean", discard_ratio=0.0):
    """One image's class-token row over the patches, `[P]`, by Chefer's code (and
    vit-explain's head fusion / discard ratio for the rollout)."""
    net = tm.net
    records = net.recording(True)
    try:
        out = tm(x_nchw)
        one_hot = torch.zeros_like(out)
        one_hot[0, index] = 1
        net.zero_grad()
        (one_hot * out).sum().backward(retain_graph=True)
        if method == "rollout":
            mats = []
            for rec in records:
                a = rec["a"].detach()
                fused = {"mean": lambda: a.sum(dim=1) / a.shape[1],
                         "max": lambda: a.max(dim=1)[0], "min": lambda: a.min(dim=1)[0]}[
                    head_fusion]()
                flat = fused.view(fused.size(0), -1)
                _, idx = flat.topk(int(flat.size(-1) * discard_ratio), -1, False)
                idx = idx[idx != 0]
                flat[0, idx] = 0
                mats.append(fused)
            return compute_rollout_attention(mats, start_layer)[0, 0, 1:]
        if method == "iccv2021":
            t = records[0]["a"].shape[-1]
            r = torch.eye(t, dtype=records[0]["a"].dtype)
            for rec in records:
                cam = (rec["a"].grad[0] * rec["a"][0]).clamp(min=0).mean(dim=0)
                r = r + cam @ r
            return r[0, 1:].detach()
        cams = chefer_attention_cams(net, records, index)
        mats = []
        for rec, cam in zip(records, cams):
            grad = rec["a"].grad[0]
            mats.append((grad * cam[0]).clamp(min=0).mean(dim=0).unsqueeze(0))
        return compute_rollout_attention(mats, start_layer)[0, 0, 1:].detach()
    finally:
        net.recording(False)


def to_npz(jm, path):
    """jaxinterp ViT params written in google-research/vision_transformer's `.npz` layout."""
    p = jax_to_numpy(jm.variables["params"])
    enc, d = p["encoder"], p["conv_proj"]["kernel"].shape[-1]
    layers = enc["layers"]
    heads = jm.apply.module.num_heads
    out = {"cls": p["class_token"], "embedding/kernel": p["conv_proj"]["kernel"],
           "embedding/bias": p["conv_proj"]["bias"],
           "Transformer/posembed_input/pos_embedding": enc["pos_embedding"],
           "Transformer/encoder_norm/scale": enc["ln"]["scale"],
           "Transformer/encoder_norm/bias": enc["ln"]["bias"],
           "head/kernel": p["heads"]["head"]["kernel"], "head/bias": p["heads"]["head"]["bias"]}
    for i in range(len(layers)):
        b, s = layers[f"encoder_layer_{i}"], f"Transformer/encoderblock_{i}"
        a = f"{s}/MultiHeadDotProductAttention_1"
        out.update({f"{s}/LayerNorm_0/scale": b["ln_1"]["scale"],
                    f"{s}/LayerNorm_0/bias": b["ln_1"]["bias"],
                    f"{s}/LayerNorm_2/scale": b["ln_2"]["scale"],
                    f"{s}/LayerNorm_2/bias": b["ln_2"]["bias"],
                    f"{a}/out/kernel": b["self_attention"]["out_proj"]["kernel"].reshape(
                        heads, d // heads, d),
                    f"{a}/out/bias": b["self_attention"]["out_proj"]["bias"],
                    f"{s}/MlpBlock_3/Dense_0/kernel": b["mlp"]["0"]["kernel"],
                    f"{s}/MlpBlock_3/Dense_0/bias": b["mlp"]["0"]["bias"],
                    f"{s}/MlpBlock_3/Dense_1/kernel": b["mlp"]["3"]["kernel"],
                    f"{s}/MlpBlock_3/Dense_1/bias": b["mlp"]["3"]["bias"]})
        for name in ("query", "key", "value"):
            out[f"{a}/{name}/kernel"] = b["self_attention"][name]["kernel"].reshape(
                d, heads, d // heads)
            out[f"{a}/{name}/bias"] = b["self_attention"][name]["bias"].reshape(heads, d // heads)
    np.savez(path, **out)


def jax_to_numpy(tree):
    return {k: jax_to_numpy(v) if isinstance(v, dict) else np.asarray(v) for k, v in tree.items()}


def lxt_patched(net, composite):
    """A copy of the twin with LXT's own patch functions put on it, instance by instance (LXT
    patches classes, which would reach every test): AttnLRP ("attn_lrp") or CP-LRP ("cp_lrp")."""
    import copy
    import types

    from lxt_shim import import_lxt

    rules, patches = import_lxt()
    net = copy.deepcopy(net)
    norms = [net.encoder.ln] + [m for b in net.encoder.layers for m in (b.ln_1, b.ln_2)]
    for ln in norms:
        ln.forward = types.MethodType(patches.layer_norm_forward, ln)
    for blk in net.encoder.layers:
        gelu = blk.mlp[1]
        gelu.original_forward = gelu.forward
        gelu.forward = types.MethodType(patches.non_linear_forward, gelu)
        if composite == "attn_lrp":
            blk.divide = rules.divide_gradient
        else:
            mha = blk.self_attention
            mha.original_forward = mha.forward
            mha.forward = types.MethodType(patches.cp_multi_head_attention_forward, mha)
    return net


def lxt_gradient_x_input(patched, x_norm, index):
    """LXT's Gradient*Input recipe on a patched twin: `(x * x.grad)` after `y[target].backward()`
    (a batch: the targets' sum), and the targets' logits."""
    x = x_norm.detach().clone().requires_grad_(True)
    out = patched(x)
    picked = out[torch.arange(len(out)), torch.as_tensor(index).reshape(-1)]
    picked.sum().backward()
    return (x * x.grad).detach(), picked.detach()


def lxt_relevance(net, x_norm, index, composite):
    """LXT's efficient AttnLRP ("attn_lrp") or CP-LRP ("cp_lrp") relevance at the normalized
    input of one image, `[1, 3, H, W]`, and its target logit."""
    r, logit = lxt_gradient_x_input(lxt_patched(net, composite), x_norm, index)
    return r, logit[0]

#!/usr/bin/python3
"""PyTorch reference side of scripts/bench.cs (run by it; needs Debian's python3-torch at /usr/bin/python3).

The same models as Carso (SmallCnn as lib/Models/SmallCnn.cs builds it; the CARSO purifier's conditioning,
encoder and decoder as lib/Defence/Purifier.cs builds them, with the same parameter names so that the state
dicts Carso exports with StateDicts.Export (.pt) load strictly), the same weights, the same images (the first
test images of Fashion-MNIST, read from the gzipped IDX files), the same thread count, and the same operations:

  classifier-grad       SmallCnn forward + backward to the input (summed cross-entropy)
  pgd-step              one Linf PGD step (gradient, sign step, projection), no random start
  apgd-ce               APGD-CE, 100 iterations, 1 restart, EOT 1: a minimal port of lib/Attacks/Apgd.cs (random
                        start on the sphere, momentum 0.75, the same checkpoints and step-size rule, best-point and
                        misclassification bookkeeping; only points the model classifies correctly are attacked)
  carso-infer-nN        CARSO inference under no_grad with N samples (the ExpShare aggregation, CarsoSettings default)
  carso-grad-n8         CARSO end to end, forward + backward to the input, N = 8
  purifier-step         one purifier training step (Adam in Lookahead), on a precomputed mixed batch
  purifier-step-mixed   MixedBatch (FGSM eps/2, FGSM eps, PGD-40 eps/2, PGD-40 eps on half the batch) + the step

Protocol (line-delimited JSON): on start it prints {"ready": true, ...} with versions and the check outputs (the
classifier's logits and CARSO's deterministic sample logits on the first check images); then for each request line
{"op": NAME, "batch": B, "repeats": R, "warmup": W, ...} it runs W untimed and R timed calls and prints
{"op": NAME, "batch": B, "seconds": [...], "peakRssMiB": ...}; {"op": "quit"} ends it.
This process has glibc's default malloc settings (Carso tunes them, see lib/Runtime/NativeMemory.cs): it is what a
PyTorch user runs.
"""
import argparse
import copy
import ctypes
import os
import re
import gzip
import json
import math
import resource
import sys
import time
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from smallcnn_torch import SmallCnn  # scripts/smallcnn_torch.py: lib/Models/SmallCnn.cs in PyTorch


# ---- models --------------------------------------------------------------------------------------------------

def halved(n, times):
    for _ in range(times):
        n = (n + 1) // 2
    return n


def upsampling_sizes(target, base, stages=None):
    sizes = [target]
    while (len(sizes) <= stages) if stages is not None else (sizes[-1] > base):
        sizes.append((sizes[-1] + 1) // 2)
    return sizes[::-1]


class Crop(nn.Module):
    def __init__(self, h, w):
        super().__init__()
        self.h, self.w = h, w

    def forward(self, x):
        return x[:, :, :self.h, :self.w]


def normalised(norm, s):
    """Purifier.Normalised: with batchNorm, the norm then the LeakyReLU (state-dict prefix act.norm); else the LeakyReLU."""
    act = nn.LeakyReLU(s["negativeSlope"])
    return nn.Sequential(OrderedDict([("norm", norm), ("act", act)])) if s.get("batchNorm", False) else act


class Purifier(nn.Module):
    """lib/Defence/Purifier.cs, module for module and name for name (with or without its BatchNorm layers)."""

    def __init__(self, s, layer_shapes, input_shape):
        super().__init__()
        slope = s["negativeSlope"]
        bias = not s.get("batchNorm", False)
        c, h, w = input_shape
        compressed = [self.compressor(shape, s) for shape in layer_shapes]
        self.compressors = nn.ModuleList([m for m, _ in compressed])
        self.condition = nn.Linear(sum(f for _, f in compressed), s["conditioningSize"], bias=bias)
        self.condition_act = normalised(nn.BatchNorm1d(s["conditioningSize"]), s)
        self.encoder = nn.Sequential(OrderedDict([
            ("conv_0", nn.Conv2d(c, s["encoderChannels1"], 3, stride=2, padding=1, bias=bias)),
            ("act_0", normalised(nn.BatchNorm2d(s["encoderChannels1"]), s)),
            ("conv_1", nn.Conv2d(s["encoderChannels1"], s["encoderChannels2"], 3, stride=2, padding=1, bias=bias)),
            ("act_1", normalised(nn.BatchNorm2d(s["encoderChannels2"]), s)),
            ("flatten", nn.Flatten())]))
        encoded = s["encoderChannels2"] * halved(h, 2) * halved(w, 2)
        self.mu = nn.Linear(encoded + s["conditioningSize"], s["latentSize"])
        self.logvar = nn.Linear(encoded + s["conditioningSize"], s["latentSize"])
        heights, widths = upsampling_sizes(h, s["decoderBaseSize"]), upsampling_sizes(w, s["decoderBaseSize"])
        stages = max(len(heights), len(widths)) - 1
        heights, widths = upsampling_sizes(h, s["decoderBaseSize"], stages), upsampling_sizes(w, s["decoderBaseSize"], stages)
        self.base = (s["decoderChannels"], heights[0], widths[0])
        self.decoder_input = nn.Linear(s["latentSize"] + s["conditioningSize"], self.base[0] * self.base[1] * self.base[2])
        self.decoder_input_act = nn.LeakyReLU(slope)
        modules, channels = [], s["decoderChannels"]
        for k in range(1, stages + 1):
            nxt = max(channels // 2 // 16 * 16, 16)
            modules.append((f"up_{k - 1}", nn.ConvTranspose2d(channels, nxt, 4, stride=2, padding=1)))
            if heights[k] % 2 == 1 or widths[k] % 2 == 1:
                modules.append((f"crop_{k - 1}", Crop(heights[k], widths[k])))
            modules.append((f"act_{k - 1}", nn.LeakyReLU(slope)))
            channels = nxt
        modules.append(("conv", nn.ConvTranspose2d(channels, c, 3, stride=1, padding=1)))
        self.decoder = nn.Sequential(OrderedDict(modules))
        self.output = nn.Sigmoid()

    @staticmethod
    def compressor(shape, s):
        bias = not s.get("batchNorm", False)
        if len(shape) != 3:
            size = math.prod(shape)
            return nn.Sequential(OrderedDict([
                ("flatten", nn.Flatten()), ("linear", nn.Linear(size, s["compressorFeatures"], bias=bias)),
                ("act", normalised(nn.BatchNorm1d(s["compressorFeatures"]), s))])), s["compressorFeatures"]
        cc = s["compressorChannels"]
        layers = [("reduce", nn.Conv2d(shape[0], cc, 1, bias=bias)), ("act", normalised(nn.BatchNorm2d(cc), s))]
        h, w, i = shape[1], shape[2], 0
        while max(h, w) > s["compressedSize"]:
            layers.append((f"down_{i}", nn.Conv2d(cc, cc, 3, stride=2, padding=1, bias=bias)))
            layers.append((f"act_{i}", normalised(nn.BatchNorm2d(cc), s)))
            h, w, i = halved(h, 1), halved(w, 1), i + 1
        layers.append(("flatten", nn.Flatten()))
        return nn.Sequential(OrderedDict(layers)), cc * h * w

    def condition_of(self, layers):
        features = torch.cat([m(t) for m, t in zip(self.compressors, layers)], 1)
        return self.condition_act(self.condition(features))

    def encode(self, x, c):
        joint = torch.cat([self.encoder(x), c], 1)
        return self.mu(joint), self.logvar(joint)

    def decode(self, z, c):
        h = self.decoder_input_act(self.decoder_input(torch.cat([z, c], 1)))
        return self.output(self.decoder(h.view(z.shape[0], *self.base)))


def blas_in_use():
    """The BLAS this process multiplies on, read from the process itself: torch's build setting (BLAS_INFO) names only
    the interface it was built against (Debian: "generic", i.e. whichever libblas.so.3 the system's alternatives
    select), so after a matrix product the BLAS libraries mapped into the process are listed, and an OpenBLAS one is
    asked for its own configuration (openblas_get_config)."""
    torch.ones(64, 64) @ torch.ones(64, 64)
    build = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
    mapped = sorted({os.path.realpath(line.split()[-1]) for line in open("/proc/self/maps")
                     if len(line.split()) >= 6 and re.search(r"(blas|mkl|blis|atlas)[^/]*\.so", line.split()[-1])})
    libraries = {}  # what each mapped library says it is -> its paths (OpenBLAS maps as libblas.so.3 and itself)
    for lib in mapped:
        name = "reference BLAS (netlib)" if "/blas/" in lib else os.path.basename(lib)
        try:
            get_config = ctypes.CDLL(lib).openblas_get_config
            get_config.restype = ctypes.c_char_p
            name = get_config().decode().strip()
        except (OSError, AttributeError):
            pass
        libraries.setdefault(name, []).append(lib)
    described = [f"{name} ({', '.join(paths)})" for name, paths in libraries.items()]
    return {"blas": "; ".join(described) or "none mapped", "blasBuildInfo": build.group(1) if build else None,
            "openBlas": any(name.lower().startswith("openblas") for name in libraries)}


def peel(logits):
    """lib/Defence/Aggregation.cs ExpShare (formerly "peel"): [B, K, N] -> [B, K]."""
    b, k = logits.shape[0], logits.shape[1]
    log_s = logits.logsumexp(2)
    own = torch.eye(k, dtype=torch.bool)
    others = log_s.unsqueeze(1).expand(b, k, k).masked_fill(own, float("-inf")).logsumexp(2)
    return log_s - others


def carso_sample_logits(classifier, purifier, layer_names, x, n, deterministic=False):
    _, captured = classifier.features(x)
    c = purifier.condition_of([captured[name] for name in layer_names]).repeat_interleave(n, dim=0)
    shape = (x.shape[0] * n, purifier.latent_size)
    z = torch.zeros(shape) if deterministic else torch.randn(shape)
    logits = classifier(purifier.decode(z, c))
    return logits.view(x.shape[0], n, -1).transpose(1, 2)


# ---- attacks -------------------------------------------------------------------------------------------------

def ce(logits, y):
    return F.cross_entropy(logits, y, reduction="none")


def input_gradient(model, x, y):
    inp = x.detach().requires_grad_(True)
    logits = model(inp)
    losses = ce(logits, y)
    return torch.autograd.grad(losses.sum(), [inp])[0], losses.detach(), logits.detach()


def project(x_adv, x, eps):
    return (x + (x_adv - x).clamp(-eps, eps)).clamp(0, 1)


def pgd(model, x, y, eps, steps, step_size, random_start):
    """lib/Attacks/Pgd.cs, CE loss, one restart, EOT 1."""
    x_adv = (x + (torch.rand(x.shape) * 2 - 1) * eps).clamp(0, 1) if random_start else x.clone()
    for _ in range(steps):
        grad = input_gradient(model, x_adv, y)[0]
        with torch.no_grad():
            x_adv = project(x_adv + step_size * grad.sign(), x, eps)
    return x_adv.detach()


def rows(per_point, like):
    return per_point.reshape([-1] + [1] * (like.dim() - 1))


def apgd_checkpoints(n_iter):
    interval, shrink, shortest = max(int(0.22 * n_iter), 1), max(int(0.03 * n_iter), 1), max(int(0.06 * n_iter), 1)
    points, at = [], interval
    while at <= n_iter:
        points.append(at)
        interval = max(interval - shrink, shortest)
        at += interval
    return points


def apgd_single_run(model, x, y, eps, n_iter, rho=0.75, alpha=0.75):
    checkpoints = apgd_checkpoints(n_iter)
    intervals = {at: at - (checkpoints[j - 1] if j > 0 else 0) for j, at in enumerate(checkpoints)}
    t = torch.rand(x.shape) * 2 - 1
    x0 = (x + eps * t / (rows(t.flatten(1).abs().amax(1), t) + 1e-12)).clamp(0, 1)
    grad, loss, logits = input_gradient(model, x0, y)
    x_adv, x_prev, x_best, grad_best, loss_best, x_best_adv = x0, x0, x0, grad, loss, x0
    fooled, loss_prev, increases = logits.argmax(1).ne(y), loss, torch.zeros_like(loss)
    step = torch.full([x.shape[0]], 2.0 * eps)
    reduced, loss_best_last = torch.ones([x.shape[0]], dtype=torch.bool), loss
    for i in range(n_iter):
        a = 1.0 if i == 0 else alpha
        with torch.no_grad():
            z = project(x_adv + rows(step, x_adv) * grad.sign(), x, eps)
            x_next = project(x_adv + a * (z - x_adv) + (1 - a) * (x_adv - x_prev), x, eps)
        g, l, logits = input_gradient(model, x_next, y)
        with torch.no_grad():
            wrong = logits.argmax(1).ne(y)
            improved = l.gt(loss_best)
            loss_best = torch.where(improved, l, loss_best)
            x_best = torch.where(rows(improved, x_next), x_next, x_best)
            grad_best = torch.where(rows(improved, x_next), g, grad_best)
            increases = increases + l.gt(loss_prev).to(increases.dtype)
            x_prev, x_adv, grad = x_adv, x_next, g
            x_best_adv = torch.where(rows(wrong, x_next), x_next, x_best_adv)
            fooled, loss_prev = fooled.logical_or(wrong), l
            if (i + 1) in intervals:
                k = intervals[i + 1]
                halve = increases.double().le(rho * k).logical_or(reduced.logical_not().logical_and(loss_best_last.ge(loss_best)))
                x_adv = torch.where(rows(halve, x_next), x_best, x_next)
                grad = torch.where(rows(halve, x_next), grad_best, g)
                step = torch.where(halve, step / 2, step)
                increases, reduced, loss_best_last = torch.zeros_like(increases), halve, loss_best
    return x_best, fooled, loss_best, x_best_adv


def apgd(model, x, y, eps, n_iter):
    """lib/Attacks/Apgd.cs Attack with NRestarts 1: attacks the correctly classified points only."""
    with torch.no_grad():
        fooled = model(x).argmax(1).ne(y)
    adv, best = x.clone(), x.clone()
    idx = fooled.logical_not().nonzero().squeeze(1)
    if idx.numel() == 0:
        return adv
    x_best, run_fooled, loss_best, x_best_adv = apgd_single_run(model, x[idx], y[idx], eps, n_iter)
    adv[idx] = torch.where(rows(run_fooled, x_best_adv), x_best_adv, adv[idx])
    best[idx] = x_best
    fooled[idx] = run_fooled
    return torch.where(rows(fooled, adv), adv, best)


# ---- purifier training ---------------------------------------------------------------------------------------

class Lookahead:
    """lib/Training/Lookahead.cs."""

    def __init__(self, inner, params, k=6, alpha=0.8):
        self.inner, self.params, self.k, self.alpha, self.steps = inner, list(params), k, alpha, 0
        self.slow = [p.detach().clone() for p in self.params]

    def zero_grad(self):
        self.inner.zero_grad()

    def step(self):
        self.inner.step()
        self.steps += 1
        if self.steps % self.k:
            return
        with torch.no_grad():
            for p, s in zip(self.params, self.slow):
                s.add_(p - s, alpha=self.alpha)
                p.copy_(s)


def mixed_batch(classifier, x, y, eps=0.1, pgd_steps=40, pgd_step=0.01, fraction=0.5):
    """lib/Defence/PurifierTraining.cs MixedBatch."""
    b = x.shape[0]
    adversarial = int(round(b * fraction))
    bounds = [adversarial * i // 4 for i in range(5)]
    attacks = [
        lambda xs, ys: pgd(classifier, xs, ys, eps / 2, 1, eps / 2, False),
        lambda xs, ys: pgd(classifier, xs, ys, eps, 1, eps, False),
        lambda xs, ys: pgd(classifier, xs, ys, eps / 2, pgd_steps, pgd_step, True),
        lambda xs, ys: pgd(classifier, xs, ys, eps, pgd_steps, pgd_step, True),
    ]
    parts = [attacks[k](x[bounds[k]:bounds[k + 1]], y[bounds[k]:bounds[k + 1]]) for k in range(4) if bounds[k + 1] > bounds[k]]
    if b > adversarial:
        parts.append(x[adversarial:])
    return torch.cat(parts).detach()


def purifier_step(classifier, layer_names, purifier, optimizer, clean, mixed, beta):
    """lib/Defence/PurifierTraining.cs Step."""
    with torch.no_grad():
        _, captured = classifier.features(mixed)
    layers = [captured[name] for name in layer_names]
    purifier.train()
    optimizer.zero_grad()
    c = purifier.condition_of(layers)
    mu, logvar = purifier.encode(clean, c)
    z = mu + (logvar / 2).exp() * torch.randn(mu.shape)
    reconstruction = purifier.decode(z, c)
    b = clean.shape[0]
    bce = F.binary_cross_entropy(reconstruction, clean, reduction="sum") / b
    kl = -0.5 * (1 + logvar - mu.square() - logvar.exp()).sum() / b
    (bce + beta * kl).backward()
    optimizer.step()
    return bce.detach(), kl.detach()


# ---- data ----------------------------------------------------------------------------------------------------

def read_idx(path):
    with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as f:
        data = f.read()
    magic, count = int.from_bytes(data[0:4], "big"), int.from_bytes(data[4:8], "big")
    if magic == 2051:
        h, w = int.from_bytes(data[8:12], "big"), int.from_bytes(data[12:16], "big")
        return np.frombuffer(data, np.uint8, count * h * w, 16).reshape(count, 1, h, w)
    return np.frombuffer(data, np.uint8, count, 8)


# ---- main ----------------------------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classifier", required=True, help="SmallCnn state dict (.pt, from StateDicts.Export)")
    parser.add_argument("--purifier", required=True, help="purifier state dict (.pt)")
    parser.add_argument("--spec", required=True, help="the purifier's spec JSON (PurifierCheckpoint.SpecPath)")
    parser.add_argument("--images", required=True, help="t10k-images-idx3-ubyte[.gz]")
    parser.add_argument("--labels", required=True, help="t10k-labels-idx1-ubyte[.gz]")
    parser.add_argument("--points", type=int, default=512, help="test images loaded (the largest batch)")
    parser.add_argument("--check-points", type=int, default=8)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--channels1", type=int, default=32)
    parser.add_argument("--channels2", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    spec = json.load(open(args.spec))
    classifier = SmallCnn(args.channels1, args.channels2, args.hidden)
    classifier.load_state_dict(torch.load(args.classifier), strict=True)
    classifier.eval()
    purifier = Purifier(spec["settings"], spec["layerShapes"], spec["inputShape"])
    purifier.load_state_dict(torch.load(args.purifier), strict=True)
    purifier.eval()
    purifier.latent_size = spec["settings"]["latentSize"]
    layer_names = spec["layerNames"]

    x_all = torch.from_numpy(read_idx(args.images)[:args.points].astype(np.float32) / 255.0)
    y_all = torch.from_numpy(read_idx(args.labels)[:args.points].astype(np.int64))

    with torch.no_grad():
        xc = x_all[:args.check_points]
        check = {
            "classifierLogits": classifier(xc).tolist(),
            "carsoDeterministicSampleLogits": carso_sample_logits(classifier, purifier, layer_names, xc, 1, True)[:, :, 0].tolist(),
        }
    emit({"ready": True, "torch": torch.__version__, "python": sys.version.split()[0], "threads": torch.get_num_threads(),
          **blas_in_use(), "check": check})

    # Training copies: the purifier being trained and its optimiser live across requests, as in a training run.
    trainee = {}
    mixed_cache = {}

    def trainer():
        if not trainee:
            p = copy.deepcopy(purifier)
            trainee["purifier"] = p
            trainee["optimizer"] = Lookahead(torch.optim.Adam(p.parameters(), lr=1e-3), p.parameters())
        return trainee["purifier"], trainee["optimizer"]

    def operation(req):
        op, b = req["op"], req["batch"]
        eps = req.get("eps", 0.1)
        x, y = x_all[:b], y_all[:b]
        if op == "classifier-grad":
            return lambda: input_gradient(classifier, x, y)
        if op == "pgd-step":
            return lambda: pgd(classifier, x, y, eps, 1, req.get("stepSize", 0.01), False)
        if op == "apgd-ce":
            points, n_iter = req["points"], req["iterations"]
            return lambda: [apgd(classifier, x_all[i:i + b], y_all[i:i + b], eps, n_iter) for i in range(0, points, b)]
        if op.startswith("carso-infer-n"):
            n = int(op[len("carso-infer-n"):])

            def infer():
                with torch.no_grad():
                    return peel(carso_sample_logits(classifier, purifier, layer_names, x, n))
            return infer
        if op.startswith("carso-grad-n"):
            n = int(op[len("carso-grad-n"):])
            return lambda: input_gradient(lambda inp: peel(carso_sample_logits(classifier, purifier, layer_names, inp, n)), x, y)
        if op == "purifier-step":
            p, opt = trainer()
            if b not in mixed_cache:
                mixed_cache[b] = mixed_batch(classifier, x, y, eps, req.get("pgdSteps", 40))
            return lambda: purifier_step(classifier, layer_names, p, opt, x, mixed_cache[b], 1.0)
        if op == "purifier-step-mixed":
            p, opt = trainer()
            return lambda: purifier_step(classifier, layer_names, p, opt, x, mixed_batch(classifier, x, y, eps, req.get("pgdSteps", 40)), 1.0)
        raise ValueError(f"unknown operation {op}")

    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        if req["op"] == "quit":
            break
        try:
            run = operation(req)
            for _ in range(req.get("warmup", 0)):
                run()
            seconds = []
            for _ in range(req.get("repeats", 1)):
                start = time.perf_counter()
                run()
                seconds.append(time.perf_counter() - start)
            emit({"op": req["op"], "batch": req["batch"], "seconds": seconds,
                  "peakRssMiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0})
        except Exception as e:  # reported to bench.cs, which says so and carries on without this operation
            emit({"op": req["op"], "batch": req["batch"], "error": f"{type(e).__name__}: {e}"})


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

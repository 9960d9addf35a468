#!/usr/bin/python3
"""PyTorch side of Carso's interoperability check (tests/IO/PythonInteropTests.cs runs it; needs Debian's python3-torch).

The three classifiers of lib/Models built in PyTorch with the module and parameter names our C# models use, so state
dicts move between the two strictly (no renaming, no missing or unexpected keys):

  smallcnn        lib/Models/SmallCnn.cs (default settings: 32, 64 channels, 128 hidden, 10 classes), 1x28x28 inputs
  preactresnet18  lib/Models/PreActResNet18.cs (Wong et al. 2020 / Rice et al. 2020 PreActResNet18, CIFAR-10 mean/std
                  inside the model, not in the state dict), 3x32x32 inputs
  wrn-28-10       RobustBench's DMWideResNet (robustbench/model_zoo/architectures/dm_wide_resnet.py) as
                  lib/Models/WideResNet.cs mirrors it, with SiLU: the architecture of RobustBench's CIFAR-10 Linf
                  Cui2023Decoupled_WRN-28-10 (WideResNetSettings.Wrn28_10), 3x32x32 inputs

Modes:

  export DIR [MODEL...]
                  seed 0: builds the three models, or those named (PyTorch's default initialisation), sets every batch
                  norm's running statistics to those of a batch of random images and randomises its affine parameters,
                  scales the last linear layer so logits reach 4 in magnitude, then writes DIR/<model>.pt
                  (torch.save(model.state_dict())), DIR/<model>.safetensors, for smallcnn also DIR/smallcnn-wrapped.pt
                  (a training checkpoint {"state_dict": {"module.<key>": ...}, "epoch": 3}, for convert), and
                  DIR/python-logits.safetensors holding <model>.input (fixed random images in [0, 1]) and
                  <model>.logits (the eval-mode logits on them)
  check DIR       loads DIR/<model>.pt and DIR/<model>.safetensors, as Carso's StateDicts.Export wrote them, strictly
                  (load_state_dict(strict=True)) into the same PyTorch models, runs DIR/carso-logits.safetensors's
                  <model>.input through them, writes DIR/python-check.safetensors with <model>.<pt|safetensors>.logits
                  and prints one JSON line per model and format with the largest difference from Carso's
                  <model>.logits
  convert IN OUT  rewrites a PyTorch checkpoint as a bare state dict in the format OUT's extension selects
                  (.safetensors or .pt): unwraps {"state_dict": ...} / {"model_state_dict": ...} / {"model": ...}
                  and strips the prefixes RobustBench's load_model strips ("module." from nn.DataParallel, then
                  "model."): how a RobustBench or other PyTorch model comes into Carso, then
                  StateDicts.Import(new WideResNet(WideResNetSettings.Wrn28_10), OUT)

The safetensors files are read and written here by hand (the format: an 8-byte little-endian header length, a JSON
header {name: {dtype, shape, data_offsets}}, the raw little-endian tensor bytes), because Debian has no python3
safetensors package; the files are laid out as the reference writer lays them out.
Uses one thread unless OMP_NUM_THREADS says otherwise.
"""
import json
import os
import struct
import sys
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from smallcnn_torch import SmallCnn  # scripts/smallcnn_torch.py: lib/Models/SmallCnn.cs in PyTorch

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # lib/Models/InputNormalization.cs
CIFAR10_STD = (0.2471, 0.2435, 0.2616)


# ---- models --------------------------------------------------------------------------------------------------

class PreActBlock(nn.Module):
    """lib/Models/PreActResNet18.cs PreActBlock (the shortcut convolution reads relu(bn1(x)), as in the published code)."""

    def __init__(self, in_planes, planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False))

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    """lib/Models/PreActResNet18.cs: the PyTorch PreActResNet18 with the input standardisation inside the model
    (non-persistent buffers, so the state dict is the published one key for key)."""

    def __init__(self, num_classes=10, mean=CIFAR10_MEAN, std=CIFAR10_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(3, 1, 1), persistent=False)
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.layer1 = self._stage(64, 64, 1)
        self.layer2 = self._stage(64, 128, 2)
        self.layer3 = self._stage(128, 256, 2)
        self.layer4 = self._stage(256, 512, 2)
        self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, num_classes)

    @staticmethod
    def _stage(in_planes, planes, stride):
        return nn.Sequential(PreActBlock(in_planes, planes, stride), PreActBlock(planes, planes, 1))

    def forward(self, x):
        out = self.conv1((x - self.mean) / self.std)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.relu(self.bn(out))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.view(out.size(0), -1))


# RobustBench's DMWideResNet (robustbench/model_zoo/architectures/dm_wide_resnet.py), unchanged in names and layout.

class _Block(nn.Module):
    def __init__(self, in_planes, out_planes, stride, activation_fn=nn.ReLU):
        super().__init__()
        self.batchnorm_0 = nn.BatchNorm2d(in_planes, momentum=0.01)
        self.relu_0 = activation_fn()
        # Padding is applied in forward, as in TensorFlow ("SAME" at stride 2 pads right and bottom only).
        self.conv_0 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(out_planes, momentum=0.01)
        self.relu_1 = activation_fn()
        self.conv_1 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.has_shortcut = in_planes != out_planes
        if self.has_shortcut:
            self.shortcut = nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)
        else:
            self.shortcut = None
        self._stride = stride

    def forward(self, x):
        if self.has_shortcut:
            x = self.relu_0(self.batchnorm_0(x))
        else:
            out = self.relu_0(self.batchnorm_0(x))
        v = x if self.has_shortcut else out
        if self._stride == 1:
            v = F.pad(v, (1, 1, 1, 1))
        elif self._stride == 2:
            v = F.pad(v, (0, 1, 0, 1))
        else:
            raise ValueError("Unsupported `stride`.")
        out = self.conv_0(v)
        out = self.relu_1(self.batchnorm_1(out))
        out = self.conv_1(out)
        out = torch.add(self.shortcut(x) if self.has_shortcut else x, out)
        return out


class _BlockGroup(nn.Module):
    def __init__(self, num_blocks, in_planes, out_planes, stride, activation_fn=nn.ReLU):
        super().__init__()
        block = []
        for i in range(num_blocks):
            block.append(_Block(i == 0 and in_planes or out_planes, out_planes, i == 0 and stride or 1,
                                activation_fn=activation_fn))
        self.block = nn.Sequential(*block)

    def forward(self, x):
        return self.block(x)


class DMWideResNet(nn.Module):
    def __init__(self, num_classes=10, depth=28, width=10, activation_fn=nn.ReLU, mean=CIFAR10_MEAN, std=CIFAR10_STD,
                 padding=0, num_input_channels=3):
        super().__init__()
        # Plain attributes, not buffers: not in the state dict (as in RobustBench).
        self.mean = torch.tensor(mean).view(num_input_channels, 1, 1)
        self.std = torch.tensor(std).view(num_input_channels, 1, 1)
        self.padding = padding
        num_channels = [16, 16 * width, 32 * width, 64 * width]
        assert (depth - 4) % 6 == 0
        num_blocks = (depth - 4) // 6
        self.init_conv = nn.Conv2d(num_input_channels, num_channels[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.layer = nn.Sequential(
            _BlockGroup(num_blocks, num_channels[0], num_channels[1], 1, activation_fn=activation_fn),
            _BlockGroup(num_blocks, num_channels[1], num_channels[2], 2, activation_fn=activation_fn),
            _BlockGroup(num_blocks, num_channels[2], num_channels[3], 2, activation_fn=activation_fn))
        self.batchnorm = nn.BatchNorm2d(num_channels[3], momentum=0.01)
        self.relu = activation_fn()
        self.logits = nn.Linear(num_channels[3], num_classes)
        self.num_channels = num_channels[3]

    def forward(self, x):
        if self.padding > 0:
            x = F.pad(x, (self.padding,) * 4)
        out = (x - self.mean) / self.std
        out = self.init_conv(out)
        out = self.layer(out)
        out = self.relu(self.batchnorm(out))
        out = F.avg_pool2d(out, 8)
        out = out.view(-1, self.num_channels)
        return self.logits(out)


# name -> (constructor, input shape of one image)
MODELS = OrderedDict([
    ("smallcnn", (lambda: SmallCnn(), (1, 28, 28))),
    ("preactresnet18", (lambda: PreActResNet18(), (3, 32, 32))),
    ("wrn-28-10", (lambda: DMWideResNet(depth=28, width=10, activation_fn=nn.SiLU), (3, 32, 32))),
])
INPUTS = {"smallcnn": 4, "preactresnet18": 2, "wrn-28-10": 2}  # fixed images per model


# ---- safetensors, by hand ------------------------------------------------------------------------------------

ST_DTYPES = {  # safetensors name -> (torch dtype, numpy dtype of the same bytes)
    "F64": (torch.float64, "<f8"), "F32": (torch.float32, "<f4"), "F16": (torch.float16, "<f2"),
    "BF16": (torch.bfloat16, "<i2"), "I64": (torch.int64, "<i8"), "I32": (torch.int32, "<i4"),
    "I16": (torch.int16, "<i2"), "I8": (torch.int8, "i1"), "U8": (torch.uint8, "u1"), "BOOL": (torch.bool, "?"),
}
ST_NAMES = {dtype: name for name, (dtype, _) in ST_DTYPES.items()}


def save_safetensors(tensors, path):
    """name -> tensor into a .safetensors file: tensors by decreasing element size then name (the reference writer's
    order, so each starts aligned), header padded with spaces to a multiple of 8 bytes."""
    items = sorted(((k, v.detach().cpu().contiguous()) for k, v in tensors.items()),
                   key=lambda kv: (-kv[1].element_size(), kv[0]))
    header, blobs, offset = {}, [], 0
    for name, t in items:
        if t.dtype not in ST_NAMES:
            raise ValueError(f"{path}: tensor {name} has dtype {t.dtype}, which safetensors cannot store")
        raw = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy()
        data = raw.astype(ST_DTYPES[ST_NAMES[t.dtype]][1], copy=False).tobytes()
        header[name] = {"dtype": ST_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)
    os.replace(tmp, path)


def load_safetensors(path):
    """A .safetensors file -> OrderedDict name -> CPU tensor (in header order)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: not a safetensors file (shorter than 8 bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise ValueError(f"{path}: not a safetensors file (header length {n} exceeds the file)")
    header = json.loads(data[8:8 + n])
    body = memoryview(data)[8 + n:]
    out = OrderedDict()
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype, np_dtype = ST_DTYPES[entry["dtype"]]
        begin, end = entry["data_offsets"]
        array = np.frombuffer(body[begin:end], dtype=np_dtype).reshape(entry["shape"]).copy()
        t = torch.from_numpy(array)
        out[name] = t.view(torch.bfloat16) if dtype == torch.bfloat16 else t
    return out


def load_state_dict_file(path):
    return load_safetensors(path) if path.endswith(".safetensors") else torch.load(path, map_location="cpu")


def save_state_dict_file(state, path):
    if path.endswith(".safetensors"):
        save_safetensors(state, path)
    else:
        torch.save(OrderedDict(state), path)


# ---- modes ---------------------------------------------------------------------------------------------------

def calibrate_batch_norms(model, images, generator):
    """Running statistics = the batch statistics of `images` (a cumulative average over one batch), then random
    affine parameters and counters: every batch-norm tensor differs from its neighbours', so a name mix-up shows."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        model(images)
        for i, m in enumerate(norms):
            m.momentum = saved[i]
            m.weight.copy_(torch.rand(m.weight.shape, generator=generator) + 0.5)
            m.bias.copy_(torch.randn(m.bias.shape, generator=generator) * 0.1)
            m.num_batches_tracked.fill_(3 + i)
    model.eval()


def scale_logits(model, images, largest=4.0):
    """Scales the last linear layer so the largest logit on `images` is `largest` in magnitude: freshly initialised
    models give logits of ~0.1, on which a 1e-4 agreement would say little."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        factor = largest / model(images).abs().max().item()
        last.weight.mul_(factor)
        last.bias.mul_(factor)


def export(folder, names):
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        sys.exit(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
    os.makedirs(folder, exist_ok=True)
    logits = OrderedDict()
    for name, (build, shape) in MODELS.items():
        if names and name not in names:
            continue
        torch.manual_seed(0)
        generator = torch.Generator().manual_seed(1)
        model = build()
        calibration = torch.rand((8,) + shape, generator=generator)
        calibrate_batch_norms(model, calibration, generator)
        scale_logits(model, calibration)
        x = torch.rand((INPUTS[name],) + shape, generator=generator)
        with torch.no_grad():
            logits[name + ".input"] = x
            logits[name + ".logits"] = model(x)
        state = model.state_dict()
        torch.save(state, os.path.join(folder, name + ".pt"))
        save_safetensors(state, os.path.join(folder, name + ".safetensors"))
        if name == "smallcnn":  # a training checkpoint as scripts with nn.DataParallel save one: what convert unwraps
            torch.save({"state_dict": OrderedDict(("module." + k, v) for k, v in state.items()), "epoch": 3},
                       os.path.join(folder, "smallcnn-wrapped.pt"))
        emit({"model": name, "tensors": len(state), "parameters": sum(p.numel() for p in model.parameters()),
              "maxAbsLogit": logits[name + ".logits"].abs().max().item()})
    save_safetensors(logits, os.path.join(folder, "python-logits.safetensors"))


def check(folder):
    logits_path = os.path.join(folder, "carso-logits.safetensors")
    if not os.path.isfile(logits_path):
        sys.exit(f"{logits_path}: no such file (check reads the inputs and logits Carso wrote there)")
    carso = load_safetensors(logits_path)
    results = OrderedDict()
    for name, (build, _) in MODELS.items():
        if name + ".input" not in carso:
            continue
        for fmt in ("pt", "safetensors"):
            path = os.path.join(folder, f"{name}.{fmt}")
            model = build()
            model.load_state_dict(load_state_dict_file(path), strict=True)
            model.eval()
            with torch.no_grad():
                out = model(carso[name + ".input"])
            results[f"{name}.{fmt}.logits"] = out
            emit({"model": name, "format": fmt,
                  "maxAbsDifference": (out - carso[name + ".logits"]).abs().max().item(),
                  "maxAbsLogit": out.abs().max().item()})
    save_safetensors(results, os.path.join(folder, "python-check.safetensors"))


def convert(source, target):
    if not os.path.isfile(source):
        sys.exit(f"{source}: no such file")
    if not target.endswith((".pt", ".pth", ".safetensors")):
        sys.exit(f"{target}: unknown state-dict extension; use .safetensors, .pt or .pth")
    state = load_state_dict_file(source)
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        sys.exit(f"{source}: holds a {type(state).__name__}, not a state dict (a whole pickled model? save model.state_dict())")
    bad = [k for k, v in state.items() if not torch.is_tensor(v)]
    if bad:
        sys.exit(f"{source}: not a state dict: entries {bad[:5]} are not tensors")
    # The prefixes RobustBench's load_model strips, in its order: nn.DataParallel's "module.", then a wrapper's "model.".
    for prefix in ("module.", "model."):
        state = OrderedDict((k[len(prefix):] if k.startswith(prefix) else k, v) for k, v in state.items())
    save_state_dict_file(state, target)
    emit({"source": source, "target": target, "tensors": len(state)})


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    args = sys.argv[1:]
    if len(args) >= 2 and args[0] == "export":
        export(args[1], args[2:])
    elif len(args) == 2 and args[0] == "check":
        check(args[1])
    elif len(args) == 3 and args[0] == "convert":
        convert(args[1], args[2])
    else:
        sys.exit("usage: interop-pytorch.py export DIR [MODEL...] | check DIR | convert IN.(pt|safetensors) OUT.(pt|safetensors)")


if __name__ == "__main__":
    main()

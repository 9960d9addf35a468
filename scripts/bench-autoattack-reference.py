#!/usr/bin/python3
"""The Python reference AutoAttack (fra31/auto-attack), stage by stage, on our classifier: the baseline of
`dotnet run scripts/bench.cs --autoattack N --autoattack-reference DIR` (run by it; needs Debian's python3-torch at
/usr/bin/python3 and a checkout of https://github.com/fra31/auto-attack in DIR, which is put on sys.path as is).

The same model (SmallCnn as bench-pytorch.py builds it, weights exported by Carso's StateDicts.Export as .pt), the same
first N test points of Fashion-MNIST, Linf eps, thread count and seed. The reference runs unchanged: AutoAttack(version=
"standard").run_standard_evaluation on all N points, in its own batches of --bs; the time of each stage is read from its
own log line "robust accuracy after STAGE: ... (total time T s)" (T counts from the start of the first stage, after the
clean pass and its checks). Prints one JSON line: {"stages": [{"name", "seconds", "robustAfter"}...], "clean", "blas", ...}.
"""
import argparse
import importlib.util
import json
import re
import sys
import time

import numpy as np
import torch

def load_bench_module(path):
    """bench-pytorch.py (SmallCnn, read_idx, blas_in_use), loaded by path: its name is not an importable module name."""
    spec = importlib.util.spec_from_file_location("bench_pytorch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class StageClock:
    """A logger for AutoAttack: keeps its lines and the cumulative seconds of each 'robust accuracy after' line."""

    def __init__(self):
        self.stages = []

    def log(self, message):
        found = re.match(r"robust accuracy after ([A-Z0-9-]+): ([0-9.]+)% \(total time ([0-9.]+) s\)", message)
        if found:
            self.stages.append({"name": found.group(1).lower(), "robustAfter": float(found.group(2)) / 100,
                                "totalSeconds": float(found.group(3))})
        print(message, file=sys.stderr, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--autoattack", required=True, help="a checkout of fra31/auto-attack (the folder holding autoattack/)")
    parser.add_argument("--classifier", required=True, help="SmallCnn state dict (.pt, from StateDicts.Export)")
    parser.add_argument("--images", required=True)
    parser.add_argument("--labels", required=True)
    parser.add_argument("--points", type=int, required=True)
    parser.add_argument("--eps", type=float, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bs", type=int, default=250, help="the reference's batch size (its default)")
    parser.add_argument("--channels1", type=int, default=32)
    parser.add_argument("--channels2", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    args = parser.parse_args()

    here = __file__.rsplit("/", 1)[0]
    bench = load_bench_module(f"{here}/bench-pytorch.py")
    sys.path.insert(0, args.autoattack)
    from autoattack import AutoAttack

    torch.set_num_threads(args.threads)
    model = bench.SmallCnn(args.channels1, args.channels2, args.hidden)
    model.load_state_dict(torch.load(args.classifier), strict=True)
    model.eval()
    x = torch.from_numpy(bench.read_idx(args.images)[:args.points].astype(np.float32) / 255.0)
    y = torch.from_numpy(bench.read_idx(args.labels)[:args.points].astype(np.int64))

    clock = StageClock()
    adversary = AutoAttack(model, norm="Linf", eps=args.eps, version="standard", seed=args.seed, device="cpu")
    adversary.logger = clock
    for attack in (adversary.apgd, adversary.apgd_targeted):
        attack.logger = clock
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
    started = time.time()
    x_adv = adversary.run_standard_evaluation(x, y, bs=args.bs)
    wall = time.time() - started
    with torch.no_grad():
        robust = (model(x_adv).argmax(1) == y).float().mean().item()
    previous = 0.0
    for stage in clock.stages:
        stage["seconds"], previous = stage["totalSeconds"] - previous, stage["totalSeconds"]
    print(json.dumps({"stages": clock.stages, "clean": clean, "robust": robust, "wallSeconds": wall,
                      "torch": torch.__version__, "threads": torch.get_num_threads(), **bench.blas_in_use(),
                      "autoattackBatchSize": args.bs}), flush=True)


if __name__ == "__main__":
    main()

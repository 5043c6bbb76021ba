"""Peak memory of the 3D methods: a training step against the authors' layout, whole-volume inference against a
single full-volume pass.

Every variant runs in a fresh subprocess, so one variant's allocations never hide another's; the memory of a
variant is its peak resident set size (CPU) or peak CUDA allocation (GPU) above what the process held just
before the measured work (interpreter, torch, the network's weights and the input). Weights are random: only
memory is measured, and the ratios come from one run.

- ``train``: one training step (forward, L1 loss, backward, Adam) of the paper-width 3D UNet (the
  paper_ddim_image_3d network: 64 channels, multipliers 1,2,4,8) on a 32 x 128 x 128 patch, batch 1, input
  [x_t, MR, 3 ramps]. ``reference``: the authors' layout (SAUNet in Conv3d, no attention, averaged skips) storing
  every activation, float32, as their code (9 GB on their GPU); ``ours``: the same network (same weights and
  layout) with activation checkpointing, plus bfloat16 autocast and channels-last on a GPU (the CPU stays
  float32). Goal: ours at most half of the reference.
- ``infer``: whole-volume DDIM image-mode translation (t steps, eta 1) of a whole-spine-sized volume by the
  ddim_image_3d method (CPU default network; ``--scale paper`` the paper's). ``full``: the network over the
  whole volume in one pass per step, as the authors' inference; ``windowed``: the method with its memory bound
  (``--window`` per axis, one window per network call). Goal: windowed at most a third of full. The one-window
  path is checked to be the full pass itself (identical output); bounded windows differ from it where the
  network's GroupNorm statistics and zero padding see a window instead of the volume (reported).

    python benchmarks/bench_3d_memory.py                      # both parts at CPU scale (several minutes)
    python benchmarks/bench_3d_memory.py --part infer         # one part
    python benchmarks/bench_3d_memory.py --device cuda --scale paper   # paper-scale inference on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mr2ct.core.cli import CONF_DIR
from mr2ct.core.config import InferenceConfig, register_configs
from mr2ct.methods.volumetric import DDIMImage3D, fast_network_call
from mr2ct.methods.windows import Windows
from mr2ct.nets.sa_unet import SAUNet
from mr2ct.nets.unet3d import UNet3D

PAPER_PATCH = (32, 128, 128)  # left-right first, as the authors' released model
INPUT_CHANNELS = 5  # x_t, MR, three position ramps
VOLUME = {"cpu": (64, 256, 256), "paper": (96, 448, 448)}  # a whole spine at the CPU default / at 1 mm
WINDOW = {"cpu": (32, 64, 64), "paper": (96, 128, 128)}  # the memory bound (inference.window) of the windowed variant
CONFIG = {"cpu": ["model=ddim_image_3d", "inference=ddim_3d"],
          "paper": ["experiment=paper_ddim_image_3d", "inference=ddim_3d"]}


def composed(scale: str):
    """The run config of the ddim_image_3d method at ``scale`` (CPU default or paper experiment)."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[*CONFIG[scale], "paths.output_dir=."])


# ---------------------------------------------------------------------------------------------- memory
def resident_bytes() -> int:
    """The process's current resident set size."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_resident_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports kB


class Peak:
    """The peak memory of the work inside the ``with`` block, above what was held when it started."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self) -> Peak:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            self.start, self.earlier_peak = resident_bytes(), peak_resident_bytes()
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = peak_resident_bytes()
            if peak <= self.earlier_peak:
                raise RuntimeError("the work stayed below the process's earlier peak: nothing measured")
        self.bytes, self.seconds = peak - self.start, time.perf_counter() - self.started


# ---------------------------------------------------------------------------------------------- children
def paper_network(layout: str) -> torch.nn.Module:
    """The paper-width 3D UNet of experiment=paper_ddim_image_3d, in the authors' layout or ours."""
    net = composed("paper").model.net
    settings = {"dim": net.dim, "dim_mults": tuple(net.dim_mults), "groups": net.groups}
    if layout == "reference":
        return SAUNet(INPUT_CHANNELS, 1, attention=False, dims=3, skip="average", **settings)
    return UNet3D(INPUT_CHANNELS, 1, checkpointing=True, **settings)


def train_step(layout: str, device: torch.device, patch) -> dict:
    torch.manual_seed(0)
    net = paper_network(layout).to(device)
    optimiser = torch.optim.Adam(net.parameters(), lr=2e-5)
    x = torch.randn(1, INPUT_CHANNELS, *patch, device=device)
    target = torch.rand(1, 1, *patch, device=device) * 2 - 1
    t = torch.tensor([500], device=device)
    fast = layout == "ours" and device.type == "cuda"
    if fast:
        net = net.to(memory_format=torch.channels_last_3d)
    with Peak(device) as peak:
        out = fast_network_call(net, x, t) if fast else net(x, t)
        loss = F.l1_loss(out, target)
        loss.backward()
        optimiser.step()
    return {"peak_bytes": peak.bytes, "seconds": peak.seconds, "loss": float(loss)}


def inference(mode: str, scale: str, device: torch.device, steps: int, shape, window, out_file: str) -> dict:
    cfg = composed(scale)
    torch.manual_seed(0)
    method = DDIMImage3D(OmegaConf.to_container(cfg.model, resolve=True)).to(device).eval()
    grid = torch.meshgrid(*[torch.linspace(0, 6.28, n, device=device) for n in shape], indexing="ij")
    mr = (torch.sin(grid[0]) * torch.cos(grid[1]) * torch.sin(2 * grid[2]))[None, None]
    whole = list(shape)
    settings = InferenceConfig(t=steps, eta=1.0, batch_size=1, window=whole if mode == "full" else list(window))
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad(), Peak(device) as peak:
        if mode == "plain":  # the sampler with the bare network on the whole volume: no windows code at all
            cond = method.condition_canvas(mr, Windows(tuple(whole)))
            out = method.sample_canvas(cond, Windows(tuple(whole)), settings, generator)
        else:
            out = method.translate(mr, settings, generator)
    np.save(out_file, out[0, 0].float().cpu().numpy())
    windows = method.windows(settings, mr)
    return {"peak_bytes": peak.bytes, "seconds": peak.seconds, "window": list(windows.window_shape(3)),
            "windows": len(windows.origins(windows.canvas_shape(shape)))}


def child(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    if args.child.startswith("train-"):
        result = train_step(args.child.removeprefix("train-"), device, args.patch)
    else:
        result = inference(args.child.removeprefix("infer-"), args.scale, device, args.steps, args.volume, args.window,
                           args.out)
    print(json.dumps(result))


# ---------------------------------------------------------------------------------------------- parent
def run_child(name: str, args: argparse.Namespace, out: str = "") -> dict:
    command = [sys.executable, __file__, "--child", name, "--device", args.device, "--scale", args.scale,
               "--steps", str(args.steps), "--out", out, "--patch", *map(str, args.patch),
               "--volume", *map(str, args.volume), "--window", *map(str, args.window)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"variant {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def gib(n: float) -> str:
    return f"{n / 2**30:7.2f} GiB"


def bench_train(args: argparse.Namespace) -> None:
    print(f"training step, paper-width 3D UNet, patch {tuple(args.patch)}, batch 1, {args.device}")
    results = {layout: run_child(f"train-{layout}", args) for layout in ("reference", "ours")}
    for layout, r in results.items():
        print(f"  {layout:<10} peak {gib(r['peak_bytes'])}   {r['seconds']:7.1f} s   loss {r['loss']:.4f}")
    ratio = results["ours"]["peak_bytes"] / results["reference"]["peak_bytes"]
    print(f"  ours / reference peak: {ratio:.2f} (goal <= 0.50: {'met' if ratio <= 0.5 else 'NOT met'}); "
          f"time {results['ours']['seconds'] / results['reference']['seconds']:.2f}x")


def bench_infer(args: argparse.Namespace) -> None:
    print(f"whole-volume DDIM translation, {args.scale} network, volume {tuple(args.volume)}, t={args.steps}, "
          f"{args.device}")
    with tempfile.TemporaryDirectory() as folder:
        files = {mode: str(Path(folder) / f"{mode}.npy") for mode in ("plain", "full", "windowed")}
        results = {mode: run_child(f"infer-{mode}", args, files[mode]) for mode in ("full", "windowed", "plain")}
        outputs = {mode: np.load(path) for mode, path in files.items()}
    for mode in ("full", "windowed"):
        r = results[mode]
        print(f"  {mode:<9} peak {gib(r['peak_bytes'])}   {r['seconds']:7.1f} s   "
              f"{r['windows']} window(s) of {r['window']}")
    ratio = results["windowed"]["peak_bytes"] / results["full"]["peak_bytes"]
    print(f"  windowed / full peak: {ratio:.2f} (goal <= 0.33: {'met' if ratio <= 1 / 3 else 'NOT met'})")
    same = float(np.abs(outputs["full"] - outputs["plain"]).max())
    print(f"  one window vs the bare network on the whole volume: max |diff| {same:.2e} (identical: {same == 0.0})")
    diff = np.abs(outputs["windowed"] - outputs["full"]) * 1000.0
    print(f"  bounded windows vs one pass: mean |diff| {diff.mean():.1f} HU, max {diff.max():.1f} HU "
          "(random weights; GroupNorm statistics and padding per window)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("train", "infer", "both"), default="both")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--scale", choices=("cpu", "paper"), default="cpu", help="inference network and volume")
    parser.add_argument("--steps", type=int, default=2, help="DDIM steps (memory does not depend on them)")
    parser.add_argument("--window", type=int, nargs=3, default=None, help="inference window per axis")
    parser.add_argument("--volume", type=int, nargs=3, default=None, help="inference volume (default: per scale)")
    parser.add_argument("--patch", type=int, nargs=3, default=list(PAPER_PATCH), help="training patch")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.window = args.window or list(WINDOW[args.scale])
    args.volume = args.volume or list(VOLUME[args.scale])
    if args.child:
        child(args)
        return
    if args.part in ("train", "both"):
        bench_train(args)
    if args.part in ("infer", "both"):
        bench_infer(args)


if __name__ == "__main__":
    main()

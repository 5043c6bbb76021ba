"""Translation throughput of conditional DDIM sampling with the SA-UNet: a slice batch vs a per-slice loop.

Prints slices per second for one batch of sagittal slices (1 MR channel in, 1 CT channel out) sampled
with DDIM (t steps, eta=1, w=0), and for the same slices translated one at a time; the ratio
batched/loop is measured in the same run. Weights are random: only speed is measured.

    python benchmarks/bench_sampling.py                      # 16 slices, 64x64, default and paper width
    python benchmarks/bench_sampling.py --size 256 --device cuda   # the paper's crop size on a GPU
    python benchmarks/bench_sampling.py --widths paper --batch 4 --loop-slices 2   # lighter on a CPU
"""

from __future__ import annotations

import argparse
import time

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mr2ct.core.cli import CONF_DIR
from mr2ct.core.config import register_configs
from mr2ct.diffusion import NoiseSchedule, sample
from mr2ct.nets.sa_unet import SAUNet

# the SA-UNet settings of the configs themselves, so the benchmark follows any change to them
WIDTH_OVERRIDES = {"default": ["model=ddim_image"], "paper": ["experiment=paper_ddim_image"]}


def network_settings(width: str) -> dict:
    """``model.net`` of the composed config for ``width`` (default: mr2ct/conf/model; paper: mr2ct/conf/experiment)."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*WIDTH_OVERRIDES[width], "paths.output_dir=."])
    return OmegaConf.to_container(cfg.model.net)


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _translate(net: SAUNet, mr: torch.Tensor, schedule: NoiseSchedule, steps: int, seed: int) -> torch.Tensor:
    generator = torch.Generator(device=mr.device).manual_seed(seed)
    return sample(
        lambda x, t, cond: net(torch.cat([x, cond], dim=1), t),
        mr,
        schedule,
        "sample",
        steps=steps,
        eta=1.0,
        w=0.0,
        generator=generator,
    )


def _seconds(fn, device: torch.device, repeats: int) -> float:
    """Fastest of ``repeats`` runs: the least disturbed by other processes on a shared machine."""
    durations = []
    for _ in range(repeats):
        _synchronise(device)
        start = time.perf_counter()
        fn()
        _synchronise(device)
        durations.append(time.perf_counter() - start)
    return min(durations)


def benchmark_width(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    settings = network_settings(name)
    torch.manual_seed(0)
    net = SAUNet(2, 1, **settings).to(device).eval()
    schedule = NoiseSchedule.cosine()
    mr = torch.rand(args.batch, 1, args.size, args.size, device=device) * 2 - 1
    loop_slices = min(args.loop_slices or args.batch, args.batch)

    _translate(net, mr[:2], schedule, 1, seed=0)  # warm-up: allocator, kernels, thread pool
    batched = _seconds(lambda: _translate(net, mr, schedule, args.steps, seed=1), device, args.repeats)
    loop = _seconds(
        lambda: [_translate(net, mr[i : i + 1], schedule, args.steps, seed=i) for i in range(loop_slices)],
        device,
        args.repeats,
    )
    result = {
        "parameters_M": sum(p.numel() for p in net.parameters()) / 1e6,
        "batched_slices_per_s": args.batch / batched,
        "loop_slices_per_s": loop_slices / loop,
    }
    result["ratio"] = result["batched_slices_per_s"] / result["loop_slices_per_s"]
    print(
        f"{name:>8} width ({settings['dim']} ch, mults {tuple(settings['dim_mults'])}, "
        f"{result['parameters_M']:.2f} M params): batch of {args.batch}: {result['batched_slices_per_s']:.3f} slices/s, "
        f"loop over {loop_slices}: {result['loop_slices_per_s']:.3f} slices/s, batched/loop = {result['ratio']:.2f}x",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16, help="sagittal slices translated in one batch")
    parser.add_argument("--size", type=int, default=64, help="slice height = width in pixels (paper: 256)")
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps t")
    parser.add_argument("--loop-slices", type=int, default=0, help="slices timed in the per-slice loop (0: all)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each variant; the fastest counts")
    parser.add_argument("--widths", nargs="+", choices=sorted(WIDTH_OVERRIDES), default=["default", "paper"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"DDIM t={args.steps}, eta=1, w=0, {args.size}x{args.size} slices on {device} "
        f"({torch.get_num_threads()} CPU threads, torch {torch.__version__})",
        flush=True,
    )
    for name in args.widths:
        benchmark_width(name, args, device)


if __name__ == "__main__":
    main()

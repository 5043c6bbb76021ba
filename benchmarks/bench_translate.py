"""Seconds per volume: ``mr2ct.translate`` against evaluation, on the same phantom volume and model.

Evaluation's cost of a volume is :func:`score_volumes` on the run's prepared test volume (translate, write
on the MR header, image metrics; with the segmenter also both CT segmentations and Dice). Translate's is a
whole :func:`mr2ct.translate.translate` call on that subject's ``mr.nii.gz`` (load the checkpoint and the
segmenter, read and prepare the MR, translate, segment, write, logs): a command that translates one file,
less the interpreter's start and imports. Evaluation's own loading is not counted, so the ratio
translate/evaluation is an upper bound. Both are measured in this one process, interleaved, after a warm-up;
the fastest of ``--repeats`` counts (the least disturbed on a shared machine); segment on and off.

Without ``--run`` a smoke run of the default 2D model (``model=ddim_image`` at its CPU width, two optimisation
steps, a segmenter of the default architecture briefly trained; weights do not change the cost) is trained
once into ``--workdir``. ``--profile`` prints where one translate call spends its time (cProfile).

    python benchmarks/bench_translate.py                          # default model, t=20 as configured
    python benchmarks/bench_translate.py --t 5 --repeats 2        # lighter on a shared CPU
    python benchmarks/bench_translate.py --run outputs/default/<run> --profile
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import json
import pstats
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from mr2ct.core.cli import CONF_DIR
from mr2ct.inference.checkpoint import load_method, trained_config
from mr2ct.pipeline.kept import kept_dir
from mr2ct.pipeline.run import run_task
from mr2ct.pipeline.stages import inference_settings, prepared_data
from mr2ct.scoring.volumes import score_volumes
from mr2ct.segment import build_segmenter
from mr2ct.train import train
from mr2ct.translate import translate

SMOKE_RUN = [
    "model=ddim_image", "trainer=smoke", "logger=none", "data.test_sets=[]", "data.phantom.subjects=4",
    "data.phantom.val_fraction=0.17", "data.phantom.test_fraction=0.17", "preprocess.elastic_copies=1",
    "segmenter.subjects=3", "segmenter.steps=20",
]


def compose(config_name: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from mr2ct.core.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides)


def smoke_run(workdir: Path) -> Path:
    """The benchmark's own trained run (made once; its data and segmenter cached under ``workdir``)."""
    run_dir = workdir / "run"
    if not (run_dir / "checkpoints" / "last.ckpt").is_file():
        cfg = compose("config", [*SMOKE_RUN, f"paths.cache_dir={workdir / 'cache'}", f"paths.output_dir={run_dir}"])
        run_task(cfg, "train", train)
    return run_dir


def seconds_of(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def as_overrides(group: str, settings: dict) -> list[str]:
    """``group.key=value`` for every setting, so a composed config gets exactly these values."""
    def value(v):
        return "null" if v is None else f"[{','.join(map(str, v))}]" if isinstance(v, list) else str(v)
    return [f"{group}.{key}={value(v)}" for key, v in settings.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a trained run dir (default: a smoke run trained in --workdir)")
    parser.add_argument("--workdir", type=Path, default=Path("bench_results/translate"))
    parser.add_argument("--t", type=int, default=None, help="DDIM steps (default: the run's inference.t)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each variant; the fastest counts")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top entries of one translate call")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    run_dir = (args.run or smoke_run(args.workdir)).resolve()

    trained = trained_config(run_dir)
    if args.t is not None:
        trained.inference.t = args.t
    method = load_method(trained.model.name, run_dir / "checkpoints" / "last.ckpt")
    _, datamodule = prepared_data(trained, method.card)
    volume = datamodule.test_volumes()[0]
    segmenter = build_segmenter(trained.segmenter, trained.paths.cache_dir, kept_dir(run_dir))
    inference = inference_settings(trained)
    scratch = Path(tempfile.mkdtemp(prefix="bench-translate-", dir=args.workdir))
    print(f"{trained.model.name} on {volume.name} ({Path(volume.mr_path).name}, prepared {volume.mr.shape}), "
          f"sampler {inference.sampler.name} t={inference.t}, {torch.get_num_threads()} CPU threads", flush=True)

    def evaluation(segment: bool) -> None:
        score_volumes(method, [volume], inference, trained.loader.crop_size, scratch / "evaluate", seed=0,
                      segmenter=segmenter if segment else None, progress=False)

    calls = itertools.count()  # a fresh output folder per call: nothing is skipped as already done
    same_inference = as_overrides("inference", OmegaConf.to_container(trained.inference, enum_to_str=True))

    def translation(segment: bool) -> None:
        translate(compose("translate", [
            f"ckpt={run_dir}", f"input={volume.mr_path}", f"output={scratch / f'translate-{next(calls)}'}",
            f"segment={str(segment).lower()}", "progress=false", *same_inference]))

    evaluation(True), translation(True)  # warm-up: thread pools, allocator, first convolutions
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(translation, True)
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(r"mr2ct/", 25)
        print(text.getvalue(), flush=True)
    results = {}
    for segment in (False, True):
        timed = {"evaluate": [], "translate": []}
        for _ in range(args.repeats):  # interleaved, so a busy spell hits both
            timed["evaluate"].append(seconds_of(lambda: evaluation(segment)))
            timed["translate"].append(seconds_of(lambda: translation(segment)))
        seconds = {name: min(values) for name, values in timed.items()}
        ratio = seconds["translate"] / seconds["evaluate"]
        results[f"segment_{'on' if segment else 'off'}"] = {**seconds, "ratio": ratio}
        print(f"segment {'on ' if segment else 'off'}: evaluation {seconds['evaluate']:.2f} s/volume, translate "
              f"{seconds['translate']:.2f} s/volume, translate/evaluation = {ratio:.2f} (goal <= 1.5)", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()

"""``python -m mr2ct.phantom.grid --out phantom_grid.png [--seed 0] [--index 0]``: one subject of every region
(cervical, thoracic, lumbar) for T1w and T2w, MR next to the oracle CT, mid-sagittal and parasagittal."""

from __future__ import annotations

import argparse
from pathlib import Path

from mr2ct.core.config import PhantomConfig, PhantomPreset, Region
from mr2ct.phantom import PHANTOM_VERSION
from mr2ct.phantom.generate import generate_subject
from mr2ct.phantom.preview import GRID_PRESETS, GRID_REGIONS, write_region_grid


def region_grid(path: Path, seed: int = 0, index: int = 0) -> Path:
    """Generate subject ``index`` of each region and preset (exact landmarks) and draw the grid."""
    subjects = {
        (region, preset): generate_subject(PhantomConfig(preset=PhantomPreset(preset), region=Region(region), seed=seed,
                                                         subjects=index + 1, landmark_noise_mm=0.0), index)
        for region in GRID_REGIONS for preset in GRID_PRESETS
    }
    title = f"phantom v{PHANTOM_VERSION}, seed {seed}, subject {index}: MR next to the oracle CT (same slice)"
    return write_region_grid(subjects, path, title)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--index", type=int, default=0, help="subject index within each region's data set")
    args = parser.parse_args()
    print(region_grid(args.out, args.seed, args.index))


if __name__ == "__main__":
    main()

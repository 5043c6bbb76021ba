"""``segmenter=command``: any external program that maps a CT NIfTI to a label NIfTI.

The config gives a command template with ``{input}`` and ``{output}`` placeholders (split like a shell
line, run without a shell), a ``label_map`` from the program's label ids to VerSe ids (ids not in the map,
e.g. organs, become background), optionally a ``subregion_command`` whose output ids are mapped by
``subregion_label_map`` (empty: already 50 body / 41..48 posterior), and ``required_paths`` (weights and
the like). :meth:`CommandSegmenter.check` verifies the executable(s) and paths before any work starts.

Per volume the CT is written to a temp folder (float32 NIfTI on the CT's own grid), the program runs
there, and its output must be a 3D integer-valued NIfTI on the same grid (any voxel order; it is brought
back to the input's). Failures raise with the program's stderr.

Default table (mr2ct/conf/segmenter/command.yaml): TotalSegmentator v2, task ``total``, multilabel output
(``--ml``), ids from its ``totalsegmentator/map_to_binary.py`` class map: vertebrae_L5 = 27 ... L1 = 31,
T12 = 32 ... T1 = 43, C7 = 44 ... C1 = 50, i.e. ``VerSe id = 51 - TotalSegmentator id``
(``vertebrae_S1`` = 26 and ``sacrum`` = 25 have no VerSe id in mr2ct and become background).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mr2ct.core.io import Volume, load_nifti, save_nifti
from mr2ct.core.labels import VERTEBRA_NAMES
from mr2ct.segment.base import Segmentation, from_canonical, same_grid, to_canonical

PLACEHOLDERS = ("{input}", "{output}")
STDERR_TAIL = 4000
TOTALSEGMENTATOR_V2_TO_VERSE: dict[int, int] = {51 - verse_id: verse_id for verse_id in VERTEBRA_NAMES}
"""TotalSegmentator v2 ``total`` ids of vertebrae_C1..vertebrae_L5 -> VerSe ids (51 - id)."""


class SegmenterCommandError(RuntimeError):
    """The external segmenter is missing, failed, or wrote an unusable output."""


@dataclass
class CommandSegmenter:
    command: str
    label_map: dict[int, int]
    subregion_command: str | None = None
    subregion_label_map: dict[int, int] = field(default_factory=dict)
    required_paths: list[str] = field(default_factory=list)
    timeout_s: float | None = None

    def check(self) -> None:
        """Fail before any work if a template, executable, required path or the label map is unusable."""
        problems = []
        for name, template in (("command", self.command), ("subregion_command", self.subregion_command)):
            if template is None and name == "subregion_command":
                continue
            tokens = shlex.split(template or "")
            if not tokens:
                problems.append(f"{name} is empty")
                continue
            missing = [p for p in PLACEHOLDERS if p not in template]
            if missing:
                problems.append(f"{name} {template!r} lacks the placeholder(s) {missing}")
            if shutil.which(tokens[0]) is None:
                problems.append(f"{name}: executable {tokens[0]!r} not found on PATH")
        problems += [f"required path {p!r} does not exist"
                     for p in self.required_paths if not Path(p).expanduser().exists()]
        if not self.label_map:
            problems.append("label_map is empty: no program id would map to a VerSe vertebra")
        bad = {k: v for k, v in self.label_map.items() if v not in VERTEBRA_NAMES}
        if bad:
            problems.append(f"label_map targets {bad} are not VerSe ids {min(VERTEBRA_NAMES)}..{max(VERTEBRA_NAMES)}")
        if problems:
            raise SegmenterCommandError("segmenter=command cannot run:\n" + "\n".join(f"  - {p}" for p in problems))

    def segment(self, ct_hu: Volume) -> Segmentation:
        labels = map_ids(self._run(self.command, ct_hu), self.label_map, "command output")
        subregions = None
        if self.subregion_command is not None:
            raw = self._run(self.subregion_command, ct_hu)
            subregions = map_ids(raw, self.subregion_label_map, "subregion output") if self.subregion_label_map else raw
        return Segmentation(ct_hu.with_array(labels), None if subregions is None else ct_hu.with_array(subregions))

    def _run(self, template: str, ct_hu: Volume) -> np.ndarray:
        """Run one template on ``ct_hu``; the output's integer ids on ``ct_hu``'s grid and voxel order."""
        with tempfile.TemporaryDirectory(prefix="mr2ct-segment-") as folder:
            input_path, output_path = Path(folder) / "ct.nii.gz", Path(folder) / "labels.nii.gz"
            save_nifti(ct_hu, input_path, dtype=np.float32)
            argv = [token.replace("{input}", str(input_path)).replace("{output}", str(output_path))
                    for token in shlex.split(template)]
            try:
                result = subprocess.run(argv, cwd=folder, capture_output=True, text=True, timeout=self.timeout_s)
            except subprocess.TimeoutExpired as error:
                raise SegmenterCommandError(f"{argv[0]}: no result within {self.timeout_s} s") from error
            except OSError as error:
                raise SegmenterCommandError(f"{argv[0]}: cannot start ({error})") from error
            stderr = result.stderr[-STDERR_TAIL:]
            if result.returncode != 0:
                raise SegmenterCommandError(f"{shlex.join(argv)} failed with exit code {result.returncode}:\n{stderr}")
            if not output_path.exists():
                raise SegmenterCommandError(f"{shlex.join(argv)} wrote no output {output_path.name}; stderr:\n{stderr}")
            try:
                output, _ = load_nifti(output_path)
            except Exception as error:  # nibabel raises many types for corrupt files
                raise SegmenterCommandError(
                    f"{argv[0]}: unreadable output ({type(error).__name__}: {error})") from error
            return output_on_input_grid(output, ct_hu, argv[0])


def output_on_input_grid(output_canonical: Volume, ct_hu: Volume, program: str) -> np.ndarray:
    """The program's (canonical) output as integer ids in ``ct_hu``'s voxel order; errors if the grid differs."""
    canonical_input, back = to_canonical(ct_hu)
    if not same_grid(output_canonical, canonical_input):
        raise SegmenterCommandError(
            f"{program}: output grid {output_canonical.shape} (affine\n{np.round(output_canonical.affine, 3)})\n"
            f"differs from the input grid {canonical_input.shape} (affine\n{np.round(canonical_input.affine, 3)})"
        )
    values = np.asarray(output_canonical.array)
    if not np.all(np.isfinite(values)) or not np.array_equal(values, np.round(values)) or values.min() < 0:
        raise SegmenterCommandError(f"{program}: output holds non-integer or negative label values")
    return from_canonical(values.astype(np.int64), back, ct_hu).array


def map_ids(ids: np.ndarray, mapping: dict[int, int], what: str) -> np.ndarray:
    """Map label ids through ``mapping`` (int16); ids not in it become 0."""
    table = np.zeros(max(int(ids.max(initial=0)), max(mapping, default=0)) + 1, dtype=np.int16)
    for source, target in mapping.items():
        if source < 0:
            raise ValueError(f"{what}: label_map source id {source} is negative")
        table[int(source)] = int(target)
    return table[ids]


#!/usr/bin/env bash
# Cross-contrast landmark bootstrap, as the paper made its T1w landmarks (issue 18): a model trained on T2w
# derives the MR landmarks of T1w subjects that have none (python -m mr2ct.landmarks, pass 1); a model trained on
# the T1w subjects that succeeded retries the failures (pass 2). The report counts per pass how many succeeded,
# failed and were skipped (already had landmarks).
#   experiments/landmark_bootstrap.sh                                    # CPU default scale
#   experiments/landmark_bootstrap.sh experiment=paper_pix2pix trainer=gpu   # paper scale (GPU)
# Extra arguments are Hydra overrides for both training jobs. BOOT_DIR (default multirun/landmark_bootstrap/<time>)
# holds: t2w/ (pass 1's run), t1w_root/ (the T1w subjects; their landmarks are written here), t1w_succeeded/
# (the subjects pass 1 gave landmarks, linked), t1w/ (pass 2's run), pass1.json, pass2.json, bootstrap.md.
# T1W_SUBJECTS / T1W_SEED choose the T1w cohort (a seed apart from the T2w training phantom's). A T2w model that
# BOOT_DIR/t2w already holds (results.json) is kept; the passes always start again from a fresh T1w root.
set -euo pipefail
cd "$(dirname "$0")/.."
boot_dir=${BOOT_DIR:-multirun/landmark_bootstrap/$(date +%Y-%m-%d_%H-%M-%S)}
mkdir -p "$boot_dir"

# The T2w model, and T1w subjects without MR landmarks (the phantom's subject layout, landmarks removed).
if [ -f "$boot_dir/t2w/results.json" ]; then
  echo "pass 1 model: $boot_dir/t2w is done, kept"
else
  python -m mr2ct.train data=phantom_t2w "data.test_sets=[]" "hydra.run.dir=$boot_dir/t2w" \
    experiment_name=landmark_bootstrap "$@"
fi
rm -rf "$boot_dir/t1w_root" "$boot_dir/t1w_succeeded" "$boot_dir/t1w" "$boot_dir"/pass*.json
python -m mr2ct.phantom "out_dir=$boot_dir/t1w_root" preset=t1w "subjects=${T1W_SUBJECTS:-16}" "seed=${T1W_SEED:-1}" \
  val_fraction=0.125 test_fraction=0.375 "hydra.run.dir=$boot_dir/.phantom"
rm -f "$boot_dir"/t1w_root/*/mr_landmarks.json

# Pass 1 (exit code 1 when some subjects failed: expected, they are retried).
python -m mr2ct.landmarks "ckpt=$boot_dir/t2w" "root=$boot_dir/t1w_root" "log=$boot_dir/pass1.json" || true

# The subjects that succeeded, as a subject root of their own; it needs a train, a val and a test subject.
if python - "$boot_dir" <<'PY'
import csv, os, sys
from pathlib import Path
boot = Path(sys.argv[1]).resolve()
root, target = boot / "t1w_root", boot / "t1w_succeeded"
with (root / "manifest.csv").open(newline="") as handle:
    reader = csv.DictReader(handle)
    rows = [row for row in reader if (root / row["subject"] / "mr_landmarks.json").is_file()]
    columns = reader.fieldnames
splits = {row["split"] for row in rows}
if not {"train", "val", "test"} <= splits:
    print(f"pass 1 gave landmarks to {len(rows)} subject(s) in splits {sorted(splits)}: too few to train a T1w model")
    sys.exit(3)
target.mkdir(exist_ok=True)
for row in rows:
    link = target / row["subject"]
    if not link.exists():
        os.symlink(root / row["subject"], link, target_is_directory=True)
with (target / "manifest.csv").open("w", newline="") as handle:
    writer = csv.DictWriter(handle, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
PY
then
  python -m mr2ct.train data=nifti "data.root=$boot_dir/t1w_succeeded" "hydra.run.dir=$boot_dir/t1w" \
    experiment_name=landmark_bootstrap "$@"
  # Pass 2: only the subjects still without landmarks (overwrite=false).
  python -m mr2ct.landmarks "ckpt=$boot_dir/t1w" "root=$boot_dir/t1w_root" "log=$boot_dir/pass2.json" || true
  passes="$boot_dir/pass1.json,$boot_dir/pass2.json"
else
  passes="$boot_dir/pass1.json"
fi
python -m mr2ct.report.refinement "passes=[$passes]" "out=$boot_dir/bootstrap.md"
echo "report: $boot_dir/bootstrap.md"

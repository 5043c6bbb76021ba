#!/usr/bin/env bash
# Shared by the training recipes: run the sweep(s) multirun_sweeps/<name>.yaml, then build their tables.
#   experiments/training_sweep.sh NAMES TABLES [hydra overrides...]
# NAMES is one sweep or several, comma-separated (e.g. the 2D and 3D rows of the method comparison); the first
# names the folders. TABLES is mr2ct.tables' list, e.g. "[table1_image_quality,table2_dice]". SWEEP_DIR /
# REPORT_DIR choose the folders (default: multirun/NAME/<time> and reports/NAME/<time>); with several sweeps
# each runs into SWEEP_DIR/<sweep>.
set -euo pipefail
cd "$(dirname "$0")/.."
IFS=, read -r -a names <<< "$1"
tables=$2
shift 2
stamp=$(date +%Y-%m-%d_%H-%M-%S)
sweep_dir=${SWEEP_DIR:-multirun/${names[0]}/$stamp}
report_dir=${REPORT_DIR:-reports/${names[0]}/$stamp}

for name in "${names[@]}"; do
  target=$sweep_dir
  [ ${#names[@]} -gt 1 ] && target=$sweep_dir/$name
  python -m mr2ct.train -m --config-dir multirun_sweeps --config-name "$name" "hydra.sweep.dir=$target" "$@"
done
python -m mr2ct.tables "runs=$sweep_dir" "out_dir=$report_dir" "tables=$tables"
echo "report: $report_dir/index.html"

#!/usr/bin/env bash
# Shared by the training recipes: run the sweep multirun_sweeps/<name>.yaml, then build its tables.
#   experiments/training_sweep.sh NAME TABLES [hydra overrides...]
# TABLES is mr2ct.tables' list, e.g. "[table1_image_quality,table2_dice]". SWEEP_DIR / REPORT_DIR choose
# the folders (default: multirun/NAME/<time> and reports/NAME/<time>).
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1 tables=$2
shift 2
stamp=$(date +%Y-%m-%d_%H-%M-%S)
sweep_dir=${SWEEP_DIR:-multirun/$name/$stamp}
report_dir=${REPORT_DIR:-reports/$name/$stamp}

python -m mr2ct.train -m --config-dir multirun_sweeps --config-name "$name" "hydra.sweep.dir=$sweep_dir" "$@"
python -m mr2ct.tables "runs=$sweep_dir" "out_dir=$report_dir" "tables=$tables"
echo "report: $report_dir/index.html"

#!/usr/bin/env bash
# Method comparison (paper Tables 1, 2 and 3, Fig. 5 and segmentation overlays): every method in conf/model
# trained on T1w and on T2w, two-landmark registration, evaluated on each data set's test split and the
# external pair; then the tables and figures.
#   experiments/method_comparison.sh                   # CPU default scale
#   experiments/method_comparison.sh experiment=...    # paper scale (GPU)
# Extra arguments are Hydra overrides for every training job. SWEEP_DIR / REPORT_DIR choose the folders.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=$(date +%Y-%m-%d_%H-%M-%S)
sweep_dir=${SWEEP_DIR:-multirun/method_comparison/$stamp}
report_dir=${REPORT_DIR:-reports/method_comparison/$stamp}

python -m mr2ct.train -m --config-dir multirun_sweeps --config-name method_comparison \
  "hydra.sweep.dir=$sweep_dir" "$@"
python -m mr2ct.tables "runs=$sweep_dir" "out_dir=$report_dir" \
  "tables=[table1_image_quality,table2_dice,table3_posterior_dice]"
echo "report: $report_dir/index.html"

#!/usr/bin/env bash
# Registration ablation (paper Fig. 4 and the 0/1/2-landmark Dice comparison):
# trains pix2pix and ddim_image with registration none/one_point/two_point, then builds the tables and figures.
#   experiments/registration_ablation.sh                          # CPU default scale
#   experiments/registration_ablation.sh experiment=paper_pix2pix # paper scale (GPU)
# Extra arguments are Hydra overrides for every training job. SWEEP_DIR / REPORT_DIR choose the folders.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=$(date +%Y-%m-%d_%H-%M-%S)
sweep_dir=${SWEEP_DIR:-multirun/registration_ablation/$stamp}
report_dir=${REPORT_DIR:-reports/registration_ablation/$stamp}

python -m mr2ct.train -m --config-dir multirun_sweeps --config-name registration_ablation \
  "hydra.sweep.dir=$sweep_dir" "$@"
python -m mr2ct.tables "runs=$sweep_dir" "out_dir=$report_dir" \
  "tables=[registration_ablation,table1_image_quality,table2_dice,table3_posterior_dice]"
echo "report: $report_dir/index.html"

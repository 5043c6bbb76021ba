#!/usr/bin/env bash
# DDIM inference ablation (paper Tables S1 and S2): one checkpoint evaluated with t 10,20,50 x eta 0,1 x
# w 0,1,2, plus DDPM; nothing is retrained.
#   experiments/inference_ablation.sh ckpt=outputs/default/<run>   # ablate an existing training run
#   experiments/inference_ablation.sh [train overrides]             # first train ddim_image, then ablate it
#   experiments/inference_ablation.sh experiment=...                # paper scale (GPU)
# Without ckpt=, the extra arguments go to the training job, and those that evaluate also knows
# (logger, segmenter, paths, seed) go to the evaluation jobs as well. SWEEP_DIR / REPORT_DIR choose the folders.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=$(date +%Y-%m-%d_%H-%M-%S)
sweep_dir=${SWEEP_DIR:-multirun/inference_ablation/$stamp}
report_dir=${REPORT_DIR:-reports/inference_ablation/$stamp}

ckpt=""
rest=()    # every argument but ckpt=
shared=()  # the ones mr2ct.evaluate knows too
for arg in "$@"; do
  case "$arg" in
    ckpt=*) ckpt=${arg#ckpt=} ;;
    logger*|segmenter*|paths.*|seed=*) rest+=("$arg"); shared+=("$arg") ;;
    *) rest+=("$arg") ;;
  esac
done
if [[ -z "$ckpt" ]]; then
  ckpt="$sweep_dir/model"
  python -m mr2ct.train model=ddim_image experiment_name=inference_ablation "hydra.run.dir=$ckpt" "${rest[@]}"
  evaluate_args=("${shared[@]}")
else
  evaluate_args=("${rest[@]}")
fi
python -m mr2ct.evaluate -m --config-dir multirun_sweeps --config-name inference_ablation \
  "ckpt=$ckpt" "hydra.sweep.dir=$sweep_dir/ddim" "${evaluate_args[@]}"
python -m mr2ct.evaluate -m --config-dir multirun_sweeps --config-name inference_ablation_ddpm \
  "ckpt=$ckpt" "hydra.sweep.dir=$sweep_dir/ddpm" "${evaluate_args[@]}"
python -m mr2ct.tables "runs=$sweep_dir" "out_dir=$report_dir" \
  "tables=[tableS1_inference_image_quality,tableS2_inference_dice]"
echo "report: $report_dir/index.html"

#!/usr/bin/env bash
# Registration ablation (paper Fig. 4 and the 0/1/2-landmark Dice comparison):
# trains pix2pix and ddim_image with registration none/one_point/two_point, then builds the tables and figures.
#   experiments/registration_ablation.sh                          # CPU default scale
#   experiments/registration_ablation.sh experiment=paper_pix2pix # paper scale (GPU)
# Extra arguments are Hydra overrides for every training job. SWEEP_DIR / REPORT_DIR choose the folders.
exec "$(dirname "$0")/training_sweep.sh" registration_ablation "[registration_ablation,table1_image_quality,table2_dice,table3_posterior_dice]" "$@"

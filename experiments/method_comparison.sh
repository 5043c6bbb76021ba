#!/usr/bin/env bash
# Method comparison (paper Tables 1, 2 and 3, Fig. 5 and segmentation overlays): the seven 2D methods trained on
# T1w and on T2w, the three 3D methods on T2w (as in the paper; sampled with inference=ddim_3d), two-landmark
# registration, evaluated on each data set's test split and the external pair (the 3D runs also on the 1 mm
# isotropic grid); then the tables and figures.
#   experiments/method_comparison.sh                   # CPU default scale
#   experiments/method_comparison.sh experiment=...    # paper scale (GPU)
# Extra arguments are Hydra overrides for every training job. SWEEP_DIR / REPORT_DIR choose the folders.
exec "$(dirname "$0")/training_sweep.sh" method_comparison,method_comparison_3d "[table1_image_quality,table2_dice,table3_posterior_dice,table_isotropic_dice]" "$@"

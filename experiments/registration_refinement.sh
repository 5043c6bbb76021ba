#!/usr/bin/env bash
# Registration refinement, the loop of paper Fig. 1 (issue 18): round 0 registers CT onto MR with the subjects'
# clicked MR landmarks (the phantom's, with CLICK_NOISE_MM of selection noise per axis, default 3) and trains;
# round k derives every subject's MR landmarks with round k-1's model (translate the MR, segment the synthetic
# CT on the MR grid with the run's segmenter, take centres: registration.landmarks_from, override_landmarks),
# registers again and retrains. A subject whose derived landmarks are implausible keeps its clicked ones; a
# plausible derived set replaces them landmark by landmark (a clicked one stays where the set has none, e.g. a
# spinous centre left out because its distance to its body disagrees with the CT).
# The report gives per round the median error of the landmarks used against the phantom's exact ones (mm),
# the median registration error against the true transform (mm) and the posterior Dice of the round's model.
#   experiments/registration_refinement.sh                                # CPU default scale, 3 rounds
#   ROUNDS=4 experiments/registration_refinement.sh model=ddim_image      # another method
#   experiments/registration_refinement.sh experiment=paper_pix2pix trainer=gpu   # paper scale (GPU)
# Extra arguments are Hydra overrides for every training job (the extra test sets are off unless given again:
# data.test_sets=...). ROUNDS, CLICK_NOISE_MM and LOOP_DIR (default multirun/registration_refinement/<time>)
# choose the rounds, the noise and the folder: LOOP_DIR/round<k> per round, LOOP_DIR/refinement.md the report.
# A round whose run dir holds results.json is kept, so an interrupted loop resumes where it stopped (delete
# the round's folder to redo it).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
noise=${CLICK_NOISE_MM:-3}
loop_dir=${LOOP_DIR:-multirun/registration_refinement/$(date +%Y-%m-%d_%H-%M-%S)}

runs=()
for ((k = 0; k < rounds; k++)); do
  run=$loop_dir/round$k
  derive=()
  if ((k > 0)); then
    derive=("registration.landmarks_from=$loop_dir/round$((k - 1))" registration.override_landmarks=true)
  fi
  if [ -f "$run/results.json" ]; then
    echo "round $k: $run is done, kept"
  else
    python -m mr2ct.train "data.phantom.landmark_noise_mm=$noise" "data.test_sets=[]" "hydra.run.dir=$run" \
      experiment_name=registration_refinement ${derive[@]+"${derive[@]}"} "$@"
  fi
  runs+=("$run")
done
python -m mr2ct.report.refinement "runs=[$(IFS=,; echo "${runs[*]}")]" "out=$loop_dir/refinement.md"
echo "report: $loop_dir/refinement.md"

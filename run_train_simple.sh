#!/usr/bin/env bash
# Trains the two-stage cascade transformer (fixed RMS scaling) on the built-in
# demo music: 24 synthetic songs made by data.py in seconds, no download.
# The default run (10 epochs, 270 steps) took 1 min 11 s on a 2-core CPU with
# fast bf16 matmuls (bfloat16 there, else float32). Outputs go to checkpoints/:
# epoch_N_step_S.pth, metrics.csv and samples/epoch_N_{input,target,output}.wav.
# Arguments pass through to train.py, e.g.:
#   ./run_train_simple.sh --data_dir=~/music --epochs=50
#   ./run_train_simple.sh --resume=auto
set -euo pipefail
cd "$(dirname "$0")"
exec python train.py "$@"

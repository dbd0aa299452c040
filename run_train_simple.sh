#!/usr/bin/env bash
# Trains the two-stage cascade transformer (fixed RMS scaling) on the built-in
# demo music: synthetic songs made by lib/data.py, no download. Outputs go to
# checkpoints/: epoch_N_step_S.pth, metrics.csv and samples/epoch_N_{input,target,output}.wav.
# How long it takes is in the README, with the command that measured it.
# Arguments pass through to train.py, e.g.:
#   ./run_train_simple.sh --data_dir=~/music --epochs=50
#   ./run_train_simple.sh --resume=auto
set -euo pipefail
cd "$(dirname "$0")"
exec python train.py "$@"

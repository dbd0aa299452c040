#!/usr/bin/env bash
# Trains the two-stage cascade transformer (fixed RMS scaling) on Bach chorales rendered with
# General MIDI instruments (scores that ship with music21, pretty_midi's SoundFont: no download): stage 1
# first learns which notes sound, then the whole cascade trains on triplets with a right answer.
# Outputs go to checkpoints/: epoch_N_step_S.pth, metrics.csv and samples/ (each epoch's
# input, target and output WAV and epoch_N_transcription.png).
# How long it takes is in the README, with the command that measured it.
# Arguments pass through to train.py, e.g.:
#   ./run_train_simple.sh --data_dir=~/music --epochs=50
#   ./run_train_simple.sh --resume=auto
set -euo pipefail
cd "$(dirname "$0")"
exec python train.py "$@"

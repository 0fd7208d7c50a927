#!/usr/bin/env bash
# Feature-visualization gallery of the shipped vgg-mini, made with the CLI (README "Feature
# visualization"). About 10 minutes on a 2-core CPU.
#   bash scripts/optvis_gallery.sh [OUT_DIR]
set -euo pipefail
out=${1:-docs/optvis}
mkdir -p "$out"
# every class, Lucid's defaults (128 px, FFT + decorrelated colour, standard transforms, 512 steps)
jaxinterp visualize --out "$out/classes.png" --force
# the same classes, four diverse images each
jaxinterp visualize --batch 4 --diversity 5 --size 64 --steps 256 --out "$out/classes_diverse.png" --force
# channel grids of three layers at the model's input size
jaxinterp visualize --layer relu2_2 --size 64 --steps 512 --out "$out/relu2_2.png" --force
jaxinterp visualize --layer relu3_2 --channel 0-31 --size 64 --steps 512 --out "$out/relu3_2.png" --force
jaxinterp visualize --layer relu4_2 --channel 0-31 --size 64 --steps 512 --out "$out/relu4_2.png" --force
# DeepDream objective of the last conv block, and random directions in it
jaxinterp visualize --layer relu4_2 --objective layer --batch 4 --size 96 --out "$out/relu4_2_deepdream.png" --force
jaxinterp visualize --layer relu4_2 --objective direction --directions 8 --size 64 --out "$out/relu4_2_directions.png" --force

#!/usr/bin/env bash
# The CNN-teacher experiment (README.md beside this script): Fashion-MNIST written out as PNG image folders, a CNN
# teacher trained with libtorch and exported to ONNX, then one student distilled from it, from our ViT teacher, and
# trained without a teacher, with all labels and as a transfer set of 100 labeled images.
# Usage, from the repository root: bench/experiments/cnn-teacher/run.sh WORK_DIR [SEED...]
# (about 35 minutes for the teacher and 15 per seed on 2 cores; to reuse the teacher measured here instead of
# training one, copy bench/experiments/cnn-teacher/fashion-mnist-cnn.onnx to WORK_DIR/cnn-teacher/model.onnx first).
set -euo pipefail
work="${1:?usage: run.sh WORK_DIR [SEED...]}"
shift
seeds=("${@:-0}")
./distill4j info >/dev/null  # builds the project when needed
cp="target/library/classes:target/cli/classes:$(cat target/cli/classpath.txt)"
experiment() { java -Xmx6g -cp "$cp" "org.distill4j.experiments.$@"; }

# 1. The data: all 60,000 training images for the teacher; the first 20,000 for the students (an image folder has
#    no --train-limit order to share with the IDX files: its images are sorted by class).
[ -d "$work/png-60k" ] || experiment ExportImageFolder --train 60000 "$work/png-60k"
[ -d "$work/png-20k" ] || experiment ExportImageFolder --train 20000 "$work/png-20k"

# 2. The CNN teacher (libtorch, 15 epochs), exported to ONNX and checked against ONNX Runtime.
[ -f "$work/cnn-teacher/model.onnx" ] || experiment CnnTeacher --data "$work/png-60k" --epochs 15 --seed 0 \
    --out "$work/cnn-teacher"

# 3. The students (mnist-student), Fashion-MNIST's normalisation (what both teachers were trained with), all
#    10,000 test images. "full": 4 epochs over the 20,000 labeled images; "transfer": the demo's settings, 100 of
#    the 20,000 keep their labels, the teacher labels every image.
full=(--model mnist-student --data "$work/png-20k" --mean 0.2860 --std 0.3530 --epochs 4 --device cpu)
transfer=(--model mnist-student --data "$work/png-20k" --mean 0.2860 --std 0.3530 --labeled 100 --epochs 3
          --warmup-epochs 0.3 --no-augment --tau 1 --device cpu)
vit=java/cli/teachers/fashion-mnist-teacher.safetensors
cnn="$work/cnn-teacher/model.onnx"
for seed in "${seeds[@]}"; do
  run() { local name="$1"; shift; [ -f "$work/$name-s$seed/results.json" ] ||
          ./distill4j "$@" --seed "$seed" --out "$work/$name-s$seed"; }
  run none train "${full[@]}"
  for mode in soft hard; do
    run "vit-$mode" distill "${full[@]}" --teacher "$vit" --distillation "$mode"
    run "cnn-$mode" distill "${full[@]}" --teacher "$cnn" --distillation "$mode"
    run "t-vit-$mode" distill "${transfer[@]}" --teacher "$vit" --distillation "$mode"
    run "t-cnn-$mode" distill "${transfer[@]}" --teacher "$cnn" --distillation "$mode"
  done
done

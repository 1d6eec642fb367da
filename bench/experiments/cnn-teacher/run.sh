#!/usr/bin/env bash
# The CNN-teacher experiment (README.md beside this script): Fashion-MNIST written out as PNG image folders, a CNN
# teacher trained with libtorch and exported to ONNX, then one student distilled from it, from our ViT teacher, and
# trained without a teacher. Usage: bench/experiments/cnn-teacher/run.sh WORK_DIR [SEED...]  (from the repository
# root; about 25 minutes for the teacher and 10 per seed on 2 cores). Results land in WORK_DIR.
set -euo pipefail
work="${1:?usage: run.sh WORK_DIR [SEED...]}"
shift
seeds=("${@:-0}")
./distill4j info >/dev/null  # builds the project when needed
cp="target/library/classes:target/cli/classes:$(cat target/cli/classpath.txt)"
bench() { java -Xmx6g -cp "$cp" "org.distill4j.experiments.$@"; }

# 1. The data: all 60,000 training images for the teacher; the first 20,000 for the students (an image folder has
#    no --train-limit order to share with the IDX files: its images are sorted by class).
[ -d "$work/png-60k" ] || bench ExportImageFolder --train 60000 "$work/png-60k"
[ -d "$work/png-20k" ] || bench ExportImageFolder --train 20000 "$work/png-20k"

# 2. The CNN teacher (libtorch, 15 epochs), exported to ONNX and checked against ONNX Runtime.
[ -f "$work/cnn-teacher/model.onnx" ] || bench CnnTeacher --data "$work/png-60k" --epochs 15 --seed 0 \
    --out "$work/cnn-teacher"

# 3. The students: mnist-student, 4 epochs over the 20,000 images, Fashion-MNIST's normalisation (what both
#    teachers were trained with), all 10,000 test images.
common=(--model mnist-student --data "$work/png-20k" --mean 0.2860 --std 0.3530 --epochs 4 --device cpu)
for seed in "${seeds[@]}"; do
  run() { local name="$1"; shift; [ -f "$work/$name-s$seed/results.json" ] ||
          ./distill4j "$@" "${common[@]}" --seed "$seed" --out "$work/$name-s$seed"; }
  run none train
  for mode in soft hard; do
    run "vit-$mode" distill --teacher java/cli/teachers/fashion-mnist-teacher.safetensors --distillation "$mode"
    run "cnn-$mode" distill --teacher "$work/cnn-teacher/model.onnx" --distillation "$mode"
  done
done

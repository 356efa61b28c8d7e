#!/usr/bin/env bash
# The main job on the built-in phantom data, end to end on a CPU (about 10 minutes on 2 cores):
# a virtualenv with requirements.txt, phantom PET/CT DICOM studies -> TFRecords, a short SRGAN training run,
# a TF Serving SavedModel export, and a fused PET/CT image generated from a phantom study with that export.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
fi
PY=.venv/bin/python
export TF_CPP_MIN_LOG_LEVEL=2
$PY train_keras.py --flagfile=flags/demo.cfg "$@"
$PY export_savedmodel.py --checkpoint runs/demo --export_dir exports --model_name ctpet_srgan --version 1 --overwrite
case_dir=$(ls -d data/demo/phantom_dicom/case_* | head -n 1)
mkdir -p outputs
$PY generate.py --input_ct "$case_dir/ct" --input_pet "$case_dir/pet" --model exports/ctpet_srgan/1 \
  --output_path outputs/demo_fused.png --overwrite
$PY generate.py --input_ct "$case_dir/ct" --input_pet "$case_dir/pet" --model exports/ctpet_srgan/1 \
  --output_path outputs/demo_sr.nii.gz --overwrite
echo "done: runs/demo (model, TensorBoard logs), exports/ctpet_srgan/1 (SavedModel), outputs/demo_fused.png, outputs/demo_sr.nii.gz"

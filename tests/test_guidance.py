"""Guidance metrics on constructed slices with known answers: CT reliance, misregistration, CT-only imprint,
PET-only lesion recovery, hallucinations at a matched false-positive rate."""

import math

import cv2
import numpy as np
import pytest

from ctpet_srgan import guidance as gd
from ctpet_srgan.degradation import downsample_area, gaussian_blur

SP = (2.0, 2.0)  # HR pixel size (row, col) mm
N = 64


def _disk(center_rc, radius_px, shape=(N, N)):
    r, c = np.ogrid[: shape[0], : shape[1]]
    return (r - center_rc[0]) ** 2 + (c - center_rc[1]) ** 2 <= radius_px**2


BODY = _disk((32, 32), 28)
ORGAN = _disk((24, 38), 8)  # on the CT (60 HU) and in the PET (3 SUV): guidance helps here
LUNG = _disk((40, 20), 6)  # a hole in the body (-850 HU), 0.3 SUV
CYST = _disk((44, 42), 4)  # CT only: water in tissue, the PET does not change
LESION = _disk((20, 16), 3)  # PET only: 4 SUV, nothing on the CT

CT = np.where(BODY, 40.0, -1000.0)
CT[ORGAN], CT[LUNG], CT[CYST] = 60.0, -850.0, 0.0
TRUTH = np.where(BODY, 1.0, 0.0)
TRUTH[ORGAN], TRUTH[LUNG], TRUTH[LESION] = 3.0, 0.3, 4.0
TRUTH = gaussian_blur(TRUTH, SP, 2.0)
LR = downsample_area(gaussian_blur(TRUTH, SP, 5.7), 2)


def _up(lr):
    return cv2.resize(np.asarray(lr, np.float32), (lr.shape[-1] * 2, lr.shape[-2] * 2), interpolation=cv2.INTER_CUBIC)


def pet_only(lr, ct):  # ignores the CT
    return _up(lr)


def oracle(lr, ct):  # takes the organ's sharp edge from the CT: right where CT and PET agree
    organ = (np.abs(np.asarray(ct) - 60.0) < 5).astype(np.float32) * 2.0
    return _up(lr) + organ - gaussian_blur(organ, SP, 5.7)


def edge_copier(lr, ct):  # "CT edge => PET edge": paints every CT contrast inside the body onto the PET
    ct = np.asarray(ct, np.float32)
    inside = gd.body_mask(ct)
    soft = np.clip(ct, -100, 200)
    return _up(lr) + inside * 0.02 * (soft - gaussian_blur(soft, SP, 6.0))


def _scores(predict, ct, with_ssim=False):
    """PSNR (and SSIM) of a model on the constructed slice with that CT, on the body of the true CT."""
    part = gd.image_parts(TRUTH, predict(LR, ct), data_range=10.0, mask=gd.body_mask(CT), with_ssim=with_ssim)
    return gd.pool_image_parts([part], 10.0)


def _reliance(predict, with_ssim=False):
    """CT reliance as the evaluation's guidance section computes it (true CT minus the uninformative CT)."""
    return gd.ct_reliance(_scores(predict, CT, with_ssim), _scores(predict, gd.uninformative_ct(CT), with_ssim))


def _sweep(predict, shifts_mm=(0, 2, 5, 10), extra=None):
    """The misregistration sweep as the evaluation's guidance section computes it."""
    rows = {}
    for s, ct in gd.misregistered_cts(CT, SP, shifts_mm).items():
        rows[s] = dict(_scores(predict, ct), **(extra(predict(LR, ct)) if extra else {}))
    return gd.misregistration_sweep(rows)


def test_body_mask_fills_the_lungs_and_the_uninformative_ct_is_water_in_air():
    m = gd.body_mask(CT)
    assert m[LUNG].all() and m[BODY].all() and not m[~BODY].any()
    u = gd.uninformative_ct(CT)
    assert u.dtype == np.float32 and set(np.unique(u[BODY])) == {0.0} and set(np.unique(u[~BODY])) == {-1000.0}
    stack = gd.uninformative_ct(np.stack([CT, np.full_like(CT, -1000.0)]))
    assert np.array_equal(stack[0], u) and (stack[1] == -1000).all()


def test_a_pet_only_model_has_zero_reliance_and_a_ct_using_one_a_positive_one():
    r0 = _reliance(pet_only)
    assert r0["reliance_psnr"] == 0.0 and r0["true_psnr"] == r0["uninformative_psnr"]
    r1 = _reliance(oracle, with_ssim=True)
    assert r1["reliance_psnr"] > 1.0 and r1["reliance_ssim"] > 0
    assert r1["uninformative_psnr"] == pytest.approx(r0["true_psnr"], abs=1e-6)  # no organ on the flat CT


def test_shift_image_mm_moves_the_content_by_that_many_mm():
    blob = np.where(_disk((30, 30), 5), 100.0, -1000.0)
    for shift in ((0.0, 5.0), (-3.0, 4.0), (6.0, 0.0)):
        moved = gd.shift_image_mm(blob, shift, SP)
        w0, w1 = blob + 1000, moved + 1000  # centroid: linear interpolation keeps it exactly
        rr, cc = np.mgrid[:N, :N]
        got = [((w1 * a).sum() / w1.sum() - (w0 * a).sum() / w0.sum()) * s for a, s in ((rr, SP[0]), (cc, SP[1]))]
        assert got == pytest.approx(shift, abs=0.05)
    whole = gd.shift_image_mm(blob, (0.0, 4.0), SP)  # 2 px: exact, air comes in from the left
    assert np.array_equal(whole[:, 2:], blob[:, :-2]) and (whole[:, :2] == -1000).all()
    stack = gd.shift_image_mm(np.stack([blob, blob]), (0.0, 4.0), SP)
    assert np.array_equal(stack[1], whole)


def test_misregistration_sweep_costs_a_ct_using_model_and_not_a_pet_only_one():
    rows = _sweep(oracle, (0, 2, 5, 10), extra=lambda p: {"organ_mean": float(p[ORGAN].mean())})
    assert [r["shift_mm"] for r in rows] == [0, 2, 5, 10]
    psnr = [r["psnr"] for r in rows]
    assert psnr[0] > psnr[1] > psnr[2] > psnr[3]
    assert rows[0]["organ_mean"] > rows[3]["organ_mean"]
    flat = _sweep(pet_only)
    assert len({r["psnr"] for r in flat}) == 1
    # the sweep shifts the CT by the asked distance: the edge-copier's imprint of the cyst follows it
    rows = _sweep(edge_copier, (6,), extra=lambda p: {"dip_col": float(np.argmin((p - pet_only(LR, CT))[44]))})
    ref = float(np.argmin((edge_copier(LR, CT) - pet_only(LR, CT))[44]))
    assert rows[0]["dip_col"] - ref == pytest.approx(6 / SP[1], abs=1)


def test_structure_masks_follow_the_records_geometry():
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = (-63.0, -63.0, 10.0)  # pixel (i, j) centre at x = -63 + 2i, y = -63 + 2j, slice at z = 10
    sphere = {"shape": "sphere", "center_mm": [1.0, -1.0, 13.0], "diameter_mm": 10.0, "shift_mm": [8.0, 0.0, 0.0]}
    m = gd.structure_mask_on_slice(sphere, aff, (N, N))
    jj, ii = np.nonzero(m)
    assert (ii.mean(), jj.mean()) == pytest.approx((32.0, 31.0), abs=0.01)  # x = 1, y = -1
    assert m.sum() * 4 == pytest.approx(math.pi * (25 - 9), rel=0.15)  # cross-section radius 4 mm at dz = 3
    shifted = gd.structure_mask_on_slice(sphere, aff, (N, N), at_ct=True)
    assert np.array_equal(shifted[:, 4:], m[:, :-4])  # 8 mm = 4 px along +x (columns)
    slab = {"shape": "slab", "center_mm": [1.0, 1.0, 10.0], "diameter_mm": 40.0, "thickness_mm": 4.0,
            "normal": [1.0, 0.0, 0.0]}
    s = gd.structure_mask_on_slice(slab, aff, (N, N))
    assert set(np.nonzero(s)[1]) == {31, 32, 33}  # |x - 1| <= 2 mm
    tube = {"shape": "cylinder", "center_mm": [1.0, 1.0, 0.0], "diameter_mm": 6.0, "length_mm": 30.0,
            "axis": [0.0, 0.0, 1.0]}
    assert gd.structure_mask_on_slice(tube, aff, (N, N)).sum() == pytest.approx(math.pi * 9 / 4, rel=0.3)
    assert not gd.structure_mask_on_slice(dict(tube, length_mm=10.0), aff, (N, N)).any()  # ends at z = 5
    with pytest.raises(ValueError, match="shape"):
        gd.inside_structure({"shape": "cone", "center_mm": [0, 0, 0], "diameter_mm": 1}, np.zeros((1, 3)))


def test_a_model_that_copies_ct_edges_imprints_the_ct_only_structures():
    masks = [CYST]
    assert gd.ct_only_imprint(TRUTH, TRUTH, masks)["imprint"] == 0.0
    base = gd.ct_only_imprint(pet_only(LR, CT), TRUTH, masks)
    copied = gd.ct_only_imprint(edge_copier(LR, CT), TRUTH, masks)
    assert base["imprint"] < 0.02 and copied["imprint"] > 0.1 and copied["per_structure"][0] < 0  # darker: a cyst
    assert copied["n"] == 1
    empty = gd.ct_only_imprint(TRUTH, TRUTH, [np.zeros_like(CYST)])
    assert math.isnan(empty["imprint"]) and empty["n"] == 0


def test_pet_only_lesions_lose_contrast_under_a_model_that_trusts_only_the_ct():
    def ct_smoother(lr, ct):  # flattens the PET wherever the CT is flat: PET-only findings are suppressed
        up = _up(lr)
        flat = np.abs(np.asarray(ct) - 40.0) < 5
        return np.where(flat, gaussian_blur(up, SP, 12.0), up)

    lesions = [{"center_rc": (20, 16), "radius_mm": 6.0, "uptake_ratio": 4.0, "has_ct_correlate": False},
               {"center_rc": (24, 38), "radius_mm": 8.0, "uptake_ratio": 3.0, "has_ct_correlate": True}]
    bkg = BODY & ~_disk((20, 16), 6) & ~ORGAN & ~LUNG

    def recovery(img, les=lesions):
        return gd.pet_only_recovery(gd.lesion_crcs([img], [les], SP, background_masks=[bkg], pet_only=True))

    truth, plain, smoothed = recovery(TRUTH), recovery(pet_only(LR, CT)), recovery(ct_smoother(LR, CT))
    assert truth["n_lesions"] == plain["n_lesions"] == smoothed["n_lesions"] == 1  # with a CT correlate: not counted
    assert truth["crc"] > plain["crc"] > smoothed["crc"] + 0.1
    assert len(gd.lesion_crcs([TRUTH], [lesions], SP, background_masks=[bkg])) == 2  # all scored lesions
    unknown = [{k: v for k, v in les.items() if k != "has_ct_correlate"} for les in lesions]
    assert recovery(TRUTH, unknown)["n_lesions"] == 0  # a lesion without the key is not taken for PET-only
    assert recovery(TRUTH, [dict(lesions[0], scored=False)])["n_lesions"] == 0  # only on the slice nearest its centre
    assert math.isnan(recovery(TRUTH, [])["crc"])


def test_image_parts_pool_over_slices_and_studies_as_one_set_of_pixels():
    pred = pet_only(LR, CT)
    body = gd.body_mask(CT)
    whole = gd.pool_image_parts([gd.image_parts(TRUTH, pred, data_range=10.0, mask=body, with_ssim=True)], 10.0)
    top = gd.image_parts(TRUTH[:32], pred[:32], data_range=10.0, mask=body[:32])
    bottom = gd.image_parts(TRUTH[32:], pred[32:], data_range=10.0, mask=body[32:])
    halves = gd.pool_image_parts([top, bottom], 10.0)
    assert halves["psnr"] == pytest.approx(whole["psnr"], abs=1e-9)  # MSE pooled over pixels, not a mean of PSNRs
    assert math.isnan(halves["ssim"]) and 0 < whole["ssim"] < 1  # no SSIM asked: none pooled
    mse = float(np.mean((TRUTH[body] - pred[body]) ** 2))
    assert whole["psnr"] == pytest.approx(10 * math.log10(100.0 / mse), abs=1e-6)
    assert math.isnan(gd.pool_image_parts([], 10.0)["psnr"])


def test_threshold_at_a_false_positive_rate():
    assert gd.threshold_at_fp_rate([5, 4, 3, 2, 1], 4, 0.5) == pytest.approx(3.0)
    t = gd.threshold_at_fp_rate([5, 4, 3, 2, 1], 4, 0.5)
    assert t > 3 and sum(s >= t for s in [5, 4, 3, 2, 1]) == 2
    assert gd.threshold_at_fp_rate([2, 1], 4, 0.5) == float("-inf")
    assert gd.threshold_at_fp_rate([3, 3, 3], 2, 0.5) > 3  # ties: none of them may pass


def test_a_hallucinating_model_loses_sensitivity_at_a_matched_false_positive_rate():
    rng = np.random.default_rng(0)
    lesion = {"center_rc": (30.0, 30.0), "radius_mm": 8.0, "scored": True, "diameter_mm": 8.0}
    slices, lesions = [], []
    for k in range(8):
        img = np.ones((N, N)) + rng.normal(0, 0.05, (N, N))
        if k % 2 == 0:
            img[_disk((30, 30), 2)] = 3.0
        slices.append(img)
        lesions.append([lesion] if k % 2 == 0 else [])
    fakes = []
    for img in slices:  # the same slices with a bright spot out of nowhere on every one
        f = img.copy()
        f[_disk((10, 50), 2)] = 5.0
        fakes.append(f)
    clean = gd.collect_detections(slices, lesions, SP, min_threshold=1.5)
    bad = gd.collect_detections(fakes, lesions, SP, min_threshold=1.5)
    assert clean["n_slices"] == 8 and clean["n_free"] == 4 and len(clean["lesion_scores"]) == 4
    op_clean = gd.operating_point(clean, gd.threshold_at_fp_rate(clean["fp_scores"], 8, 0.5))
    op_bad = gd.operating_point(bad, gd.threshold_at_fp_rate(bad["fp_scores"], 8, 0.5))
    assert op_clean["sensitivity"] == 1.0 and op_clean["hot_spots_per_free_slice"] == 0.0
    assert op_bad["fp_per_slice"] <= 0.5 and op_bad["sensitivity"] == 0.0
    at_same = gd.operating_point(bad, op_clean["threshold"])  # the same threshold rule: it hallucinates
    assert at_same["hot_spots_per_free_slice"] == 1.0 and at_same["sensitivity"] == 1.0
    assert math.isnan(gd.operating_point(clean, 1.5, diameter_range_mm=(10, 12))["sensitivity"])
    assert gd.hot_spots_per_slice(fakes[1::2], threshold=4.0, spacing_mm=SP) == 1.0
    assert gd.hot_spots_per_slice(slices[1::2], threshold=1.5, spacing_mm=SP) == 0.0


def test_guidance_check_tool_scores_bicubic_and_a_model_on_the_guided_world(tmp_path):
    import json

    from tools.guidance_check import main

    assert main(["--out", str(tmp_path), "--cases", "2", "--fov_mm", "64", "--pet_slices", "6"]) == 0
    r = json.loads((tmp_path / "guidance.json").read_text())
    assert r["slices"] == 2 * 6 and r["n_studies"] == 2 and r["models"]["fused_srgan"] == "bundled:demo"
    bic, model = r["methods"]["bicubic"], r["methods"]["fused_srgan"]
    assert bic["reliance"]["reliance_psnr"] == 0.0  # bicubic has no CT input
    assert len({row["psnr"] for row in bic["misregistration"]}) == 1
    assert model["reliance"]["reliance_psnr"] != 0.0  # the demo model takes CT
    assert len({row["psnr"] for row in model["misregistration"]}) > 1
    assert model["ct_only_imprint"]["n_structures"] > 0 and model["ct_only_imprint"]["imprint"] is not None
    assert {t["met"] for t in r["targets"]} <= {True, False, None} and len(r["targets"]) == 6
    assert "## CT guidance (issue 12)" in (tmp_path / "eval" / "results.md").read_text()


def test_a_truly_hot_organ_is_no_false_positive_when_the_truth_is_given():
    organ = _disk((20, 20), 4)
    truth = np.ones((N, N))
    truth[organ] = 8.0  # a hot organ, no lesion
    pred = truth.copy()
    pred[_disk((45, 45), 2)] = 3.0  # and one hallucinated spot
    slices = [pred] * 4
    near = [gd.local_max(truth, 5.0, SP)] * 4
    blind = gd.collect_detections(slices, [[]] * 4, SP, min_threshold=1.5)
    aware = gd.collect_detections(slices, [[]] * 4, SP, min_threshold=1.5, truth_near=near)
    assert sorted(blind["fp_scores"]) == sorted(aware["fp_scores"]) == [3.0] * 4 + [8.0] * 4
    assert gd.fp_count(aware["fp_scores"], aware["fp_truth"], 2.0) == 4  # the organ is hot in the truth too
    assert gd.fp_count(blind["fp_scores"], blind["fp_truth"], 2.0) == 8
    t_blind = gd.threshold_at_fp_rate(blind["fp_scores"], 4, 0.5, blind["fp_truth"])
    t_aware = gd.threshold_at_fp_rate(aware["fp_scores"], 4, 0.5, aware["fp_truth"])
    assert t_blind > 8.0 and 3.0 < t_aware <= 3.0 + 1e-9  # the organ no longer pushes the threshold up
    assert gd.operating_point(aware, 2.0)["hot_spots_per_free_slice"] == 1.0
    merged = gd.merge_detections([aware, blind])
    assert merged["n_slices"] == 8 and len(merged["fp_truth"]) == len(merged["fp_scores"]) == 16

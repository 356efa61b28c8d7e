"""The top level: every method on every study of a split (`score_split`), then the results dict, results.md and
results.json (`evaluate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ctpet_srgan import figures, metrics
from ctpet_srgan.atomic import write_bytes_atomic, write_json_atomic
from ctpet_srgan.evaluation.aggregate import N_BOOT, fusion_gain, summarize_method, targets
from ctpet_srgan.evaluation.data import BASELINES, FUSED, PET_ONLY, iter_studies, run_method
from ctpet_srgan.evaluation.guidance_section import guidance_study, guidance_summary, guidance_targets
from ctpet_srgan.evaluation.lesions import place_lesions, spacing_rc
from ctpet_srgan.evaluation.patients import patients_section, tumour_reference, tumour_scores, water_ct
from ctpet_srgan.evaluation.scoring import BODY_HU, LESION_MARGIN_MM, MI_BINS, score_image_only, score_study
from ctpet_srgan.manifest import Manifest
from ctpet_srgan.report import clean, results_markdown


def scoring_config(pet_range_suv: float, ct_range_hu: tuple[float, float], det_threshold_suv: float,
                   froc_min_suv: float, min_separation_mm: float) -> dict:
    """The scoring settings shared by every method (SUV, HU, mm; the FROC floor never above the threshold)."""
    return dict(pet_range_suv=float(pet_range_suv), ct_range_hu=[float(ct_range_hu[0]), float(ct_range_hu[1])],
                det_threshold_suv=float(det_threshold_suv), froc_min_suv=float(min(froc_min_suv, det_threshold_suv)),
                min_separation_mm=float(min_separation_mm))


def settings_record(cfg: dict, seed: int) -> dict:
    """Everything that defines the numbers, as written into results.json's "settings"."""
    return dict(
        cfg, body_mask=f"HR CT > {BODY_HU:g} HU", psnr_data_range_pet_suv=cfg["pet_range_suv"],
        psnr_data_range_ct_hu=cfg["ct_range_hu"][1] - cfg["ct_range_hu"][0],
        ssim=dict(implementation="tf.image.ssim", filter_size=metrics.SSIM_FILTER_SIZE,
                  filter_sigma=metrics.SSIM_FILTER_SIGMA, k1=metrics.SSIM_K1, k2=metrics.SSIM_K2,
                  masked="mean of the SSIM map over windows centred in the mask"),
        psnr="tf.image.psnr definition; per study from the MSE pooled over its slices; methods: mean over studies",
        nema=dict(background_rois=12, ring_mm="diameter + 10", lesion_margin_mm=LESION_MARGIN_MM,
                  roi="lesion cross-section on the slice nearest its centre"),
        detector="local maxima >= threshold SUV within the body, merged if touching;"
                 " hit = inside a lesion cross-section",
        fusion=dict(sources="bicubic-upsampled LR PET and HR CT",
                    scale="PET [0, pet_range_suv] and CT [ct_range_hu] mapped to [0, 1]",
                    mi_bins=MI_BINS, qabf="Xydeas & Petrovic 2000, Sobel 3x3"),
        bootstrap=dict(resamples=N_BOOT, seed=seed, ci="percentile 95%"),
        upsampling_baselines={k: f"cv2.resize {v}" for k, v in BASELINES.items()},
    )


def _check_scale(manifest: Manifest, models: dict[str, Any], data_dir) -> int:
    """The data set's scale, refusing any model trained for another."""
    scale = manifest.scale
    for name, p in models.items():
        if int(p.scale) != scale:
            raise ValueError(f"{name}: model scale x{p.scale} does not match the data set's x{scale} ({data_dir})")
    return scale


def _figure_slice(slices: list[dict], per_slice: list[list[dict]], preds: dict, ref: dict | None,
                  with_truth: bool = True) -> dict:
    """The slice to draw for a study: the centre slice of its largest scored lesion, else (with a tumour mask) the
    slice with the largest tumour area, else its middle slice."""
    cands = [(les["diameter_mm"], k, les) for k, ls in enumerate(per_slice) for les in ls if les["scored"]]
    _, k, les = max(cands, key=lambda c: c[0]) if cands else (0, len(slices) // 2, None)
    if not cands and ref is not None:
        k = int(np.argmax(ref["mask"].sum(axis=(1, 2))))
    s = slices[k]
    fs = dict(lr_pet=s["lr_pet"], hr_pet=s["hr_pet"], hr_ct=s["hr_ct"], lesion=les,
              spacing_mm=spacing_rc(s["hr_affine"]), preds={m: p["sr_pet"][k] for m, p in preds.items()},
              hr_label="HR truth" if with_truth else "HR PET (clinical)")
    if ref is not None:
        fs["hr_mask"] = ref["mask"][k]
    return fs


def _new_data_record(split: str, scale: int) -> dict:
    return dict(split=split, scale=scale, n_studies=0, n_slices=0, n_studies_with_truth=0, n_slices_with_truth=0,
                n_lesions=0, n_lesions_outside_slices=0, n_lesion_free_studies=0)


def _count_study(data: dict, slices: list[dict], per_slice: list[list[dict]], missing: int, with_truth: bool,
                 lesions: list) -> None:
    data["n_studies"] += 1
    data["n_slices"] += len(slices)
    if with_truth:
        data["n_studies_with_truth"] += 1
        data["n_slices_with_truth"] += len(slices)
        data["n_lesions"] += sum(les["scored"] for ls in per_slice for les in ls)
        data["n_lesions_outside_slices"] += missing
        data["n_lesion_free_studies"] += int(not lesions)


def score_split(data_dir, manifest: Manifest, methods: dict[str, Any], cfg: dict, *, split: str, batch_size: int,
                max_slices: int | None, n_figures: int, ablate: str | None = None, guidance: bool = False) -> dict:
    """Runs and scores every method on every study of the split.

    Args:
        ablate: a model among `methods` also run with water_ct instead of the real CT (the CT ablation).
        guidance: also collect the guidance numbers (guidance_study) of bicubic and every model, on the studies
            with a true HR PET (st["guidance"]: study -> method -> raw).

    Returns:
        data (counts), per_method (method -> study -> score_study output), tumour (method -> study ->
        tumour_scores), references (study -> HR tumour numbers), ablation (study -> score_image_only output,
        and "tumour") and fig_slices.
    """
    scale = manifest.scale
    st = dict(data=_new_data_record(split, scale), per_method={m: {} for m in methods},
              tumour={m: {} for m in methods}, references={}, ablation={}, ablation_tumour={}, fig_slices=[],
              guidance={})
    takes_ct = {m: not isinstance(p, str) and getattr(p, "ct_input", None) is not None for m, p in methods.items()
                if m == "bicubic" or not isinstance(p, str)}
    for h, slices in iter_studies(data_dir, split, max_slices):
        entry = manifest.studies.get(h)
        info = entry.to_dict() if entry is not None else {}  # guidance_study reads the world's entries
        truth = entry.has_truth if entry is not None else None
        with_truth = bool(slices[0]["has_truth"] if truth is None else truth)
        lesions = entry.lesions if entry is not None else []
        per_slice, missing = place_lesions(lesions, slices) if with_truth else ([[] for _ in slices], 0)
        _count_study(st["data"], slices, per_slice, missing, with_truth, lesions)
        preds = {m: run_method(p, slices, scale, batch_size) for m, p in methods.items()}
        for k, s in enumerate(slices):
            s["bicubic_pet"] = preds["bicubic"]["sr_pet"][k]
        ref = tumour_reference(slices)
        for m in methods:
            st["per_method"][m][h] = score_study(preds[m], slices, per_slice, cfg, with_truth=with_truth,
                                                 lesion_free=with_truth and not lesions)
            if ref is not None:
                st["tumour"][m][h] = tumour_scores(preds[m]["sr_pet"], ref)
        if ref is not None:
            st["references"][h] = dict(ref["stats"], tumour_volume_ml=ref["tumour_volume_ml"],
                                       n_background_voxels=ref["n_background_voxels"],
                                       peak_sphere_ml=ref["peak_sphere_ml"], spacing_mm=list(ref["spacing_mm"]),
                                       slices=len(slices))
        if ablate is not None:
            water = run_method(methods[ablate], slices, scale, batch_size, ct_hu=water_ct(slices))
            st["ablation"][h] = score_image_only(water, slices, cfg)
            if ref is not None:
                st["ablation_tumour"][h] = tumour_scores(water["sr_pet"], ref)
        if guidance and with_truth:
            def run(m, ct, slices=slices, preds=preds):
                return preds[m]["sr_pet"] if ct is None else run_method(methods[m], slices, scale, batch_size,
                                                                        ct_hu=ct)["sr_pet"]
            st["guidance"][h] = guidance_study(slices, info, run, takes_ct, cfg)
        if len(st["fig_slices"]) < n_figures:
            st["fig_slices"].append(_figure_slice(slices, per_slice, preds, ref, with_truth))
    if st["data"]["n_studies"] == 0:
        raise ValueError(f"{data_dir}: split {split!r} has no slices")
    return st



# Over 60 lines by its interface only: 17 keyword settings (one per evaluate.py flag) and their documented units;
# the body (~33 lines) is one step per results section, each a call into this package.
def evaluate(
    data_dir: str | Path,
    out_dir: str | Path,
    models: dict[str, Any],
    *,
    split: str = "test",
    pet_range_suv: float = 10.0,
    ct_range_hu: tuple[float, float] = (-1024.0, 3071.0),
    det_threshold_suv: float = 2.5,
    froc_min_suv: float = 1.0,
    min_separation_mm: float = 5.0,
    n_figures: int = 3,
    batch_size: int = 8,
    max_slices: int | None = None,
    seed: int = 0,
    dpi: int = 100,
    overwrite: bool = False,
    model_sources: dict[str, str] | None = None,
    fused_name: str = FUSED,
    ct_ablation: bool = True,
    guidance: bool | None = None,
) -> dict:
    """Runs the baselines and `models` on the same slices and writes results.json, results.md and figures.

    Args:
        data_dir: prepared data set. out_dir: output folder. models: name -> Predictor.
        split: the split scored. pet_range_suv: PET PSNR peak / SSIM range (SUV). ct_range_hu: CT clip range (HU).
        det_threshold_suv, froc_min_suv: detector threshold and FROC floor (SUV). min_separation_mm: detector
        neighbourhood (mm). n_figures: slices drawn. batch_size: slices per model call. max_slices: smoke runs.
        seed: bootstrap seed. dpi: figure resolution. overwrite: replace existing results.
        model_sources: name -> where the model was read (recorded). fused_name: the CT-guided model; the fusion
        gain is it minus "pet_only" when both are among `models`. ct_ablation: also run `fused_name` (when it takes
        a CT) with water_ct, to measure what its CT contributes. guidance: the "guidance" section (CT reliance,
        misregistration, CT-only imprint, PET-only lesions, hallucinations; issue 12); None = when the set is a
        guided phantom world (Manifest.is_guided).

    Returns:
        The results dict also written to OUT/results.json (None for NaN, "inf" for infinite numbers).
    """
    out_dir = Path(out_dir)
    if (out_dir / "results.json").exists() and not overwrite:
        raise FileExistsError(f"{out_dir}: results.json already exists; pass --overwrite to replace it")
    manifest = Manifest.load(data_dir)
    _check_scale(manifest, models, data_dir)
    cfg = scoring_config(pet_range_suv, ct_range_hu, det_threshold_suv, froc_min_suv, min_separation_mm)
    methods: dict[str, Any] = dict(BASELINES)
    methods.update(models)
    ablate = fused_name if ct_ablation and getattr(models.get(fused_name), "ct_input", None) is not None else None
    guidance = manifest.is_guided if guidance is None else bool(guidance)
    st = score_split(data_dir, manifest, methods, cfg, split=split, batch_size=batch_size, max_slices=max_slices,
                     n_figures=n_figures, ablate=ablate, guidance=guidance)
    results_methods = {m: summarize_method(st["per_method"][m], cfg) for m in methods}
    sums = {m: r.pop("_per_study") for m, r in results_methods.items()}
    gain = None
    if fused_name in models and PET_ONLY in models and fused_name != PET_ONLY:
        gain = dict(fused=fused_name, baseline=PET_ONLY, metrics=fusion_gain(sums[fused_name], sums[PET_ONLY], seed))
    results = dict(schema="ctpet-srgan/evaluate/1", data=st["data"], settings=settings_record(cfg, seed),
                   methods=results_methods, models=model_sources or {}, fusion_gain=gain)
    results["figures"] = (figures.write_figures(out_dir, st["fig_slices"], results_methods, dpi, pet_range_suv,
                                                fused_name) if n_figures > 0 else [])
    patients, ablation = patients_section(st, sums, cfg, fused_name, seed)
    results.update(patients=patients, ct_ablation=ablation,
                   targets=targets(patients["median"], gain, ablation, fused_name))
    results["guidance"] = None
    if guidance and st["guidance"]:
        g = guidance_summary(st["guidance"], cfg)
        g["targets"] = guidance_targets(g, [m for m in models if getattr(models[m], "ct_input", None) is not None])
        results["guidance"] = g
    results = clean(results)
    write_bytes_atomic(out_dir / "results.md", results_markdown(results).encode())
    write_json_atomic(out_dir / "results.json", results)  # last: its presence means the evaluation finished
    return results

"""The Markdown report of an evaluation (results.md) and the JSON-safe form of its results (results.json).

`results_markdown` renders the results dict that `ctpet_srgan.evaluation.evaluate` builds: image quality,
lesions and detection, fusion quality and gain, and, on sets with tumour masks, the per-patient tables, the
medians, the fusion gain per patient, the CT ablation and the targets; on a guided phantom world, the CT
guidance section (issue 12). `clean` makes the dict strict JSON.
"""

from __future__ import annotations

import numpy as np

from ctpet_srgan.quantification import TUMOUR_KEYS


def clean(x):
    """JSON-safe copy: NaN (nothing to score) -> None, +-inf (e.g. PSNR of an exact output) -> "inf" /
    "-inf", numpy scalars -> Python."""
    if isinstance(x, dict):
        return {str(k): clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        if np.isnan(x):
            return None
        return float(x) if np.isfinite(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, np.integer):
        return int(x)
    return x


def _fmt(v, nd=3) -> str:
    if isinstance(v, str):
        return v
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{nd}f}"


def _row(*cells) -> str:
    """A Markdown table row (a "|" inside a cell is escaped)."""
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _md_image_quality(m: dict) -> list[str]:
    lines = ["## Image quality", "",
             "| method | PSNR PET (dB) | SSIM PET | PSNR PET body | SSIM PET body | PSNR CT (dB) | SSIM CT"
             " | PSNR CT body | SSIM CT body |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in m.items():
        lines.append(_row(name, _fmt(r["psnr_pet"], 2), _fmt(r["ssim_pet"], 4), _fmt(r["psnr_pet_body"], 2),
                          _fmt(r["ssim_pet_body"], 4), _fmt(r["psnr_ct"], 2), _fmt(r["ssim_ct"], 4),
                          _fmt(r["psnr_ct_body"], 2), _fmt(r["ssim_ct_body"], 4)))
    return lines


def _md_lesions(m: dict, st: dict) -> list[str]:
    sizes = sorted({s for r in m.values() for s in r["crc"]}, key=float)
    lines = ["", "## Lesions (NEMA NU 2 hot-sphere CRC / BV / CNR, detection)", ""]
    if sizes:
        lines += [_row("method", *[f"CRC {s} mm" for s in sizes], *[f"CNR {s} mm" for s in sizes]),
                  "|---|" + "---|" * (2 * len(sizes))]
        for name, r in m.items():
            lines.append(_row(name, *[_fmt(r["crc"].get(s)) for s in sizes],
                              *[_fmt(r["cnr"].get(s), 2) for s in sizes]))
    else:
        lines.append("No hot lesions in the scored slices.")
    lines += ["", f"Detector: local maxima >= {st['det_threshold_suv']:g} SUV, >= {st['min_separation_mm']:g} mm"
              " apart, in the body.", "",
              "| method | sensitivity | FP / slice | hallucinated hot spots / lesion-free slice |", "|---|---|---|---|"]
    for name, r in m.items():
        lines.append(_row(name, _fmt(r["sensitivity"]), _fmt(r["fp_per_slice"]), _fmt(r["hallucinations_per_slice"])))
    return lines


def _md_fusion(m: dict, gain: dict | None) -> list[str]:
    lines = ["", "## Fusion quality (SR PET vs its sources: bicubic LR PET, HR CT; images on [0, 1]; bicubic is"
             " itself the PET source)", "",
             "| method | MI(F;PET) bits | MI(F;CT) bits | SSIM(F,PET) | SSIM(F,CT) | Qabf |",
             "|---|---|---|---|---|---|"]
    for name, r in m.items():
        lines.append(_row(name, *[_fmt(v) for v in r["fusion"].values()]))
    if gain:
        lines += ["", f"## Fusion gain ({gain['fused']} minus {gain['baseline']}, per study; bootstrap 95% CI)", "",
                  "| metric | mean | 95% CI | studies |", "|---|---|---|---|"]
        for key, v in gain["metrics"].items():
            lines.append(_row(key, _fmt(v["mean"], 4), f"[{_fmt(v['ci95'][0], 4)}, {_fmt(v['ci95'][1], 4)}]",
                              v["n_studies"]))
    return lines


def _pct(v) -> str:
    """A relative error as a signed percentage ("n/a" when missing)."""
    return "n/a" if v is None or isinstance(v, str) else f"{100 * v:+.1f}%"


def _md_patients(p: dict) -> list[str]:
    """Per-patient table (image quality inside the body, tumour errors) and the summary of medians."""
    lines = ["", "## Per patient (PET inside the body; tumour errors relative to the HR PET)", "",
             "| study | method | PSNR (dB) | SSIM | NRMSE | SUVmax err | SUVmean err | SUVpeak err | TBR err |",
             "|---|---|---|---|---|---|---|---|---|"]
    studies = sorted({h for rows in p["per_study"].values() for h in rows})
    for h in studies:
        for m, rows in p["per_study"].items():
            r = rows.get(h)
            if r is not None:
                lines.append(_row(h, m, _fmt(r["psnr_pet_body"], 2), _fmt(r["ssim_pet_body"], 4),
                                  _fmt(r["nrmse_pet_body"], 4), *[_pct(r.get(f"{k}_err")) for k in TUMOUR_KEYS]))
    if p["reference"]:
        lines += ["", "HR PET (the reference): tumour volume, SUVmax / SUVmean / SUVpeak, background mean, TBR", "",
                  "| study | volume (mL) | SUVmax | SUVmean | SUVpeak | background | TBR |",
                  "|---|---|---|---|---|---|---|"]
        for h, r in sorted(p["reference"].items()):
            lines.append(_row(h, _fmt(r["tumour_volume_ml"], 1), _fmt(r["suvmax"], 2), _fmt(r["suvmean"], 2),
                              _fmt(r["suvpeak"], 2), _fmt(r["background_mean"], 2), _fmt(r["tbr"], 2)))
    lines += ["", f"## Summary (medians over patients; {p['n_studies_with_tumour_mask']} with a tumour mask)", "",
              "| method | PSNR (dB) | SSIM | NRMSE | \\|SUVmax err\\| | \\|SUVmean err\\| | \\|SUVpeak err\\|"
              " | \\|TBR err\\| | patients |", "|---|---|---|---|---|---|---|---|---|"]
    for m, r in p["median"].items():
        lines.append(_row(m, _fmt(r["psnr_pet_body"], 2), _fmt(r["ssim_pet_body"], 4), _fmt(r["nrmse_pet_body"], 4),
                          *[_pct(r[f"abs_{k}_err"]).lstrip("+") for k in TUMOUR_KEYS], r["n_studies"]))
    return lines


def _md_paired(title: str, a: dict | None) -> list[str]:
    """A table of paired per-patient differences (compare_patients' output) under `title`."""
    if not a:
        return []
    lines = ["", f"## {title}", "", "| metric | median difference | mean difference | 95% CI | patients |",
             "|---|---|---|---|---|"]
    for k, v in a["paired"].items():
        lines.append(_row(k, _fmt(a["median_diff"][k], 4), _fmt(v["mean"], 4),
                          f"[{_fmt(v['ci95'][0], 4)}, {_fmt(v['ci95'][1], 4)}]", v["n_studies"]))
    return lines


def _md_targets(rows: list[dict], title: str = "Targets (issue 11)") -> list[str]:
    lines = ["", f"## {title}", "", "| target | value | limit | result | margin |", "|---|---|---|---|---|"]
    for t in rows:
        res = {True: "met", False: "missed", None: "not measurable"}[t["met"]]
        lines.append(_row(t["target"], _fmt(t["value"], 4), _fmt(t["limit"], 4), res, _fmt(t["margin"], 4)))
    return lines


def _md_guidance(g: dict) -> list[str]:
    """The guidance section (issue 12): CT reliance, misregistration sweep, imprint, PET-only lesions, detection."""
    ms = g["methods"]
    lines = ["", "## CT guidance (issue 12)", "", f"{g['n_studies']} studies with a true HR PET. Definitions:"
             " docs/metrics.md, Guidance.", "",
             "| method | PSNR true CT | PSNR uninformative CT | reliance (dB) | SSIM true | SSIM uninf. | CRC true"
             " | CRC uninf. |", "|---|---|---|---|---|---|---|---|"]
    for name, r in ms.items():
        v = r["reliance"]
        lines.append(_row(name, _fmt(v["true_psnr"], 2), _fmt(v["uninformative_psnr"], 2),
                          _fmt(v["reliance_psnr"], 2), _fmt(v["true_ssim"], 4), _fmt(v["uninformative_ssim"], 4),
                          _fmt(v["true_crc"], 3), _fmt(v["uninformative_crc"], 3)))
    shifts = [row["shift_mm"] for row in next(iter(ms.values()))["misregistration"]] if ms else []
    shared = next(iter(ms.values()))["detection"].get("shared_threshold_suv") if ms else None
    at = f"{shared:g} SUV" if shared is not None else "the shared threshold"
    lines += ["", "Misregistration sweep (CT shifted along +col): PSNR (dB) / lesion CRC / hot spots per lesion-free"
              f" slice at {at} (every method)", "", _row("method", *[f"{s:g} mm" for s in shifts]),
              "|---|" + "---|" * len(shifts)]
    for name, r in ms.items():
        lines.append(_row(name, *[" / ".join((_fmt(x["psnr"], 2), _fmt(x["crc"], 3),
                                              _fmt(x.get("hot_spots_per_free_slice_shared"), 2)))
                                  for x in r["misregistration"]]))
    lines += ["", f"Hot spots at {at} for every method; threshold, FP/slice and sensitivities at each method's own"
              " matched false-positive rate.", "",
              "| method | CT-only imprint | x bicubic | x pet_only | structures | PET-only lesion CRC | lesions"
              f" | hot spots / free slice at {at} | threshold (SUV) | FP/slice | hot spots / free slice at the"
              " threshold | sens. 6-10 mm (n) | sens. 6-10 mm <= 3:1 (n) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in ms.items():
        i, p, d = r["ct_only_imprint"], r["pet_only_lesions"], r["detection"]
        lines.append(_row(name, _pct(i["imprint"]), _fmt(i.get("over_bicubic"), 2), _fmt(i.get("over_pet_only"), 2),
                          i["n_structures"], _fmt(p["crc"], 3), p["n_lesions"],
                          _fmt(d.get("hot_spots_per_free_slice_shared"), 2), _fmt(d["threshold_suv"], 2),
                          _fmt(d["fp_per_slice"], 2), _fmt(d["hot_spots_per_free_slice"], 2),
                          f"{_fmt(d['sensitivity_6_10mm'], 2)} ({d['n_6_10mm']})",
                          f"{_fmt(d['sensitivity_6_10mm_low_contrast'], 2)} ({d['n_6_10mm_low_contrast']})"))
    if g.get("targets"):
        lines += _md_targets(g["targets"], "Guidance targets (issue 12)")
    return lines


def results_markdown(res: dict) -> str:
    """The Markdown report: image quality, lesions, detection, fusion, fusion gain, figures."""
    m, d, st = res["methods"], res["data"], res["settings"]
    lines = [
        "# Evaluation results",
        "",
        f"Split `{d['split']}`: {d['n_studies']} studies, {d['n_slices']} slices "
        f"({d['n_studies_with_truth']} studies / {d['n_slices_with_truth']} slices with a true HR PET; "
        f"{d['n_lesions']} hot lesions, {d['n_lesion_free_studies']} lesion-free studies). Scale x{d['scale']}.",
        "",
        f"PET in SUVbw, PSNR peak {st['pet_range_suv']:g} SUV; CT in HU clipped to {st['ct_range_hu']};"
        f" body = {st['body_mask']}.",
        "",
    ]
    lines += _md_image_quality(m) + _md_lesions(m, st) + _md_fusion(m, res.get("fusion_gain"))
    if res.get("patients"):
        p, a = res["patients"], res.get("ct_ablation")
        lines += _md_patients(p)
        if p.get("fusion_gain"):
            g = p["fusion_gain"]
            lines += _md_paired(f"Fusion gain per patient ({g['fused']} minus {g['baseline']}; |errors|: negative ="
                                " the CT-guided model is closer)", g)
        if a:
            lines += _md_paired(f"CT ablation ({a['model']} with its real CT minus the same model with an"
                                f" uninformative CT: {a['ct']})", a)
        lines += _md_targets(res.get("targets") or [])
    if res.get("guidance"):
        lines += _md_guidance(res["guidance"])
    lines += ["", "## Figures", ""] + [f"![{p}]({p})" for p in res.get("figures", [])]
    return "\n".join(lines) + "\n"

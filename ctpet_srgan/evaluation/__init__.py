"""Scores SR methods (interpolation baselines and trained generators) on the held-out split of a prepared data set.

The library behind `evaluate.py`. Every method runs on the same slices (the test split, by study); the results
dict is written as OUT/results.json (last: its presence means the evaluation finished), OUT/results.md and
OUT/figures/*.png (`ctpet_srgan.figures`). Metric definitions: `ctpet_srgan.metrics` and docs/metrics.md.

Conventions (all written into results.json's settings):
- PET PSNR/SSIM in SUVbw with peak R = pet_range_suv (default 10 SUV; values are not clipped, R only sets the
  PSNR peak and the SSIM constants). CT PSNR/SSIM in HU after clipping truth and output to ct_range_hu
  (default -1024..3071 HU, R = 4095 HU).
- "body": pixels where the HR CT > -500 HU. SSIM (body): mean of the SSIM map over windows centred in the body.
  PSNR of a study = 10 log10(R^2 / MSE pooled over its slices (or body pixels)); SSIM of a study = mean over its
  slices (whole) or the pooled body windows (body). A method's value = mean over studies, so every study weighs
  the same.
- Lesions (studies with true HR PET and lesions in manifest.json): each hot lesion is scored on the slice nearest
  its centre; NEMA CRC / BV / CNR with a ROI of the lesion's cross-section diameter on that slice, 12 background
  ROIs on a ring of radius D + 10 mm, kept when inside the body and clear of every lesion by 5 mm. Detector: local
  maxima >= det_threshold_suv SUV in the body, at least min_separation_mm apart; a detection within a lesion's
  cross-section is a hit, else a false positive. FROC: the same detector with candidates down to froc_min_suv,
  swept over thresholds. Lesion-free studies with true HR PET are scored for hallucinated hot spots: detections
  (>= the threshold) where the HR truth stays below the threshold within min_separation_mm, per slice.
- Fusion quality (each method's SR PET against its two sources: the bicubic-upsampled LR PET and the HR CT): MI
  (64 bins), SSIM and Qabf on images mapped to [0, 1] (PET over [0, R] SUV, CT over the CT range).
- results.json: NaN (nothing to score, e.g. CT metrics of a PET-only model) is null; an infinite value (PSNR of
  an exact output) is the string "inf".
- Fusion gain: per-study difference (fused model minus PET-only model) with a percentile bootstrap 95% CI over
  studies (2000 resamples, seed `seed`).

Modules (one concept each; this package re-exports their public names):
- `data`: the split study by study (`iter_studies`), the interpolation baselines and `run_method`.
- `lesions`: the manifest's lesions on a study's slices (`lesion_on_slice`, `place_lesions`).
- `scoring`: one method on one study (`score_study`: image quality, fusion quality, NEMA lesions, detection).
- `aggregate`: per-study and per-method numbers, the paired bootstrap, the fusion gain, the issue-11 `targets`.
- `patients`: tumour quantification per patient, the patient tables, the CT ablation (`patients_section`).
- `guidance_section`: the CT guidance section and its targets (issue 12) on a guided phantom world.
- `driver`: `score_split` (every method on every study) and `evaluate` (the results dict and files).
"""

from ctpet_srgan.evaluation.aggregate import (
    FUSION_KEYS,
    GAIN_METRICS,
    IMAGE_METRICS,
    N_BOOT,
    TARGETS,
    fusion_gain,
    nanmean,
    nanmedian,
    paired_bootstrap,
    study_summary,
    summarize_method,
    target_row,
    targets,
)
from ctpet_srgan.evaluation.data import BASELINES, FUSED, PET_ONLY, iter_studies, run_method, upsample
from ctpet_srgan.evaluation.driver import evaluate, score_split, scoring_config, settings_record
from ctpet_srgan.evaluation.guidance_section import (
    GUIDANCE_CONVENTIONS,
    GUIDANCE_FP_RATE,
    GUIDANCE_SHIFTS_MM,
    GUIDANCE_TARGETS,
    LOW_CONTRAST_RATIO,
    SMALL_LESION_MM,
    guidance_study,
    guidance_summary,
    guidance_targets,
)
from ctpet_srgan.evaluation.lesions import lesion_on_slice, place_lesions, slice_volume, spacing_rc
from ctpet_srgan.evaluation.patients import (
    ABLATION_SUFFIX,
    PATIENT_CONVENTIONS,
    PATIENT_KEYS,
    compare_patients,
    ct_ablation,
    medians,
    patient_rows,
    patients_section,
    study_spacing,
    tumour_reference,
    tumour_scores,
    water_ct,
)
from ctpet_srgan.evaluation.scoring import (
    BODY_HU,
    LESION_MARGIN_MM,
    MI_BINS,
    accumulate_image,
    fusion_quality,
    new_acc,
    score_image_only,
    score_study,
)

__all__ = [
    "ABLATION_SUFFIX", "BASELINES", "BODY_HU", "FUSED", "FUSION_KEYS", "GAIN_METRICS", "GUIDANCE_CONVENTIONS",
    "GUIDANCE_FP_RATE", "GUIDANCE_SHIFTS_MM", "GUIDANCE_TARGETS", "IMAGE_METRICS", "LESION_MARGIN_MM",
    "LOW_CONTRAST_RATIO", "MI_BINS", "N_BOOT", "PATIENT_CONVENTIONS", "PATIENT_KEYS", "PET_ONLY", "SMALL_LESION_MM",
    "TARGETS", "accumulate_image", "compare_patients", "ct_ablation", "evaluate", "fusion_gain", "fusion_quality",
    "guidance_study", "guidance_summary", "guidance_targets", "iter_studies", "lesion_on_slice",
    "medians", "nanmean", "nanmedian", "new_acc", "paired_bootstrap", "patient_rows", "patients_section",
    "place_lesions", "run_method", "score_image_only", "score_split", "score_study", "scoring_config",
    "settings_record", "slice_volume", "spacing_rc", "study_spacing", "study_summary", "summarize_method",
    "target_row", "targets", "tumour_reference", "tumour_scores", "upsample", "water_ct",
]

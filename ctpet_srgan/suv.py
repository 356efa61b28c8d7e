"""Body-weight SUV (g/mL) from PET DICOM tags, following the QIBA vendor-neutral pseudo-code.

SUVbw = activity concentration (Bq/mL) * weight (g) / injected dose decayed to the reference time (Bq).

Rules implemented (QIBA "SUV vendor-neutral pseudo-code", rev. 2014):
- Units BQML: scale = weight_g / decayed_dose. Units GML: pixels are already SUVbw, scale 1.
  Units CNTS: the Philips private SUV scale factor (7053,1000) if present; else the Philips activity
  scale (7053,1009) turns pixels into Bq/mL and the BQML rule follows. PROPCPS, CNTS without those
  factors, and any other units are refused (never guessed).
- CorrectedImage must contain ATTN and DECY, except with DecayCorrection NONE (which needs ATTN only).
- DecayCorrection START: reference time = SeriesDate/SeriesTime, unless the series date/time is after
  the earliest AcquisitionDate/Time of the series (a post-processed series); then the GE private scan
  date/time (0009,100D) if present, else the earliest acquisition date/time.
- DecayCorrection ADMIN: images are decay-corrected to the injection time: no decay of the dose.
- DecayCorrection NONE (our handling; QIBA leaves it to the implementer): every slice is measured at its
  own AcquisitionDate/Time, so the dose is decayed to each slice's own time: one factor per slice.
- Injection time: RadiopharmaceuticalStartDateTime, else SeriesDate + RadiopharmaceuticalStartTime
  (one day earlier if that puts the injection after the scan, i.e. the scan crossed midnight).
- Dose RadionuclideTotalDose (Bq), half-life RadionuclideHalfLife (s), PatientWeight (kg -> g).
Every missing tag is an InputError naming the file and the tag.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any, Sequence

import numpy as np

from ctpet_srgan.errors import InputError

SUPPORTED_UNITS = ("BQML", "GML")


def _path(ds) -> str:
    return str(getattr(ds, "filename", None) or "<dataset>")


def parse_da_tm(da: str | None, tm: str | None) -> dt.datetime | None:
    """DICOM DA ("YYYYMMDD") + TM ("HHMMSS.ffffff", "HHMM", "HH", or "HH:MM:SS") -> naive datetime."""
    if not da or not tm:
        return None
    da, tm = str(da).strip().replace(".", ""), str(tm).strip().replace(":", "")
    if not re.fullmatch(r"\d{8}", da) or not re.fullmatch(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?", tm):
        raise ValueError(f"bad date/time {da!r} {tm!r}")
    frac = 0
    if "." in tm:
        tm, f = tm.split(".")
        frac = int(f.ljust(6, "0"))
    tm = tm.ljust(6, "0")
    return dt.datetime(int(da[:4]), int(da[4:6]), int(da[6:8]), int(tm[:2]), int(tm[2:4]), int(tm[4:6]), frac)


def parse_dt(value: str | None) -> dt.datetime | None:
    """DICOM DT ("YYYYMMDDHHMMSS.ffffff[&ZZXX]") -> naive datetime (any UTC offset is dropped:
    all times of one study are taken to be in the same zone)."""
    if not value:
        return None
    s = re.sub(r"[+-]\d{4}$", "", str(value).strip())
    if len(s) < 8:
        raise ValueError(f"bad date-time {value!r}")
    return parse_da_tm(s[:8], s[8:] or "00")


def _time_tag(ds, date_kw: str, time_kw: str) -> dt.datetime | None:
    try:
        return parse_da_tm(ds.get(date_kw), ds.get(time_kw))
    except ValueError as e:
        raise InputError(_path(ds), f"unreadable {date_kw}/{time_kw}: {e}") from None


def acquisition_datetime(ds) -> dt.datetime | None:
    """AcquisitionDateTime, else AcquisitionDate + AcquisitionTime, of one slice (naive), or None."""
    try:
        t = parse_dt(ds.get("AcquisitionDateTime"))
    except ValueError as e:
        raise InputError(_path(ds), f"unreadable AcquisitionDateTime: {e}") from None
    return t or _time_tag(ds, "AcquisitionDate", "AcquisitionTime")


def _require(ds, obj, keyword: str, tag: str, why: str = "needed for SUV") -> Any:
    value = obj.get(keyword) if obj is not None else None
    if value is None or value == "":
        raise InputError(_path(ds), f"missing {keyword} {tag} ({why})")
    return value


def _positive_float(ds, value, keyword: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(_path(ds), f"{keyword} is not a number: {value!r}") from None
    if not math.isfinite(x) or x <= 0:
        raise InputError(_path(ds), f"{keyword} must be positive, got {x}")
    return x


def _ge_scan_datetime(ds) -> dt.datetime | None:
    """GE private "scan date/time" (0009,100D), creator GEMS_PETD_01, if present."""
    try:
        block = ds.private_block(0x0009, "GEMS_PETD_01")
        return parse_dt(str(block[0x0D].value))
    except (KeyError, ValueError, TypeError):
        return None


def philips_scale_factors(ds) -> tuple[float | None, float | None]:
    """Philips private (7053,1000) SUV scale factor and (7053,1009) activity scale factor, creator
    "Philips PET Private Group"; None where absent, zero or unreadable."""
    out = []
    try:
        block = ds.private_block(0x7053, "Philips PET Private Group")
    except (KeyError, ValueError):
        return None, None
    for offset in (0x00, 0x09):
        try:
            v = float(block[offset].value)
        except (KeyError, TypeError, ValueError):
            v = 0.0
        out.append(v if math.isfinite(v) and v > 0 else None)
    return out[0], out[1]


def injection_datetime(ds, rp, series_dt: dt.datetime) -> tuple[dt.datetime, str]:
    """Injection time and where it came from: RadiopharmaceuticalStartDateTime, else SeriesDate +
    RadiopharmaceuticalStartTime (moved back one day when that falls after the series, i.e. the scan crossed
    midnight). `rp` is the RadiopharmaceuticalInformationSequence item; errors name the file."""
    path = _path(ds)
    try:
        inj = parse_dt(rp.get("RadiopharmaceuticalStartDateTime"))
    except ValueError as e:
        raise InputError(path, f"unreadable RadiopharmaceuticalStartDateTime: {e}") from None
    if inj is not None:
        return inj, "RadiopharmaceuticalStartDateTime"
    tm = rp.get("RadiopharmaceuticalStartTime")
    if not tm:
        raise InputError(
            path,
            "missing RadiopharmaceuticalStartDateTime (0018,1078) and RadiopharmaceuticalStartTime (0018,1072) "
            "(needed for SUV)",
        )
    try:
        inj = parse_da_tm(ds.get("SeriesDate"), tm)
    except ValueError as e:
        raise InputError(path, f"unreadable RadiopharmaceuticalStartTime: {e}") from None
    source = "SeriesDate+RadiopharmaceuticalStartTime"
    if inj > series_dt and inj - dt.timedelta(days=1) <= series_dt:
        inj -= dt.timedelta(days=1)  # injected before midnight, series after midnight
        source += " (previous day)"
    return inj, source


# One branch per SUV rule (Units, CorrectedImage, DecayCorrection) in QIBA's order: splitting would scatter the table.
def suv_scale_factor(
    ds_first, acquisition_datetimes: Sequence[dt.datetime | None]
) -> tuple[float | np.ndarray, dt.datetime | None, dict[str, Any]]:
    """Factor that turns the PET pixel values (after RescaleSlope/Intercept) into SUVbw (g/mL).

    ds_first: any slice of the series (series-level tags); acquisition_datetimes: each slice's
    acquisition date/time (see `acquisition_datetime`), in slice order.
    Returns (factor, reference_time, details): `factor` is a float, or with DecayCorrection NONE an array
    with one factor per slice; `reference_time` is the time the dose was decayed to (None for ADMIN and
    for GML; the earliest slice time for NONE); `details` says which rule and values were used.
    """
    path = _path(ds_first)
    units = str(_require(ds_first, ds_first, "Units", "(0054,1001)")).strip().upper()
    if units == "GML":
        return 1.0, None, {"units_source": "GML", "rule": "pixels are already SUVbw (Units GML)"}
    activity_scale = 1.0
    if units == "CNTS":
        suv_pp, act_pp = philips_scale_factors(ds_first)
        if suv_pp is not None:
            return suv_pp, None, {
                "units_source": "CNTS", "rule": "CNTS: Philips SUV scale factor (7053,1000)"
            }
        if act_pp is None:
            raise InputError(
                path,
                "PET Units 'CNTS' cannot be converted to SUVbw without the Philips private scale factors "
                "(7053,1000) or (7053,1009)",
            )
        activity_scale = act_pp  # -> Bq/mL, then on as BQML (QIBA)
    elif units != "BQML":
        raise InputError(
            path,
            f"PET Units {units!r} cannot be converted to SUVbw (supported: BQML, GML, and CNTS with the "
            "Philips private scale factor; other counts-based units need a vendor calibration)",
        )
    decay = str(_require(ds_first, ds_first, "DecayCorrection", "(0054,1102)")).strip().upper()
    corrected_value = ds_first.get("CorrectedImage") or []
    if isinstance(corrected_value, str):  # a single CS value comes back as a plain string
        corrected_value = [corrected_value]
    corrected = {str(v).strip().upper() for v in corrected_value}
    if not corrected:
        raise InputError(path, "missing CorrectedImage (0028,0051) (needed for SUV: must list ATTN and DECY)")
    need = {"ATTN"} if decay == "NONE" else {"ATTN", "DECY"}
    if not need <= corrected:
        raise InputError(
            path, f"CorrectedImage {sorted(corrected)} lacks {sorted(need - corrected)}: not quantitative for SUV"
        )
    if decay not in ("START", "ADMIN", "NONE"):
        raise InputError(path, f"DecayCorrection {decay!r} is not supported (START, ADMIN or NONE)")

    weight_kg = _positive_float(ds_first, _require(ds_first, ds_first, "PatientWeight", "(0010,1030)"), "PatientWeight")
    seq = ds_first.get("RadiopharmaceuticalInformationSequence")
    if not seq:
        raise InputError(path, "missing RadiopharmaceuticalInformationSequence (0054,0016) (needed for SUV)")
    rp = seq[0]
    dose_value = _require(ds_first, rp, "RadionuclideTotalDose", "(0018,1074)")
    dose = _positive_float(ds_first, dose_value, "RadionuclideTotalDose")  # Bq
    half_life_value = _require(ds_first, rp, "RadionuclideHalfLife", "(0018,1075)")
    half_life = _positive_float(ds_first, half_life_value, "RadionuclideHalfLife")  # s
    details: dict[str, Any] = {
        "units_source": units,
        "decay_correction": decay,
        "weight_kg": weight_kg,
        "injected_dose_bq": dose,
        "half_life_s": half_life,
    }
    # g; for Philips CNTS also times the (Bq/mL per pixel unit) activity scale
    weight_g = weight_kg * 1000.0 * activity_scale
    if activity_scale != 1.0:
        details["activity_scale"] = activity_scale
        details["units_source"] = "CNTS (Philips activity scale factor (7053,1009) -> Bq/mL)"
    if decay == "ADMIN":
        details["rule"] = "ADMIN: images decay-corrected to injection; dose not decayed"
        return weight_g / dose, None, details

    series_dt = _time_tag(ds_first, "SeriesDate", "SeriesTime")
    if series_dt is None:
        raise InputError(path, "missing SeriesDate (0008,0021) or SeriesTime (0008,0031) (needed for SUV)")
    acq = [t for t in acquisition_datetimes]
    inj, inj_source = injection_datetime(ds_first, rp, series_dt)
    details["injection_time"] = inj.isoformat()
    details["injection_time_source"] = inj_source

    def decayed(t: dt.datetime) -> float:
        elapsed = (t - inj).total_seconds()
        if elapsed < 0:
            raise InputError(path, f"injection time {inj.isoformat()} is after the scan reference time {t.isoformat()}")
        return dose * 2.0 ** (-elapsed / half_life)

    if decay == "NONE":
        if not acq or any(t is None for t in acq):
            raise InputError(
                path, "missing AcquisitionDate/AcquisitionTime (0008,0022/0032) on a slice (needed for SUV with "
                "DecayCorrection NONE)"
            )
        factors = np.array([weight_g / decayed(t) for t in acq], np.float64)
        details["rule"] = "NONE: dose decayed to each slice's own acquisition time"
        return factors, min(acq), details

    # START
    known = [t for t in acq if t is not None]
    earliest = min(known) if known else None
    if earliest is None or series_dt <= earliest:
        ref, rule = series_dt, "START: SeriesDate/SeriesTime"
        if earliest is None:
            rule += " (no AcquisitionTime to check against)"
    else:
        ge = _ge_scan_datetime(ds_first)
        if ge is not None:
            ref, rule = ge, "START: series time after acquisition; GE private scan date/time (0009,100D)"
        else:
            ref, rule = earliest, "START: series time after acquisition; earliest AcquisitionDate/Time"
    details["rule"] = rule
    details["decay_time_s"] = (ref - inj).total_seconds()
    return weight_g / decayed(ref), ref, details

"""SUVbw scale factor per the QIBA vendor-neutral rules, on hand-built datasets and one real PET slice."""

import datetime as dt
import math

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from ctpet_srgan.dicom_io import read_series
from ctpet_srgan.errors import InputError
from ctpet_srgan.suv import acquisition_datetime, parse_da_tm, parse_dt, suv_scale_factor
from tests.conftest import REAL_PET_SLICE

INJ = dt.datetime(2020, 5, 6, 10, 0, 0)
DOSE, HALF, KG = 3.0e8, 6586.2, 80.0


def _tm(t):
    return t.strftime("%H%M%S.%f")


def _ds(series=INJ + dt.timedelta(minutes=62), decay="START", units="BQML", corrected=("ATTN", "DECY"), start_dt=False):
    ds = Dataset()
    ds.filename = "/data/pet/IM0001.dcm"
    ds.Units, ds.DecayCorrection, ds.CorrectedImage = units, decay, list(corrected)
    ds.PatientWeight = str(KG)
    ds.SeriesDate, ds.SeriesTime = series.strftime("%Y%m%d"), _tm(series)
    rp = Dataset()
    rp.RadionuclideTotalDose, rp.RadionuclideHalfLife = str(DOSE), str(HALF)
    rp.RadiopharmaceuticalStartTime = _tm(INJ)
    if start_dt:
        rp.RadiopharmaceuticalStartDateTime = INJ.strftime("%Y%m%d") + _tm(INJ)
    ds.RadiopharmaceuticalInformationSequence = Sequence([rp])
    return ds


def _expected(ref, inj=INJ):
    return KG * 1000 / (DOSE * math.exp(-math.log(2) * (ref - inj).total_seconds() / HALF))


def test_start_uses_series_time_when_not_after_acquisition():
    series = INJ + dt.timedelta(minutes=62)
    acq = [series + dt.timedelta(minutes=m) for m in (3, 0, 6)]
    f, ref, details = suv_scale_factor(_ds(series), acq)
    assert ref == series
    assert f == pytest.approx(_expected(series), rel=1e-12)
    assert details["decay_correction"] == "START"


def test_start_uses_earliest_acquisition_when_series_time_is_later():
    series = INJ + dt.timedelta(minutes=95)  # e.g. a re-processed series
    acq = [INJ + dt.timedelta(minutes=m) for m in (66, 61, 64)]
    f, ref, _ = suv_scale_factor(_ds(series), acq)
    assert ref == INJ + dt.timedelta(minutes=61)
    assert f == pytest.approx(_expected(ref), rel=1e-12)
    assert f != pytest.approx(_expected(series), rel=1e-3)


def test_start_datetime_tag_preferred_over_series_date_plus_time():
    ds = _ds(start_dt=True)
    ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartTime = "000000"  # would be wrong
    series = INJ + dt.timedelta(minutes=62)
    f, _, details = suv_scale_factor(ds, [series])
    assert f == pytest.approx(_expected(series), rel=1e-12)
    assert details["injection_time_source"] == "RadiopharmaceuticalStartDateTime"


def test_injection_before_midnight_scan_after():
    inj = dt.datetime(2020, 5, 6, 23, 40)
    series = dt.datetime(2020, 5, 7, 0, 45)
    ds = _ds(series)
    ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartTime = _tm(inj)
    f, _, _ = suv_scale_factor(ds, [series])
    assert f == pytest.approx(_expected(series, inj), rel=1e-12)


def test_admin_does_not_decay_the_dose():
    f, ref, _ = suv_scale_factor(_ds(decay="ADMIN"), [INJ + dt.timedelta(hours=1)])
    assert ref is None and f == pytest.approx(KG * 1000 / DOSE, rel=1e-12)


def test_none_decays_to_each_slice_time():
    acq = [INJ + dt.timedelta(minutes=m) for m in (60, 63, 66)]
    f, ref, _ = suv_scale_factor(_ds(decay="NONE", corrected=("ATTN",)), acq)
    assert ref == acq[0]
    np.testing.assert_allclose(f, [_expected(t) for t in acq], rtol=1e-12)
    assert f[2] > f[0]  # later slices: less activity left, larger factor


def test_gml_is_already_suv():
    f, ref, details = suv_scale_factor(_ds(units="GML"), [None])
    assert f == 1.0 and ref is None and details["units_source"] == "GML"


def test_ge_private_scan_time_used_when_series_time_is_later():
    series = INJ + dt.timedelta(minutes=95)
    ds = _ds(series)
    scan = INJ + dt.timedelta(minutes=58)
    block = ds.private_block(0x0009, "GEMS_PETD_01", create=True)
    block.add_new(0x0D, "DT", scan.strftime("%Y%m%d") + _tm(scan))
    f, ref, _ = suv_scale_factor(ds, [INJ + dt.timedelta(minutes=61)])
    assert ref == scan and f == pytest.approx(_expected(scan), rel=1e-12)


@pytest.mark.parametrize("units", ["CNTS", "PROPCPS", "BQCC"])
def test_unconvertible_units_refused(units):
    with pytest.raises(InputError, match=f"IM0001.dcm: PET Units '{units}' cannot be converted"):
        suv_scale_factor(_ds(units=units), [INJ])


def _drop(path):
    def f(ds):
        obj = ds
        for kw in path[:-1]:
            obj = obj[0] if kw == 0 else getattr(obj, kw)
        delattr(obj, path[-1])
        return ds

    return f


@pytest.mark.parametrize(
    "edit,tag",
    [
        (_drop(["PatientWeight"]), "PatientWeight"),
        (_drop(["Units"]), "Units"),
        (_drop(["DecayCorrection"]), "DecayCorrection"),
        (_drop(["RadiopharmaceuticalInformationSequence", 0, "RadionuclideTotalDose"]), "RadionuclideTotalDose"),
        (_drop(["RadiopharmaceuticalInformationSequence", 0, "RadionuclideHalfLife"]), "RadionuclideHalfLife"),
        (_drop(["RadiopharmaceuticalInformationSequence", 0, "RadiopharmaceuticalStartTime"]),
         "RadiopharmaceuticalStartTime"),
        (_drop(["RadiopharmaceuticalInformationSequence"]), "RadiopharmaceuticalInformationSequence"),
        (_drop(["SeriesTime"]), "SeriesTime"),
        (_drop(["CorrectedImage"]), "CorrectedImage"),
    ],
)
def test_missing_tags_named(edit, tag):
    with pytest.raises(InputError) as e:
        suv_scale_factor(edit(_ds()), [INJ + dt.timedelta(hours=1)])
    assert str(e.value).startswith("/data/pet/IM0001.dcm: ") and tag in str(e.value)


def test_not_decay_corrected_refused_for_start():
    with pytest.raises(InputError, match="lacks \\['DECY'\\]"):
        suv_scale_factor(_ds(corrected=("ATTN", "NORM")), [INJ])


def test_zero_weight_refused():
    ds = _ds()
    ds.PatientWeight = "0"
    with pytest.raises(InputError, match="PatientWeight must be positive"):
        suv_scale_factor(ds, [INJ])


def test_injection_after_scan_refused():
    ds = _ds(start_dt=True)
    rp = ds.RadiopharmaceuticalInformationSequence[0]
    later = INJ + dt.timedelta(hours=3)
    rp.RadiopharmaceuticalStartDateTime = later.strftime("%Y%m%d") + _tm(later)
    with pytest.raises(InputError, match="after the scan reference time"):
        suv_scale_factor(ds, [INJ + dt.timedelta(hours=1)])


def test_time_parsing():
    assert parse_da_tm("20200506", "1015") == dt.datetime(2020, 5, 6, 10, 15)
    assert parse_da_tm("20200506", "10:15:30.5") == dt.datetime(2020, 5, 6, 10, 15, 30, 500000)
    assert parse_dt("20200506101530.25+0100") == dt.datetime(2020, 5, 6, 10, 15, 30, 250000)
    assert parse_da_tm(None, "1015") is None
    with pytest.raises(ValueError):
        parse_da_tm("2020-05-06", "1015")


def test_real_flt_pet_slice_suv_by_hand():
    """ACRIN-FLT-Breast slice: Units BQML, DecayCorrection START, SeriesTime == AcquisitionTime, injection
    from SeriesDate + RadiopharmaceuticalStartTime (no StartDateTime tag), F-18 half-life 6586.2 s."""
    ds = pydicom.dcmread(str(REAL_PET_SLICE))
    rp = ds.RadiopharmaceuticalInformationSequence[0]
    assert "RadiopharmaceuticalStartDateTime" not in rp
    fmt = "%Y%m%d%H%M%S.%f"
    series = dt.datetime.strptime(ds.SeriesDate + ds.SeriesTime, fmt)
    acq = dt.datetime.strptime(ds.AcquisitionDate + ds.AcquisitionTime, fmt)
    inj = dt.datetime.strptime(ds.SeriesDate + rp.RadiopharmaceuticalStartTime, fmt)
    assert series <= acq  # so QIBA says: use SeriesDate/Time
    elapsed = (series - inj).total_seconds()
    decayed = float(rp.RadionuclideTotalDose) * math.exp(-math.log(2) * elapsed / float(rp.RadionuclideHalfLife))
    scale = float(ds.PatientWeight) * 1000.0 / decayed
    bqml = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = bqml * scale

    vol = read_series(REAL_PET_SLICE)
    assert vol.modality == "PT" and vol.units == "SUVbw"
    assert vol.meta["suv_scale"] == pytest.approx(scale, rel=1e-9)
    assert vol.meta["suv_reference_time"] == series.isoformat()
    hot = np.unravel_index(np.argmax(bqml), bqml.shape)
    for r, c in [hot, (84, 84), (40, 120), (100, 60)]:
        assert vol.array[0, r, c] == pytest.approx(expected[r, c], rel=1e-5, abs=1e-6)
    assert 1.0 < vol.array.max() < 50.0  # a plausible FLT SUVmax
    # and via the pure function with the slice's own acquisition time:
    f, ref, _ = suv_scale_factor(ds, [acquisition_datetime(ds)])
    assert ref == series and f == pytest.approx(scale, rel=1e-12)


def _philips(ds, suv=None, act=None):
    ds.Units = "CNTS"
    block = ds.private_block(0x7053, "Philips PET Private Group", create=True)
    if suv is not None:
        block.add_new(0x00, "DS", str(suv))
    if act is not None:
        block.add_new(0x09, "DS", str(act))
    return ds


def test_philips_cnts_suv_scale_factor():
    f, ref, details = suv_scale_factor(_philips(_ds(), suv=2.7634e-4, act=12.5), [INJ])
    assert f == pytest.approx(2.7634e-4) and ref is None and details["units_source"] == "CNTS"


def test_philips_cnts_activity_scale_then_bqml_rule():
    series = INJ + dt.timedelta(minutes=62)
    f, ref, _ = suv_scale_factor(_philips(_ds(series), act=12.5), [series])
    assert ref == series and f == pytest.approx(12.5 * _expected(series), rel=1e-12)


def test_cnts_without_philips_factors_refused():
    with pytest.raises(InputError, match="without the Philips private scale factors"):
        suv_scale_factor(_philips(_ds(), suv=0), [INJ])


def test_input_error_format():
    import pickle

    e = InputError("/a/b.dcm", "bad thing")
    assert isinstance(e, ValueError) and str(e) == "/a/b.dcm: bad thing"
    assert (e.path, e.problem) == ("/a/b.dcm", "bad thing")
    assert str(InputError(None, "no file")) == "no file"
    assert str(pickle.loads(pickle.dumps(e))) == str(e)

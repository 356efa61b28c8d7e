"""data_prep.beam_pipeline: the Beam DirectRunner (multi-process) gives the local runner's set, record for record."""

import dataclasses
import sys
from pathlib import Path

import pytest
import tensorflow as tf

from ctpet_srgan import records
from ctpet_srgan.errors import InputError
from data_prep import beam_pipeline as bp
from data_prep import convert as cv
from data_prep import phantom as ph
from data_prep.__main__ import main as cli

CFG = ph.PhantomConfig(fov_mm=128.0, pet_slices=6)  # PET 32x32x6 @ 4 mm: small, as in test_convert
PREP = cv.ConvertConfig(scale=2, seed=1)
MULTI = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
needs_beam = pytest.mark.skipif(not bp.beam_available(),
                                reason="apache_beam is not importable: pip install -r requirements-beam.txt")


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom4")
    ph.write_phantom_studies(root, 4, 5, nema_every=4, cfg=CFG)
    specs = cv.discover_studies(root, log=lambda s: None)
    assert len(specs) == 4
    broken = cv.StudySpec(key=records.study_hash("1.2.3.broken"), ct=str(root / "nowhere"), pet=specs[0].pet)
    return root, specs, broken


@pytest.fixture(scope="module")
def local(studies, tmp_path_factory):
    _, specs, broken = studies
    out = tmp_path_factory.mktemp("local")
    return out, cv.convert(specs + [broken], out, PREP, shard_size=5, log=lambda s: None)


def _by_split(out: Path, manifest: dict) -> dict[str, list[bytes]]:
    """split -> its serialized examples (sorted: a multiset) read back from the shards the manifest lists."""
    got = {}
    for split in records.SPLITS:
        exs = []
        for sh in manifest["splits"][split]["shards"]:
            ds = tf.data.TFRecordDataset(str(out / sh["file"]), compression_type=manifest["compression"])
            exs += [r.numpy() for r in ds]
        got[split] = sorted(exs)
    return got


def test_data_prep_imports_and_says_what_to_install_without_beam(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "apache_beam", None)  # as if not installed: `import apache_beam` fails
    assert bp.beam_available() is False
    with pytest.raises(ImportError, match="pip install -r requirements-beam.txt"):
        bp.convert_beam([], tmp_path / "out")
    assert cli(["convert", "--studies", str(tmp_path), "--out", str(tmp_path / "out"), "--runner=direct"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install -r requirements-beam.txt" in err, err
    assert not (tmp_path / "out").exists()


def test_local_runner_refuses_beam_options(capsys, tmp_path):
    assert cli(["convert", "--studies", str(tmp_path), "--out", str(tmp_path / "o"), "--direct_num_workers=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "need --runner=direct" in err[0], err


@needs_beam
def test_direct_multiprocess_equals_local_record_for_record(studies, local, tmp_path):
    _, specs, broken = studies
    ref_out, ref = local
    assert [s["study"] for s in ref["skipped"]] == [broken.key]  # the local runner skipped the broken study
    out = tmp_path / "beam"
    logs = []
    m = bp.convert_beam(specs + [broken], out, PREP, runner="direct", pipeline_args=MULTI, shard_size=5,
                        log=logs.append)
    assert m == ref  # splits, shard names and counts, summaries, skipped: no runner-specific fields
    assert records.read_manifest(out) == m
    assert any(broken.key in s and "FAILED" in s for s in logs)  # reported by hash; the other studies ran
    assert m["examples"] == 24 and sorted(m["studies"]) == sorted(s.key for s in specs)
    assert _by_split(out, m) == _by_split(ref_out, ref)
    for sh in (sh for s in m["splits"].values() for sh in s["shards"]):  # the same layout: shard for shard
        assert (out / sh["file"]).read_bytes() == (ref_out / sh["file"]).read_bytes(), sh["file"]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in ref_out.iterdir())  # no .beam left


@needs_beam
def test_cli_passes_beam_options_and_gzip_matches(studies, tmp_path):
    root, specs, _ = studies
    ref = cv.convert(specs, tmp_path / "local", PREP, shard_size=7, compression="GZIP", log=lambda s: None)
    out = tmp_path / "beam"
    argv = ["convert", "--studies", str(root), "--out", str(out), "--seed", "1", "--shard_size", "7",
            "--compression", "GZIP", "--runner=direct", "--", "--direct_running_mode=in_memory"]
    assert cli(argv) == 0
    m = records.read_manifest(out)
    assert m == ref and all(sh["file"].endswith(".tfrecord.gz") for s in m["splits"].values() for sh in s["shards"])
    assert _by_split(out, m) == _by_split(tmp_path / "local", ref)
    assert cli(argv) == 0  # a complete set is left alone
    assert records.read_manifest(out) == m


@needs_beam
def test_strict_or_all_failed_leaves_no_manifest_and_no_shards(studies, tmp_path):
    _, specs, broken = studies
    for run, kw in ((specs[:2] + [broken], {"strict": True}), ([broken], {})):
        out = tmp_path / f"out{len(run)}"
        with pytest.raises(InputError, match=f"study {broken.key}: .*nowhere"):
            bp.convert_beam(run, out, PREP, shard_size=5, log=lambda s: None, **kw)
        assert not (out / records.MANIFEST).exists()
        assert not [p for p in out.iterdir() if cv.SHARD_RE.match(p.name)] and not (out / bp.BEAM_DIR).exists()


@needs_beam
def test_prep_scale_bench_times_runners_that_write_the_same_set(tmp_path):
    from bench import prep_scale

    res = prep_scale.measure(2, small=True, repeats=1, work=tmp_path, only={"local_1", "beam_in_memory", "cli_local_2"},
                             warmup=False)
    assert res["same_manifest"] is True  # the local pool, the CLI and Beam wrote the same set
    assert set(res["runs"]) == {"local_1", "beam_in_memory", "cli_local_2"}
    assert res["scan_s"] > 0 and res["compute_s"] > 0 and res["decode_s"] > 0 and res["startup_s"] > 0
    par = res["parallel"]
    assert par["alone_s"] > 0 and par["efficiency"] == pytest.approx(par["alone_s"] / par["together_s"])
    assert 0.2 < par["efficiency"] < 1.5 and "parallel efficiency: 2 studies prepared alone" in prep_scale.table(res)
    assert all(v["studies_per_s"] > 0 and v["overhead_s"] >= 0 for v in res["runs"].values())
    assert set(res["ratios"]) == {"beam_in_memory_over_local_1", "local_1_over_decode_1", "cli_local_2_over_decode_1"}
    assert "beam_in_memory_over_local_1" in prep_scale.table(res)


def test_prep_scale_bench_on_given_studies_passes_the_spacing_to_every_runner(tmp_path):
    """--studies: the first --cases study folders are copied and timed; --hr_spacing_mm reaches the in-process and
    the CLI runner (both manifests say it); too few studies is a clear error."""
    from bench import prep_scale
    from ctpet_srgan.manifest import Manifest
    from data_prep.phantom import PhantomConfig, write_phantom_studies

    src = tmp_path / "src"
    write_phantom_studies(src, 3, seed=1, cfg=PhantomConfig(fov_mm=128.0, pet_slices=6))
    work = tmp_path / "work"
    work.mkdir()
    res = prep_scale.measure(2, small=True, repeats=1, work=work, only={"local_1", "cli_local_1"}, warmup=False,
                             studies=src, hr_spacing_mm=3.0)
    assert res["same_manifest"] is True and res["studies_copied"] == 2 and "phantom" not in res
    assert sorted(p.name for p in (work / "dicom").iterdir()) == ["case_000", "case_001"]
    for name in ("local_1", "cli_local_1"):
        assert Manifest.load(work / name).hr_spacing_mm[:2] == (3.0, 3.0)
    assert f"studies from {src} (HR spacing 3.0 mm)" in prep_scale.table(res)
    with pytest.raises(ValueError, match=r"unknown runners \['cli_local_3'\]; known: local_1, local_2"):
        prep_scale.measure(2, small=True, repeats=1, work=tmp_path / "w3", studies=src, only={"cli_local_3"})
    with pytest.raises(ValueError, match="3 study folders, fewer than --cases=4"):
        prep_scale.measure(4, small=True, repeats=1, work=tmp_path / "w2", studies=src)


@needs_beam
def test_workers_scan_a_tree_and_a_killed_run_resumes_without_preparing_again(studies, local, tmp_path,
                                                                              monkeypatch):
    import os
    import signal
    import subprocess
    import time

    root, specs, broken = studies
    ref_out, ref = local
    out = tmp_path / "killed"
    argv = ["convert", "--studies", str(root), "--out", str(out), "--seed", "1", "--shard_size", "5",
            "--runner=direct", "--", *MULTI]
    proc = subprocess.Popen([sys.executable, "-m", "data_prep", *argv], cwd=Path(__file__).resolve().parents[1],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:  # the driver and its workers killed once a study is prepared: what an interrupted run leaves
        deadline = time.time() + 300
        while time.time() < deadline and not list((out / ".work").glob("*.examples")) and proc.poll() is None:
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(1)  # the killed workers' last writes
    (out / "train-00000-of-00099.tfrecord").write_bytes(b"a stale shard")  # as if a shard of the killed run
    done = sorted(p.stem for p in (out / ".work").glob("*.examples"))
    if proc.returncode == 0:  # it finished before the kill (a very fast machine): nothing to resume
        done = []
        (out / records.MANIFEST).unlink()
    assert not (out / records.MANIFEST).exists()
    calls = []
    real = cv.prepare_study
    monkeypatch.setattr(cv, "prepare_study", lambda s, c: calls.append(s.key) or real(s, c))
    logs = []  # in_memory: the workers are this process, so the calls are seen
    m = bp.convert_beam(cv.StudyTree(str(root)), out, PREP, runner="direct", shard_size=5, log=logs.append,
                        pipeline_args=["--direct_running_mode=in_memory"])
    assert sorted(calls) == sorted(s.key for s in specs if s.key not in done)  # prepared studies read back
    assert (not done) or any(f"resumed: {len(done)} of 4" in s for s in logs)
    assert {k: v for k, v in m.items() if k != "skipped"} == {k: v for k, v in ref.items() if k != "skipped"}
    for sh in (sh for s in m["splits"].values() for sh in s["shards"]):
        assert (out / sh["file"]).read_bytes() == (ref_out / sh["file"]).read_bytes(), sh["file"]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in ref_out.iterdir())  # no .work, stale


@needs_beam
def test_a_tree_with_an_unregistered_study_is_refused_like_discover_studies(studies, tmp_path):
    import shutil

    import pydicom

    root, _, _ = studies
    tree = tmp_path / "tree"
    shutil.copytree(root / "case_001", tree / "case_001")
    for f in (tree / "case_001" / "ct").iterdir():
        ds = pydicom.dcmread(f)
        ds.FrameOfReferenceUID = "1.2.3.4.5"
        ds.save_as(f)
    with pytest.raises(InputError) as want:
        cv.discover_studies(tree)
    out = tmp_path / "out"
    with pytest.raises(InputError) as got:
        bp.convert_beam(cv.StudyTree(str(tree)), out, PREP, log=lambda s: None,
                        pipeline_args=["--direct_running_mode=in_memory"])
    assert str(got.value) == str(want.value) and "--allow_unregistered" in str(got.value)
    assert not (out / records.MANIFEST).exists() and not [p for p in out.iterdir() if cv.SHARD_RE.match(p.name)]
    m = bp.convert_beam(cv.StudyTree(str(tree), allow_unregistered=True), tmp_path / "ok",
                        dataclasses.replace(PREP, allow_unregistered=True), log=lambda s: None,
                        pipeline_args=["--direct_running_mode=in_memory"])
    assert m["examples"] == 6

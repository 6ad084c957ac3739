"""The output's safety, caused for real: damaged and hostile `_SUCCESS.json` markers, links in the
staging area, unreadable resume backups, a full disk at commit, and output roots that cannot be
reached or written (a real S3 API on loopback, a real read-only mount)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainer_core.artifacts import (
    ATTEMPT,
    BACKUP,
    SUCCESS,
    ArtifactWriter,
    MarkerError,
    check_artifact_name,
    engine_files,
    read_marker,
)
from trainer_core.errors import StorageError
from trainer_core.locks import LOCK_STALE_SECONDS
from trainer_core.storage import check_output_access, file_sha256, open_storage
from trainer_core.verify import verify_pair

TAG = "ETHUSDT_FW005_SL050_TP100"
ATTEMPT_ID = {"config_hash": "sha256:aaa", "data_sha256": "sha256:bbb"}
needs_root = pytest.mark.skipif(os.geteuid() != 0 and not os.environ.get("CI"), reason="mounting needs root")


def write_pair(out: Path, pair: str = "ETHUSDT", tag: str = TAG, extra: dict | None = None) -> Path:
    """A committed pair folder as the engine leaves it: its engine files and a marker listing them."""
    import io
    import zipfile

    folder = out / pair
    folder.mkdir(parents=True, exist_ok=True)
    names = ["f1", "f2"]  # engine files that agree with each other, as `trainer verify` checks
    spec = {"pair": pair, "tag": tag, "sequence_length": 4, "timeframe": "1m", "feature_names": names}
    spec["spec"] = {"pair": pair, "train": {"sequence_length": 4}, "data": {"timeframe": "1m"}}
    scaler = {"feature_names": names, "center": [0.0, 0.0], "scale": [1.0, 1.0]}
    keras = io.BytesIO()
    with zipfile.ZipFile(keras, "w") as zf:
        zf.writestr("config.json", json.dumps({"build_config": {"input_shape": [None, 4, 2]}}))
    model, scaler_name, spec_name = engine_files(tag)
    (folder / model).write_bytes(keras.getvalue())
    (folder / scaler_name).write_text(json.dumps(scaler))
    (folder / spec_name).write_text(json.dumps(spec))
    (folder / f"history_{tag}.csv").write_text("epoch,loss\n1,0.5\n")
    artifacts = {p.name: {"sha256": file_sha256(p), "bytes": p.stat().st_size} for p in folder.iterdir()}
    marker = {
        "pair": pair,
        "tag": tag,
        "config_hash": "sha256:aaa",
        "data_sha256": None,
        "artifacts": artifacts,
    }
    (folder / SUCCESS).write_text(json.dumps({**marker, **(extra or {})}))
    return folder


# -- the marker's schema ------------------------------------------------------------------------


WRONG_SHAPES = {
    "[]": "it is an array, not an object",
    '"x"': "it is a string, not an object",
    "null": "it is null, not an object",
    '{"artifacts": []}': "'artifacts' is an array, not an object of file checksums",
    f'{{"pair": "ETHUSDT", "tag": "{TAG}", "artifacts": {{"model_{TAG}.keras": []}}}}': f"artifact model_{TAG}.keras has no valid sha256",
    '{"pair": "ETHUSDT", "tag": "%s", "art': "not valid JSON (JSONDecodeError)",
}


def test_verify_reports_every_wrong_shape_marker_in_one_line(trainer, tmp_path):
    out = tmp_path / "out"
    write_pair(out, "BTCUSDT", "BTCUSDT_FW005_SL050_TP100")  # an intact pair beside the damaged one
    folder = write_pair(out)
    for text, reason in WRONG_SHAPES.items():
        (folder / SUCCESS).write_text(text)
        result = trainer("verify", out)
        assert result.exit_code == 1, (text, result.output)
        assert f"FAILED  ETHUSDT: {SUCCESS} is unreadable: {reason}" in result.output, (text, result.output)
        assert "ok      BTCUSDT" in result.output and "1 of 2 pair(s) complete and intact." in result.output


def test_a_marker_that_leaves_out_an_engine_file_is_not_complete(trainer, tmp_path):
    out = tmp_path / "out"
    folder = write_pair(out)
    assert trainer("verify", out).exit_code == 0
    marker = json.loads((folder / SUCCESS).read_text())
    (folder / f"model_{TAG}.keras").unlink()
    (folder / SUCCESS).write_text(json.dumps({**marker, "artifacts": {}}))
    result = trainer("verify", out)
    assert result.exit_code == 1
    assert f"FAILED  ETHUSDT: {SUCCESS} is unreadable: it does not list model_{TAG}.keras" in result.output
    for name in engine_files(TAG):  # each engine file is required, the spec file included
        partial = {k: v for k, v in marker["artifacts"].items() if k != name}
        with pytest.raises(MarkerError, match=f"does not list {name}"):
            read_marker(json.dumps({**marker, "artifacts": partial}), str(folder))


def test_marker_mappings_are_type_checked(tmp_path):
    folder = write_pair(
        tmp_path / "out",
        extra={
            "metrics": {"val_accuracy": 0.5},
            "figures": {"trading": {"pnl": 1}},
            "code": {"trainer": "0.1.0"},
        },
    )
    marker = read_marker((folder / SUCCESS).read_bytes(), str(folder))
    assert marker["figures"] == {"trading": {"pnl": 1}} and marker["metrics"]["val_accuracy"] == 0.5
    good = json.loads((folder / SUCCESS).read_text())
    for field, value, reason in (
        ("metrics", [1], "'metrics' is not an object"),
        ("code", "x", "'code' is not an object"),
        ("figures", {"trading": 3}, "'figures.trading' is not an object"),
        ("started", 5, "'started' is not a string"),
        ("tag", "../x", "tag '../x' is not a plain name"),
    ):
        with pytest.raises(MarkerError, match=reason.replace("(", r"\(").replace(".", r"\.")) as caught:
            read_marker(json.dumps({**good, field: value}), str(folder))
        assert caught.value.exit_code == 2 and caught.value.hint


# -- artifact names -----------------------------------------------------------------------------


HOSTILE_NAMES = [
    "../outside.txt",
    "/etc/hostname",
    "logs/../../outside.txt",
    "a\\..\\b",
    "x\x00y",
    "..hidden",
    "",
    ".",
    "logs//x",
    "a/" * 9 + "b",
    "tab\there",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_artifact_names_are_refused(name):
    with pytest.raises(MarkerError, match="is not a"):
        check_artifact_name(name, "s3://bucket/ETHUSDT")


def test_nested_plain_names_are_accepted():
    for name in (
        "logs/train/events.out.tfevents.1795640654.vm.7256.0.v2",
        f"model_{TAG}.keras",
        "report 1.html",
    ):
        assert check_artifact_name(name) == name


def test_verify_never_reads_outside_the_pair_folder(trainer, tmp_path):
    """A marker listing ``../outside.txt`` with its true checksum was reported intact (it read the
    file outside the pair's folder); now the marker is refused before any file is opened."""
    out = tmp_path / "out"
    folder = write_pair(out)
    outside = out / "outside.txt"
    outside.write_text("secret")
    marker = json.loads((folder / SUCCESS).read_text())
    marker["artifacts"]["../outside.txt"] = {"sha256": file_sha256(outside), "bytes": 6}
    (folder / SUCCESS).write_text(json.dumps(marker))
    result = trainer("verify", out)
    assert result.exit_code == 1
    assert "artifact name '../outside.txt' is not a plain relative file name" in result.output


def test_a_writer_refuses_a_name_that_leaves_its_folder(tmp_path):
    out = ArtifactWriter(tmp_path / "out", "ETHUSDT", TAG)
    out.prepare(ATTEMPT_ID)
    try:
        with pytest.raises(MarkerError):
            out.write_text("../../escaped.txt", "x")
        assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "out" / "escaped.txt").exists()
    finally:
        out.discard_outputs()


# -- fuzzing the marker -------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
hostile_names = st.one_of(
    st.sampled_from(
        HOSTILE_NAMES + [f"model_{TAG}.keras", f"scaler_{TAG}.json", f"spec_{TAG}.json", "logs/x"]
    ),
    st.lists(st.sampled_from(list("./\\\x00ab:~") + ["..", "é", "\u202e"]), max_size=12).map("".join),
    st.text(max_size=30),
)
digests = st.one_of(st.just("sha256:" + "0" * 64), st.text(max_size=10), json_scalars)
artifact_maps = st.dictionaries(
    hostile_names,
    st.one_of(
        st.fixed_dictionaries({"sha256": digests, "bytes": st.one_of(st.integers(-2, 10**6), json_scalars)}),
        json_values,
    ),
    max_size=6,
)
markers = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {
            "pair": st.one_of(st.just("ETHUSDT"), json_values),
            "tag": st.one_of(st.just(TAG), hostile_names),
            "artifacts": st.one_of(artifact_maps, json_values),
        },
        optional={
            "figures": json_values,
            "metrics": json_values,
            "code": json_values,
            "started": json_values,
            "data_sha256": json_values,
        },
    ),
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=markers, cut=st.one_of(st.none(), st.integers(0, 200)))
def test_fuzz_marker_contents(tmp_path, doc, cut):
    raw = json.dumps(doc).encode()
    if cut is not None:
        raw = raw[:cut]
    out = tmp_path / "out"
    folder = out / "ETHUSDT"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SUCCESS).write_bytes(raw)
    start = time.monotonic()
    try:
        marker = read_marker(raw, str(folder))
    except MarkerError as exc:
        assert exc.message.startswith(f"{folder}/{SUCCESS} is unreadable: ") and "\n" not in exc.reason
    else:
        for name in marker["artifacts"]:  # a name that passed resolves inside the pair's folder
            assert (folder / name).resolve().is_relative_to(folder.resolve()), name
    problems = verify_pair(open_storage(out), "ETHUSDT")
    assert problems and all(isinstance(p, str) and p for p in problems)  # nothing here is intact
    assert time.monotonic() - start < 2


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=markers)
def test_fuzz_marker_through_trainer_verify(trainer, tmp_path, doc):
    folder = write_pair(tmp_path / "out")
    (folder / SUCCESS).write_text(json.dumps(doc))
    result = trainer("verify", tmp_path / "out")  # a foreign exception would propagate here
    assert result.exit_code == 1 and "FAILED  ETHUSDT: " in result.output, result.output


# -- links and files in the staging area ---------------------------------------------------------


def test_a_link_at_the_pairs_staging_folder_is_never_followed(tmp_path):
    target = tmp_path / "precious"
    target.mkdir()
    (target / "data.txt").write_text("keep me")
    staging = tmp_path / "out" / ".trainer-staging"
    staging.mkdir(parents=True)
    (staging / "ETHUSDT").symlink_to(target)
    out = ArtifactWriter(tmp_path / "out", "ETHUSDT", TAG)
    with pytest.raises(StorageError) as caught:
        out.prepare(ATTEMPT_ID)
    assert (
        f"{staging / 'ETHUSDT'} is a link, where the pair's staging folder of ETHUSDT should be"
        in caught.value.message
    )
    assert (target / "data.txt").read_text() == "keep me" and sorted(os.listdir(target)) == ["data.txt"]
    assert (staging / "ETHUSDT").is_symlink()
    assert not out.lock_path.exists()  # the lock went with the failure


def test_a_file_or_link_where_the_pair_folder_should_be_is_an_error(tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    (root / "ETHUSDT").write_text("not a folder")
    with pytest.raises(
        StorageError, match=f"{root / 'ETHUSDT'} is a file, where the pair's folder of ETHUSDT"
    ):
        ArtifactWriter(root, "ETHUSDT", TAG).prepare(ATTEMPT_ID)
    assert (root / "ETHUSDT").read_text() == "not a folder" and sorted(os.listdir(root)) == ["ETHUSDT"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "ETHUSDT").unlink()
    (root / "ETHUSDT").symlink_to(elsewhere)
    with pytest.raises(StorageError, match="is a link"):
        ArtifactWriter(root, "ETHUSDT", TAG).prepare(ATTEMPT_ID)
    assert (root / "ETHUSDT").is_symlink() and elsewhere.is_dir()


def test_links_inside_the_staging_folder_are_removed_not_followed(tmp_path):
    target = tmp_path / "precious"
    target.mkdir()
    (target / "data.txt").write_text("keep me")
    out = ArtifactWriter(tmp_path / "out", "ETHUSDT", TAG)
    out.prepare(ATTEMPT_ID)
    out.discard_outputs()
    out.dir.mkdir(parents=True, exist_ok=True)
    (out.dir / BACKUP).symlink_to(target)  # what a resume would keep, as a link
    (out.dir / ATTEMPT).write_text(json.dumps(ATTEMPT_ID))
    (out.dir / "logs").symlink_to(target)
    assert out.prepare(ATTEMPT_ID) is False  # a linked backup is no backup
    assert not (out.dir / BACKUP).exists() and not (out.dir / "logs").exists()
    assert (target / "data.txt").read_text() == "keep me"
    (out.dir / "logs").symlink_to(target)
    out.discard_outputs()
    assert (target / "data.txt").read_text() == "keep me"


# -- the resume backup ---------------------------------------------------------------------------


def _stage_backup(
    out: ArtifactWriter, weights: bytes | None, epoch_json: str = '{"epoch": 1, "batch": 0}'
) -> None:
    out.dir.mkdir(parents=True, exist_ok=True)
    (out.dir / ATTEMPT).write_text(json.dumps(ATTEMPT_ID))
    (out.dir / BACKUP).mkdir(exist_ok=True)
    if weights is not None:
        (out.dir / BACKUP / "latest.weights.h5").write_bytes(weights)
    (out.dir / BACKUP / "training_metadata.json").write_text(epoch_json)
    (out.dir / "epochs.partial.json").write_text('{"0": {"loss": 1.0, "seconds": 1.0}}')


def _real_hdf5(path: Path) -> bytes:
    import h5py
    import numpy as np

    with h5py.File(path, "w") as fh:
        fh["w"] = np.arange(5000, dtype=np.float32)
    return path.read_bytes()


def test_an_unreadable_backup_is_discarded_with_a_warning(tmp_path):
    good = _real_hdf5(tmp_path / "w.h5")
    cases = {
        "empty": (b"", "backup/latest.weights.h5 is empty"),
        "cut short": (good[: len(good) // 2], "backup/latest.weights.h5 is damaged"),
        "not HDF5": (b"\x00" * 100, "backup/latest.weights.h5 is not an HDF5 file"),
        "missing": (None, "backup/latest.weights.h5 is missing"),
    }
    for label, (weights, reason) in cases.items():
        out = ArtifactWriter(tmp_path / "out", "ETHUSDT", TAG)
        _stage_backup(out, weights)
        lines: list[str] = []
        assert out.prepare(ATTEMPT_ID, echo=lines.append) is False, label
        assert len(lines) == 1 and lines[0].startswith(
            "Warning: ETHUSDT: the backup of the interrupted run cannot be read"
        )
        assert reason in lines[0] and lines[0].endswith("discarding it and starting over."), lines
        assert sorted(os.listdir(out.dir)) == [ATTEMPT], label  # started over: only the new attempt record
        out.discard_outputs()
    out = ArtifactWriter(tmp_path / "out", "ETHUSDT", TAG)
    _stage_backup(out, good, epoch_json="")  # Keras' epoch record cut short
    lines = []
    assert (
        out.prepare(ATTEMPT_ID, echo=lines.append) is False
        and "training_metadata.json is not valid JSON" in lines[0]
    )
    out.discard_outputs()


def test_a_readable_backup_resumes_and_force_starts_over(tmp_path):
    good = _real_hdf5(tmp_path / "w.h5")
    out = ArtifactWriter(tmp_path / "out", "ETHUSDT", TAG)
    _stage_backup(out, good)
    lines: list[str] = []
    assert out.prepare(ATTEMPT_ID, echo=lines.append) is True and lines == []
    assert (out.dir / BACKUP / "latest.weights.h5").read_bytes() == good
    out.discard_outputs()
    assert out.prepare(ATTEMPT_ID, force=True, echo=lines.append) is False and lines == []
    assert not (out.dir / BACKUP).exists() and not (out.dir / "epochs.partial.json").exists()
    out.discard_outputs()


@needs_root
def test_a_commit_that_fails_on_a_full_disk_keeps_the_backup(tmp_path, mounted_tmpfs):
    good = _real_hdf5(tmp_path / "w.h5")
    with mounted_tmpfs(tmp_path / "small", "size=200k") as small:
        out = ArtifactWriter(small, "ETHUSDT", TAG)
        _stage_backup(out, good)
        assert out.prepare(ATTEMPT_ID, echo=print) is True
        for name in engine_files(TAG):
            out.write_text(name, "x")
        filler = small / "filler"
        fd = os.open(filler, os.O_CREAT | os.O_WRONLY)  # the disk fills up before the marker is written
        try:
            while os.write(fd, b"\0" * 512):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        with pytest.raises(StorageError, match="No space left on device"):
            out.commit({"pair": "ETHUSDT", "tag": TAG})
        out.discard_outputs()
        assert (out.dir / BACKUP / "latest.weights.h5").read_bytes() == good
        assert json.loads((out.dir / ATTEMPT).read_text()) == ATTEMPT_ID
        assert not (small / "ETHUSDT").exists()
        filler.unlink()
        assert out.prepare(ATTEMPT_ID, echo=print) is True  # the next run resumes
        for name in engine_files(TAG):
            out.write_text(name, "x")
        out.commit({"pair": "ETHUSDT", "tag": TAG})
        assert sorted(os.listdir(small / "ETHUSDT")) == sorted([*engine_files(TAG), SUCCESS])
        assert not (small / ".trainer-staging").exists()  # backup and attempt record gone after the commit


def test_a_failed_upload_keeps_the_backup(tmp_path, s3):
    good = _real_hdf5(tmp_path / "w.h5")
    with s3.fsspec_config():
        out = ArtifactWriter(f"s3://no-such-bucket-{os.getpid()}/runs", "ETHUSDT", TAG)
        _stage_backup(out, good)
        assert out.prepare(ATTEMPT_ID) is True
        for name in engine_files(TAG):
            out.write_text(name, "x")
        with pytest.raises(StorageError, match="Cannot upload the artifacts .*(NoSuchBucket|does not exist)"):
            out.commit({"pair": "ETHUSDT", "tag": TAG})
        out.discard_outputs()
    try:
        assert (out.dir / BACKUP / "latest.weights.h5").read_bytes() == good
        assert json.loads((out.dir / ATTEMPT).read_text()) == ATTEMPT_ID
    finally:
        import shutil

        shutil.rmtree(out.staging_root, ignore_errors=True)


def test_an_upload_publishes_no_resume_state(tmp_path, s3):
    good = _real_hdf5(tmp_path / "w.h5")
    url = f"s3://{s3.bucket}/publish-{os.getpid()}"
    with s3.fsspec_config():
        out = ArtifactWriter(url, "ETHUSDT", TAG)
        _stage_backup(out, good)
        assert out.prepare(ATTEMPT_ID) is True
        for name in engine_files(TAG):
            out.write_text(name, "x")
        assert out.commit({"pair": "ETHUSDT", "tag": TAG}) == f"{url}/ETHUSDT"
    keys = sorted(k.rsplit("/ETHUSDT/", 1)[1] for k in s3.fs.find(f"{s3.bucket}/publish-{os.getpid()}"))
    assert keys == sorted([*engine_files(TAG), SUCCESS])
    assert not out.dir.exists()


# -- the lock ------------------------------------------------------------------------------------


def test_a_lock_dated_in_the_future_by_another_host_is_stale(tmp_path):
    out = ArtifactWriter(tmp_path / "out", "ETHUSDT", TAG)
    for ahead, held in ((LOCK_STALE_SECONDS + 60, False), (86400 * 365, False), (60, True)):
        out.staging_root.mkdir(parents=True, exist_ok=True)
        out.lock_path.write_text(
            json.dumps({"host": "node-7", "pid": 4242, "since": "2099-01-01T00:00:00+00:00"})
        )
        t = time.time() + ahead
        os.utime(out.lock_path, (t, t))
        if held:
            with pytest.raises(StorageError, match="pid 4242 on node-7"):
                out.prepare(ATTEMPT_ID)
        else:
            out.prepare(ATTEMPT_ID)
            assert json.loads(out.lock_path.read_text())["pid"] == os.getpid()
            out.discard_outputs()
            assert not out.lock_path.exists()


# -- access to the output ------------------------------------------------------------------------


def test_local_outputs_that_cannot_be_written_are_refused_before_training(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(StorageError, match=f"The output {blocker} is not a folder"):
        check_output_access(blocker)
    with pytest.raises(
        StorageError, match=f"The output {blocker / 'out'} cannot be created: {blocker} is not a folder"
    ):
        check_output_access(blocker / "out")
    check_output_access(tmp_path / "new" / "out")  # will be created by the run; the check creates nothing
    assert not (tmp_path / "new").exists() and sorted(os.listdir(tmp_path)) == ["a-file"]
    assert blocker.read_text() == "x"


@needs_root
def test_a_read_only_output_is_refused_by_the_access_check(tmp_path, mounted_tmpfs):
    with mounted_tmpfs(tmp_path / "ro", "size=1m,ro") as ro:
        for root in (ro, ro / "out"):
            with pytest.raises(StorageError) as caught:
                check_output_access(root)
            assert "Cannot write to the output" in caught.value.message
            assert "read-only (Read-only file system)" in caught.value.message and caught.value.hint


@pytest.fixture(scope="module")
def s3(tmp_path_factory, moto_server, s3_clients):
    """`moto_server` on loopback with authentication on: an IAM user whose key may do anything, and
    a bucket. Keys that do not exist there are refused (403) as a real S3 would."""
    pytest.importorskip("s3fs")
    boto3 = pytest.importorskip("boto3")
    from types import SimpleNamespace

    log = tmp_path_factory.mktemp("moto") / "moto.log"
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}  # the three IAM calls below
    with moto_server(log, env) as endpoint:
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        iam.create_user(UserName="trainer")
        key = iam.create_access_key(UserName="trainer")["AccessKey"]
        iam.put_user_policy(
            UserName="trainer",
            PolicyName="all",
            PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
            ),
        )
        creds = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
        bucket = "pair-trainer-access"
        client, fs = s3_clients(endpoint, creds["AWS_ACCESS_KEY_ID"], creds["AWS_SECRET_ACCESS_KEY"])
        client.create_bucket(Bucket=bucket)

        @contextmanager
        def fsspec_config():
            """This process's fsspec opens s3:// on the server with the user's key."""
            import fsspec.config

            saved = dict(fsspec.config.conf.get("s3", {}))
            fsspec.config.conf["s3"] = {
                "endpoint_url": endpoint,
                "key": creds["AWS_ACCESS_KEY_ID"],
                "secret": creds["AWS_SECRET_ACCESS_KEY"],
                "skip_instance_cache": True,
            }
            try:
                yield
            finally:
                fsspec.config.conf["s3"] = saved

        yield SimpleNamespace(
            endpoint=endpoint, bucket=bucket, creds=creds, fs=fs, fsspec_config=fsspec_config
        )


CHECK = """
import sys
from trainer_core.errors import StorageError
from trainer_core.storage import check_output_access
try:
    check_output_access(sys.argv[1])
except StorageError as exc:
    print("ERROR", exc.message, "| HINT", exc.hint)
    sys.exit(1)
print("OK")
"""


def _check_in_process_env(url: str, s3, **creds) -> subprocess.CompletedProcess:
    """The access check in a fresh process whose only credentials are ``creds`` (none: none at all)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FSSPEC_"))}
    env.update(
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_DEFAULT_REGION="us-east-1",
        FSSPEC_S3_ENDPOINT_URL=s3.endpoint,
        **creds,
    )
    return subprocess.run(
        [sys.executable, "-c", CHECK, url], capture_output=True, text=True, env=env, timeout=60
    )


def test_object_store_access_problems_are_one_line_each(s3):
    url = f"s3://{s3.bucket}/runs/2026-11"
    ok = _check_in_process_env(url, s3, **s3.creds)
    assert ok.returncode == 0 and ok.stdout.strip() == "OK", ok.stdout + ok.stderr
    assert not s3.fs.find(f"{s3.bucket}/runs")  # the probe object was deleted again

    cases = {
        "no credentials": ({}, f"ERROR No credentials to reach the output {url}.", "AWS_ACCESS_KEY_ID"),
        "wrong credentials": (
            {"AWS_ACCESS_KEY_ID": "AKIAWRONGWRONG", "AWS_SECRET_ACCESS_KEY": "nope"},
            f"ERROR Access to the output {url} was refused while trying to list",
            "Check the credentials",
        ),
    }
    for label, (creds, line, hint) in cases.items():
        r = _check_in_process_env(url, s3, **creds)
        assert r.returncode == 1, (label, r.stdout, r.stderr)
        assert r.stdout.startswith(line) and hint in r.stdout and "Traceback" not in r.stderr, (
            label,
            r.stdout,
            r.stderr,
        )
    missing = f"s3://no-such-bucket-{os.getpid()}/runs"
    r = _check_in_process_env(missing, s3, **s3.creds)
    assert r.returncode == 1 and r.stdout.startswith(
        f"ERROR The output's bucket does not exist: {missing}."
    ), r.stdout + r.stderr


# -- end to end: a backup cut short by a full disk ------------------------------------------------


@pytest.mark.slow
def test_a_run_after_a_backup_cut_short_starts_over(trainer, inputs, tmp_path):
    """What a full disk during Keras' backup leaves (the attempt record, a 0-byte weights file, the
    epoch record) made every later run 'resume' and fail with 'file signature not found'."""
    from trainer_core.testing import tiny_args

    out = tmp_path / "out"
    first = trainer("run", "--pair", "ETHUSDT", "--data", inputs, "--output", out, *tiny_args())
    assert first.exit_code == 0, first.output
    marker = json.loads((out / "ETHUSDT" / SUCCESS).read_text())
    staged = out / ".trainer-staging" / "ETHUSDT"
    (staged / BACKUP).mkdir(parents=True)
    (staged / ATTEMPT).write_text(
        json.dumps({"config_hash": marker["config_hash"], "data_sha256": marker["data_sha256"]})
    )
    (staged / BACKUP / "latest.weights.h5").write_bytes(b"")
    (staged / BACKUP / "training_metadata.json").write_text('{"epoch": 1, "batch": 0}')
    (staged / "epochs.partial.json").write_text('{"0": {"loss": 1.0, "seconds": 1.0, "train_seconds": 1.0}}')

    again = trainer("run", "--pair", "ETHUSDT", "--data", inputs, "--output", out, *tiny_args())
    assert again.exit_code == 0, again.output
    assert (
        "Warning: ETHUSDT: the backup of the interrupted run cannot be read (backup/latest.weights.h5 is empty); "
        "discarding it and starting over."
    ) in again.output
    assert "Resuming" not in again.output and "file signature" not in again.output
    assert trainer("verify", out).exit_code == 0
    assert not (out / ".trainer-staging").exists()

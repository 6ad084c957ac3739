"""`trainer download` and the candle readers against a hostile archive server and a shared
download folder: decompression bombs, answers that never end or trickle, a full disk, links, two
runs at once, dates and settings out of range. Everything is served on loopback and generated
here; the bombs are a few MB on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
from test_download import PAIR, Archive, download, kline_zip, ms, simulated, start_stalled_download

REPO = Path(__file__).resolve().parents[1]
DAY = "2024-02-01"
LOCK = ".trainer-download.lock"


@pytest.fixture
def archive():
    server = Archive()
    yield server
    server.close()


# -- hostile payloads, built in memory ------------------------------------------------------------


def _repeated_deflate(chunk: bytes, times: int) -> tuple[bytes, int]:
    """A raw deflate stream of ``chunk`` repeated ``times`` times, made by repeating one fully
    flushed block (fast at any size), and the CRC-32 of what it unpacks to."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(times):
        crc = zlib.crc32(chunk, crc)
    return block * times + c.flush(), crc


def zeros_zip(member: str, mib: int) -> bytes:
    """A valid zip holding ``member``: ``mib`` MiB of zeros in about mib KB."""
    data, crc = _repeated_deflate(bytes(1 << 20), mib)
    size, name = mib << 20, member.encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(data), size, len(name), 0) + name
    central = (
        struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50,
            20,
            20,
            0,
            8,
            0,
            0,
            crc,
            len(data),
            size,
            len(name),
            0,
            0,
            0,
            0,
            0,
            0,
        )
        + name
    )
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local) + len(data), 0)
    return local + data + central + end


def json_gz_bomb(mib: int) -> bytes:
    """A valid freqtrade-looking ``.json.gz``: about ``mib`` MiB of ``[0,0,0,0,0,0]`` rows in about mib KB."""
    head, tail, row = b"[[0,0,0,0,0,0]", b"]", b",[0,0,0,0,0,0]"
    chunk = row * ((1 << 20) // len(row))
    c = zlib.compressobj(9, zlib.DEFLATED, -15)  # each fully flushed block stands alone: repeatable
    first = c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    last = c.compress(tail) + c.flush()
    crc = zlib.crc32(head)
    for _ in range(mib):
        crc = zlib.crc32(chunk, crc)
    crc = zlib.crc32(tail, crc)
    size = len(head) + len(chunk) * mib + len(tail)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    return header + first + block * mib + last + struct.pack("<II", crc, size & 0xFFFFFFFF)


def archive_path(day: str = DAY, pair: str = PAIR) -> str:
    return f"/data/spot/daily/klines/{pair}/1m/{pair}-1m-{day}.zip"


def serve(archive, body: bytes, day: str = DAY) -> str:
    """``body`` as the day's archive, with a matching .CHECKSUM (the server is hostile, not broken)."""
    path = archive_path(day)
    archive.files[path] = body
    archive.files[path + ".CHECKSUM"] = f"{hashlib.sha256(body).hexdigest()}  {Path(path).name}\n".encode()
    return path


def endless(limit: int, content_length: int | None = None, chunk: bytes = b"0" * 65536):
    """An answer that goes on (up to ``limit`` bytes, so a client without a cap still ends)."""

    def answer(handler):
        handler.send_response(200)
        if content_length is not None:
            handler.send_header("Content-Length", str(content_length))
        handler.end_headers()
        sent = 0
        while sent < limit:
            handler.wfile.write(chunk)
            sent += len(chunk)

    return answer


def trickle(body: bytes, every: float, longest: float):
    """``body`` one byte every ``every`` seconds (a slowloris), for at most ``longest`` seconds."""

    def answer(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        began = time.monotonic()
        for i in range(len(body)):
            if time.monotonic() - began > longest:
                return
            handler.wfile.write(body[i : i + 1])
            handler.wfile.flush()
            time.sleep(every)

    return answer


def trickle_headers(every: float, longest: float):
    """A status line, then a header a byte every ``every`` seconds, for at most ``longest`` seconds."""

    def answer(handler):
        handler.wfile.write(b"HTTP/1.0 200 OK\r\nX-Padding: ")
        began = time.monotonic()
        while time.monotonic() - began < longest:
            handler.wfile.write(b"x")
            handler.wfile.flush()
            time.sleep(every)

    return answer


def fetch(trainer, archive, out, start=DAY, end=DAY, env=None):
    return download(trainer, archive, out, start=start, end=end, env=env)


def day_frame(day: str = DAY) -> pl.DataFrame:
    frame = simulated(PAIR, "2024-01-25", 10 * 1440)
    return frame.filter((pl.col("timestamp") >= ms(day)) & (pl.col("timestamp") < ms(day) + 86_400_000))


def command(out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "trainer_core.cli", "download", "--pair", PAIR, "--output", str(out), *args]


# -- 1. decompression bombs ----------------------------------------------------------------------


def test_a_zip_bomb_is_refused_before_it_is_unpacked(trainer, archive, tmp_path):
    serve(archive, zeros_zip(f"{PAIR}-1m-{DAY}.csv", 64))  # 64 MiB of zeros in 65 KB
    result = fetch(trainer, archive, tmp_path / "d")
    assert result.exit_code == 1, result.text
    assert "1 pair folder(s) do not read as candles" in result.text
    assert "unpacks to 67.1 MB from 0.07 MB, over 100 times its compressed size" in result.text
    assert "decompression bomb" in result.text and "TRAINER_MAX_COMPRESSION_RATIO" in result.text

    # a candle file of honest ratio beyond the size allowed
    small = tmp_path / "s"
    serve(archive, kline_zip(day_frame(), f"{PAIR}-1m-{DAY}.csv"))
    result = fetch(trainer, archive, small, env={"TRAINER_MAX_UNCOMPRESSED_MB": "0.05"})
    assert result.exit_code == 1, result.text
    assert re.search(r"unpacks to 0\.\d MB, over the 0\.1 MB allowed for one candle file", result.text), (
        result.text
    )


@pytest.mark.parametrize(
    "members",
    [[("BTCUSDT-1m-2024-02-01.exe", b"MZ")], [("a.csv", b"1,2"), ("b.csv", b"3,4")]],
    ids=["not-a-csv", "two-members"],
)
def test_a_zip_of_anything_but_one_csv_is_refused(trainer, archive, tmp_path, members):
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
    serve(archive, buf.getvalue())
    result = fetch(trainer, archive, tmp_path / "d")
    assert result.exit_code == 1, result.text
    assert "do not read as candles" in result.text
    assert ("this member is not a .csv" if len(members) == 1 else "this one holds 2 files") in result.text


def test_a_freqtrade_json_gz_bomb_is_refused_in_one_line(trainer, tmp_path):
    folder = tmp_path / "binance"
    folder.mkdir()
    (folder / "BTC_USDT-1m.json.gz").write_bytes(json_gz_bomb(16))
    result = trainer("prepare", "--pair", PAIR, "--data", folder, "--output", tmp_path / "o")
    assert result.exit_code == 2, result.text
    assert "BTC_USDT-1m.json.gz: unpacks to more than" in result.text and "decompression bomb" in result.text
    assert "not a freqtrade JSON candle file" not in result.text and "Traceback" not in result.text


def test_the_unpack_limits_must_be_numbers(trainer, tmp_path):
    folder = tmp_path / "binance"
    folder.mkdir()
    (folder / "BTC_USDT-1m.json.gz").write_bytes(json_gz_bomb(1))
    result = trainer(
        "prepare",
        "--pair",
        PAIR,
        "--data",
        folder,
        "--output",
        tmp_path / "o",
        env={"TRAINER_MAX_COMPRESSION_RATIO": "lots"},
    )
    assert result.exit_code == 2 and "TRAINER_MAX_COMPRESSION_RATIO='lots': expected a number" in result.text


# -- 2, 3. answers without end, a full disk -------------------------------------------------------


def test_a_checksum_that_never_ends_is_cut_at_a_few_kb(trainer, archive, tmp_path):
    path = serve(archive, kline_zip(day_frame(), f"{PAIR}-1m-{DAY}.csv"))
    archive.custom[path + ".CHECKSUM"] = endless(50_000_000)
    started = time.monotonic()
    result = fetch(trainer, archive, tmp_path / "d")
    assert result.exit_code == 1, result.text
    assert (
        f"{PAIR}-1m-{DAY}.zip.CHECKSUM: the server sent more than 4,096 bytes; a checksum file is one line"
        in result.text
    )
    assert time.monotonic() - started < 10
    archive.custom[path + ".CHECKSUM"] = endless(10_000, content_length=3_000_000_000)
    result = fetch(trainer, archive, tmp_path / "d")
    assert "the server announces 3,000,000,000 bytes; a checksum file is one line" in result.text, result.text


def test_an_archive_body_is_capped_and_nothing_is_kept(trainer, archive, tmp_path):
    path = serve(archive, kline_zip(day_frame(), f"{PAIR}-1m-{DAY}.csv"))
    archive.custom[path] = endless(60_000_000)  # no Content-Length, 60 MB before it stops
    out = tmp_path / "d"
    result = fetch(trainer, archive, out, env={"TRAINER_DOWNLOAD_MAX_MB": "2"})
    assert result.exit_code == 1, result.text
    assert f"{PAIR}-1m-{DAY}.zip: the server sent more than 2.0 MB, the most allowed" in result.text
    assert sorted(p.name for p in (out / PAIR).iterdir()) == []  # no .part left behind
    archive.custom[path] = endless(100_000, content_length=5_000_000_000)
    result = fetch(trainer, archive, out)
    assert "the server announces 5,000.0 MB, over the 1,024.0 MB allowed for one archive" in result.text, (
        result.text
    )
    assert sorted(p.name for p in (out / PAIR).iterdir()) == []


def test_a_full_disk_is_freed_and_the_message_says_what_was_needed(trainer, archive, tmp_path, mounted_tmpfs):
    body = os.urandom(3_000_000)
    path = serve(archive, body)
    with mounted_tmpfs(tmp_path / "small", "size=1m") as small:
        # the size is announced: refused before writing
        result = fetch(trainer, archive, small)
        assert result.exit_code == 1, result.text
        assert re.search(r"needs 3\.0 MB more on .*small/BTCUSDT, which has 1\.0 MB free", result.text), (
            result.text
        )
        assert [p for p in small.rglob("*") if p.is_file()] == []
        # not announced: the disk fills, the .part goes, the message says how far it got
        archive.custom[path] = endless(len(body), chunk=body[:100_000])
        result = fetch(trainer, archive, small)
        assert result.exit_code == 1, result.text
        assert re.search(
            r"No space left on device on .*small/BTCUSDT after [\d.]+ (MB|bytes); the archive needs more than",
            result.text,
        ), result.text
        assert "its .part was deleted" in result.text
        assert [p for p in small.rglob("*") if p.is_file()] == []
        assert shutil.disk_usage(small).used < 100_000  # the disk is not left full


# -- 4. links in the download folder --------------------------------------------------------------


def test_a_symlinked_part_or_pair_folder_is_never_followed(trainer, archive, tmp_path):
    serve(archive, kline_zip(day_frame(), f"{PAIR}-1m-{DAY}.csv"))
    victim = tmp_path / "precious.txt"
    victim.write_text("the user's data")
    out = tmp_path / "d"
    (out / PAIR).mkdir(parents=True)
    part = out / PAIR / f"{PAIR}-1m-{DAY}.zip.part"
    part.symlink_to(victim)
    result = fetch(trainer, archive, out)
    assert result.exit_code == 1, result.text
    assert f"{part} is a symbolic link; the download folder is never written through a link" in result.text
    assert victim.read_text() == "the user's data"
    assert part.is_symlink() and not (out / PAIR / f"{PAIR}-1m-{DAY}.zip").exists()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    linked = tmp_path / "l"
    linked.mkdir()
    (linked / PAIR).symlink_to(elsewhere)
    result = fetch(trainer, archive, linked)
    assert result.exit_code == 1, result.text
    assert f"{PAIR}: {linked / PAIR} is a symbolic link" in result.text
    assert list(elsewhere.iterdir()) == []


# -- 5. slowloris ---------------------------------------------------------------------------------


def test_a_trickling_server_is_cut_by_the_minimum_rate(archive, tmp_path):
    path = serve(archive, kline_zip(day_frame(), f"{PAIR}-1m-{DAY}.csv"))
    second = serve(archive, kline_zip(day_frame("2024-02-02"), f"{PAIR}-1m-2024-02-02.csv"), day="2024-02-02")
    archive.custom[path] = trickle(archive.files[path], 0.05, 120)
    archive.custom[second + ".CHECKSUM"] = trickle(archive.files[second + ".CHECKSUM"], 0.05, 120)
    third = serve(archive, kline_zip(day_frame("2024-02-03"), f"{PAIR}-1m-2024-02-03.csv"), day="2024-02-03")
    archive.custom[third] = trickle_headers(0.05, 120)
    env = {**os.environ, "TRAINER_DOWNLOAD_URL": archive.url, "TRAINER_DOWNLOAD_TIMEOUT": "0.5"}
    started = time.monotonic()
    proc = subprocess.run(
        command(tmp_path / "d", "--start", DAY, "--end", "2024-02-03", "--jobs", "3"),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - started
    said = proc.stdout + proc.stderr
    assert proc.returncode == 1, said
    assert f"{PAIR}-1m-{DAY}.zip: network error after 5 tries (TimeoutError:" in said
    assert f"{PAIR}-1m-2024-02-02.zip.CHECKSUM: network error after 5 tries (TimeoutError:" in said
    assert "under the minimum of 1,000 bytes/s ($TRAINER_DOWNLOAD_MIN_RATE)" in said
    assert (
        f"{PAIR}-1m-2024-02-03.zip: network error after 5 tries (TimeoutError: no status line and headers "
        "within 0.5 s ($TRAINER_DOWNLOAD_TIMEOUT))" in said
    )
    assert took < 30, took  # 5 tries of 0.5 s and the back-off, not 1 byte/0.05 s for the whole file


# -- 6. two downloads into one folder ---------------------------------------------------------------


def test_a_second_download_into_the_same_folder_stops_with_the_holder(trainer, archive, tmp_path):
    out = tmp_path / "d"
    first, jan = start_stalled_download(archive, out)
    part = out / PAIR / f"{PAIR}-1m-2024-01.zip.part"
    deadline = time.time() + 30
    while not part.exists():
        assert time.time() < deadline and first.poll() is None, "the first download did not start"
        time.sleep(0.05)
    try:
        # the first run writes up to the stall: its size once it stops growing is what it holds
        size = -1
        while part.stat().st_size != size:
            assert time.time() < deadline and first.poll() is None, "the first download did not stall"
            size = part.stat().st_size
            time.sleep(1.0)
        second = fetch(trainer, archive, out, start="2024-01-01", end="2024-01-31")
        assert second.exit_code == 1, second.text
        assert f"{PAIR} is being downloaded into {out / PAIR} by another run (pid {first.pid}" in second.text
        assert part.stat().st_size == size  # the second run touched nothing
    finally:
        archive.stall.clear()
        archive.released.set()  # the stalled answer hangs up; the first run resumes it
        said = first.communicate(timeout=60)[0].decode()
    assert first.returncode == 0, said
    assert (out / PAIR / f"{PAIR}-1m-2024-01.zip").read_bytes() == archive.files[jan]
    assert not (out / PAIR / LOCK).exists()


# -- 7. dates and settings out of range ----------------------------------------------------------


def test_dates_out_of_range_and_a_bad_timeout_are_one_line(trainer, archive, tmp_path):
    for start, said in (
        ("0001-01-01", "--start 0001-01-01 is before Binance's kline archive begins (2017)"),
        ("9999-01-01", "--start 9999-01-01 is after yesterday"),
    ):
        result = trainer("download", "--pair", PAIR, "--start", start, "--output", tmp_path / "d")
        assert result.exit_code == 2 and said in result.text and "Hint:" in result.text, result.text
        assert "Traceback" not in result.text
    result = trainer(
        "download",
        "--pair",
        PAIR,
        "--start",
        "2024-01-01",
        "--output",
        tmp_path / "d",
        env={"TRAINER_DOWNLOAD_TIMEOUT": "abc"},
    )
    assert (
        result.exit_code == 2
        and "TRAINER_DOWNLOAD_TIMEOUT='abc': expected a number greater than 0" in result.text
    )
    assert not (tmp_path / "d").exists()

    # an end in the future: up to yesterday, said once; the two days' archives asked for, nothing later
    yesterday = datetime.now(timezone.utc).date() - timedelta(days=1)
    start = yesterday - timedelta(days=1)
    result = fetch(trainer, archive, tmp_path / "d", start=start.isoformat(), end="9999-12-31")
    assert (
        f"Note: --end 9999-12-31 is after yesterday, the last day the archive can hold: downloading up to {yesterday}."
        in result.text
    )
    asked = archive.fetched(".CHECKSUM")
    assert sorted(Path(p).name[len(PAIR) + 4 : len(PAIR) + 14] for p in asked) == [str(start), str(yesterday)]
    assert f"nothing published for {start} to {yesterday}" in result.text


# -- the memory-capped run ----------------------------------------------------------------------


MEMORY_CAP = 1_500_000_000  # address space, what `prlimit --as` sets

CAPPED = """
import json, resource, subprocess, sys
cap = int(sys.argv[1])
def limit():
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
p = subprocess.run(sys.argv[2:], preexec_fn=limit, capture_output=True, text=True, timeout=120)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps({"rc": p.returncode, "out": p.stdout, "err": p.stderr, "peak": peak}))
"""


def run_capped(cmd: list[str], env: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CAPPED, str(MEMORY_CAP), *cmd],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_bombs_and_endless_answers_stay_under_1_gb_and_end_in_one_line(archive, tmp_path):
    """Full size: a 2 GiB CSV in a 2 MB zip, an endless .CHECKSUM, an endless archive body, a
    1 GiB freqtrade .json.gz in 1 MB; each run under a 1.5 GB address-space cap."""
    serve(archive, zeros_zip(f"{PAIR}-1m-{DAY}.csv", 2048))
    second = serve(archive, kline_zip(day_frame("2024-02-02"), "x.csv"), day="2024-02-02")
    archive.custom[second + ".CHECKSUM"] = endless(4_000_000_000)
    third = serve(archive, kline_zip(day_frame("2024-02-03"), "y.csv"), day="2024-02-03")
    archive.custom[third] = endless(4_000_000_000)
    env = {**os.environ, "TRAINER_DOWNLOAD_URL": archive.url, "TRAINER_DOWNLOAD_MAX_MB": "20"}
    got = run_capped(command(tmp_path / "d", "--start", DAY, "--end", "2024-02-03", "--jobs", "3"), env)
    errors = [line for line in got["err"].splitlines() if line.startswith("Error:")]
    assert got["rc"] == 1, got
    assert len(errors) == 1 and "Traceback" not in got["err"] + got["out"], got["err"]
    assert "decompression bomb" in errors[0] and "a checksum file is one line" in errors[0]
    assert "the server sent more than 20.0 MB" in errors[0]
    assert got["peak"] < 1_000_000_000, got["peak"]
    print(f"download: peak RSS {got['peak'] / 1e6:.0f} MB")

    folder = tmp_path / "binance"
    folder.mkdir()
    (folder / "BTC_USDT-1m.json.gz").write_bytes(json_gz_bomb(1024))
    cmd = [
        sys.executable,
        "-m",
        "trainer_core.cli",
        "prepare",
        "--pair",
        PAIR,
        "--data",
        str(folder),
        "--output",
        str(tmp_path / "o"),
    ]
    got = run_capped(cmd, {**os.environ})
    errors = [line for line in got["err"].splitlines() if line.startswith("Error:")]
    assert got["rc"] == 2 and len(errors) == 1 and "decompression bomb" in errors[0], got
    assert got["peak"] < 1_000_000_000, got["peak"]
    print(f"prepare: peak RSS {got['peak'] / 1e6:.0f} MB")


# -- the batch's data fingerprint ----------------------------------------------------------------


def test_a_freqtrade_file_growing_past_data_end_keeps_its_fingerprint(tmp_path):
    """The batch skips a pair whose loader fingerprint equals its marker's data_sha256: for candles
    that is the rows inside data.start..data.end, not the file's bytes."""
    from trainer_core.manifest import default_manifest
    from trainer_plugins.loaders.ohlcv import OhlcvLoader

    frame = simulated(PAIR, "2024-01-01", 4 * 1440)
    folder = tmp_path / "binance"
    folder.mkdir()
    feather = folder / "BTC_USDT-1m.feather"

    def write(rows: pl.DataFrame) -> None:
        rows.with_columns(
            pl.col("timestamp").cast(pl.Datetime("ms")).dt.replace_time_zone("UTC").alias("date")
        ).select("date", "open", "high", "low", "close", "volume").write_ipc(feather)

    def spec(end: str | None = "2024-01-02"):
        sets = [
            "data.loader=ohlcv",
            f"data.path={folder}",
            "data.start=2024-01-01",
            "labels.future_window=30",
            "features.ma_short=60",
            "features.ma_long=240",
        ]
        return default_manifest().resolve(PAIR, sets=sets + ([f"data.end={end}"] if end else []))

    loader = OhlcvLoader()
    write(frame.filter(pl.col("timestamp") < ms("2024-01-03")))
    before, before_open = loader.fingerprint(spec()), loader.fingerprint(spec(None))
    assert loader.load(spec()).sha256 == before  # what the marker records is what the plan compares
    bytes_before = feather.read_bytes()
    write(frame)  # refreshed: two more days
    assert feather.read_bytes() != bytes_before
    assert loader.fingerprint(spec()) == before  # data.end fixed: the same training rows
    assert loader.fingerprint(spec(None)) != before_open  # no end: the new days are trained on
    feather.unlink()  # the same candles as freqtrade's jsongz: the same rows, the same fingerprint
    import gzip

    rows = frame.select(pl.col("timestamp"), "open", "high", "low", "close", "volume").rows()
    (folder / "BTC_USDT-1m.json.gz").write_bytes(gzip.compress(json.dumps(rows).encode()))
    assert loader.fingerprint(spec()) == before
    changed = frame.with_columns(
        pl.when(pl.col("timestamp") == ms("2024-01-02") + 60_000)
        .then(pl.col("close") * 1.001)
        .otherwise(pl.col("close"))
        .alias("close")
    ).with_columns(
        pl.max_horizontal("high", "close").alias("high"), pl.min_horizontal("low", "close").alias("low")
    )
    (folder / "BTC_USDT-1m.json.gz").unlink()
    write(changed)
    assert loader.fingerprint(spec()) != before  # a candle inside the range changed: retrain


@pytest.mark.slow
def test_a_batch_skips_a_pair_whose_freqtrade_file_grew_past_data_end(tmp_path):
    """Trained once from a freqtrade file; the file refreshed with two more days: `--dry-run` says
    the pair would be skipped. A changed candle inside the range would retrain it."""
    from trainer_core.testing import TINY_SETTINGS

    frame = simulated(PAIR, "2024-01-01", 4 * 1440)
    folder = tmp_path / "binance"
    folder.mkdir()

    def write(rows: pl.DataFrame) -> None:
        rows.with_columns(
            pl.col("timestamp").cast(pl.Datetime("ms")).dt.replace_time_zone("UTC").alias("date")
        ).select("date", "open", "high", "low", "close", "volume").write_ipc(folder / "BTC_USDT-1m.feather")

    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"version: 1\noutput: {tmp_path / 'artifacts'}\n"
        f"defaults:\n  data: {{loader: ohlcv, path: {folder}, start: 2024-01-01, end: 2024-01-02}}\n"
        f"pairs: [{PAIR}]\n"
    )
    sets = [
        *TINY_SETTINGS,
        "train.epochs=1",
        "features.ma_short=60",
        "features.ma_long=240",
        "resources.cpus=1",
    ]
    args = [a for s in sets for a in ("--set", s)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update({"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"})

    def batch(*extra: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "trainer_core.cli", "batch", str(manifest), *args, *extra]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=400)

    write(frame.filter(pl.col("timestamp") < ms("2024-01-03")))
    trained = batch()
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    write(frame)  # refreshed: two more days past data.end
    plan = batch("--dry-run")
    assert re.search(rf"{PAIR}\s+would skip: completed with the same settings and data", plan.stdout), (
        plan.stdout
    )
    changed = frame.with_columns(
        pl.when(pl.col("timestamp") == ms("2024-01-02") + 60_000)
        .then(pl.col("volume") + 1)
        .otherwise(pl.col("volume"))
    )
    write(changed)
    plan = batch("--dry-run")
    assert re.search(rf"{PAIR}\s+would train: the data changed since the last run", plan.stdout), plan.stdout

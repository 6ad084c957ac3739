"""`trainer download` against Binance's archive layout served on loopback: monthly and daily zips
built here from simulated candles, with .CHECKSUM files, one archive tampered with, one missing, one
served slowly, one cut off mid-transfer, one stalled while a `trainer download` is killed. Nothing
reaches the internet. Then `trainer prepare`, the ohlcv loader and `trainer batch` read the result.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from trainer_core.manifest import default_manifest, load_manifest

REPO = Path(__file__).resolve().parents[1]
PAIR = "BTCUSDT"
DAYS = ("2024-02-01", "2024-02-02", "2024-02-03")


# -- the archive ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def simulated(pair: str, start: str, minutes: int) -> pl.DataFrame:
    from trainer_plugins.loaders.synthetic import simulate

    t, o, h, low, c, v = simulate(pair, minutes, start=start)
    return pl.DataFrame({"timestamp": t, "open": o, "high": h, "low": low, "close": c, "volume": v})


def kline_zip(frame: pl.DataFrame, inner: str) -> bytes:
    """A zip holding a header-less 12-column kline CSV, as the archive publishes them."""
    t = frame["timestamp"]
    csv = pl.DataFrame(
        {
            "open_time": t,
            "open": frame["open"],
            "high": frame["high"],
            "low": frame["low"],
            "close": frame["close"],
            "volume": frame["volume"],
            "close_time": t + 59_999,
            "quote_volume": frame["volume"] * frame["close"],
            "count": pl.Series([7] * len(frame)),
            "taker_buy_volume": frame["volume"] / 2,
            "taker_buy_quote_volume": frame["volume"] * frame["close"] / 2,
            "ignore": pl.Series([0] * len(frame)),
        }
    ).write_csv(include_header=False)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(inner, csv)
    return buf.getvalue()


def ms(day: str) -> int:
    return int(np.datetime64(day, "ms").astype(np.int64))


class Archive:
    """A loopback HTTP server with Binance's layout; counts requests; faults on demand."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.slow: set[str] = set()
        self.cut: dict[str, int] = {}  # path -> how many more times to send half and hang up
        self.stall: set[str] = set()  # send half, then wait (until released)
        self.unavailable: dict[str, int] = {}  # path -> how many more times to answer 503
        self.custom: dict = {}  # path -> a function answering the request itself (a hostile server)
        self.released = threading.Event()
        self.lock = threading.Lock()
        archive = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                with archive.lock:
                    archive.requests.append((self.path, rng))
                    cut = archive.cut.get(self.path, 0)
                    if cut:
                        archive.cut[self.path] = cut - 1
                    busy = archive.unavailable.get(self.path, 0)
                    if busy:
                        archive.unavailable[self.path] = busy - 1
                if busy:
                    self.send_error(503)
                    return
                if self.path in archive.custom:
                    try:
                        archive.custom[self.path](self)
                    except OSError:  # the client hung up on a hostile answer
                        pass
                    return
                body = archive.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                if start >= len(body) and rng:
                    self.send_error(416)
                    return
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                payload = body[start:]
                if cut or self.path in archive.stall:
                    self.wfile.write(payload[: len(payload) // 2])
                    self.wfile.flush()
                    if self.path in archive.stall:
                        archive.released.wait(30)
                    return  # hang up: the client sees fewer bytes than announced
                if self.path in archive.slow:
                    for i in range(0, len(payload), 4096):
                        self.wfile.write(payload[i : i + 4096])
                        time.sleep(0.01)
                    return
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(
        self,
        pair: str,
        timeframe: str,
        period: str,
        frame: pl.DataFrame,
        market: str = "spot",
        checksum: str | None = None,
    ) -> str:
        kind = "monthly" if len(period) == 7 else "daily"
        name = f"{pair}-{timeframe}-{period}.zip"
        path = f"/data/{'spot' if market == 'spot' else 'futures/um'}/{kind}/klines/{pair}/{timeframe}/{name}"
        body = kline_zip(frame, name.replace(".zip", ".csv"))
        self.files[path] = body
        self.files[path + ".CHECKSUM"] = f"{checksum or hashlib.sha256(body).hexdigest()}  {name}\n".encode()
        return path

    def fetched(self, suffix: str = ".zip") -> list[str]:
        return [p for p, _ in self.requests if p.endswith(suffix)]

    def close(self):
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def archive():
    server = Archive()
    yield server
    server.close()


def publish(archive: Archive, pair: str = PAIR, days=DAYS) -> pl.DataFrame:
    """January 2024 as a monthly archive and the first days of February as daily ones; the candles."""
    frame = simulated(pair, "2024-01-01", (ms(max(days)) - ms("2024-01-01")) // 60_000 + 1440)
    jan = frame.filter(pl.col("timestamp") < ms("2024-02-01"))
    archive.add(pair, "1m", "2024-01", jan)
    for day in days:
        part = frame.filter((pl.col("timestamp") >= ms(day)) & (pl.col("timestamp") < ms(day) + 86_400_000))
        archive.add(pair, "1m", day, part)
    published = [pl.col("timestamp") < ms("2024-02-01")] + [
        pl.col("timestamp") // 86_400_000 == ms(d) // 86_400_000 for d in days
    ]
    return frame.filter(pl.any_horizontal(published))


def download_args(out, *more, start="2024-01-01", end=DAYS[-1], pairs=(PAIR,)) -> list[str]:
    """`trainer download`'s arguments: ``pairs`` from ``start`` to ``end`` into ``out``, then ``more``."""
    pair_args = [a for p in pairs for a in ("--pair", p)]
    return ["download", *pair_args, "--start", start, "--end", end, "--output", str(out), *more]


def start_stalled_download(archive, out: Path) -> tuple[subprocess.Popen, str]:
    """`trainer download` of January 2024 into ``out`` in a subprocess (output piped), the archive
    published and its January file stalled half-way until released; the process and that path."""
    publish(archive)
    jan = next(p for p in archive.files if p.endswith("2024-01.zip"))
    archive.stall.add(jan)
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainer_core.cli", *download_args(out, end="2024-01-31")],
        env={**os.environ, "TRAINER_DOWNLOAD_URL": archive.url},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    return proc, jan


def download(trainer, archive, out, *args, start="2024-01-01", end=DAYS[-1], pairs=(PAIR,), env=None):
    """`trainer download` in this process from the loopback archive (``--base-url``)."""
    return trainer(
        *download_args(out, "--base-url", archive.url, *args, start=start, end=end, pairs=pairs), env=env
    )


def table(text: str) -> dict[str, list[str]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:3] == ["PAIR", "MONTHS", "DAYS"])
    rows = {}
    for line in lines[start + 1 :]:
        cells = line.split()
        if not cells or not re.fullmatch(r"[A-Z0-9]+", cells[0]) or len(cells) != 8:
            break
        rows[cells[0]] = cells[1:]
    return rows


PREPARE_SETS = (
    "--set",
    "labels.future_window=30",
    "--set",
    "features.ma_short=60",
    "--set",
    "features.ma_long=1440",
)


# -- the tests -----------------------------------------------------------------------------------


def test_download_then_prepare_equals_preparing_the_candles(trainer, archive, tmp_path):
    source = publish(archive)
    day2 = next(p for p in archive.files if p.endswith(f"{DAYS[1]}.zip"))
    day3 = next(p for p in archive.files if p.endswith(f"{DAYS[2]}.zip"))
    archive.slow.add(day2)
    archive.cut[day3] = 1
    out = tmp_path / "downloads"
    result = download(trainer, archive, out, "--jobs", "3")
    assert result.exit_code == 0, result.text
    folder = out / PAIR
    names = sorted(p.name for p in folder.iterdir())
    zips = [f"{PAIR}-1m-2024-01.zip", *(f"{PAIR}-1m-{d}.zip" for d in DAYS)]
    assert names == sorted([*zips, *(z + ".CHECKSUM" for z in zips)])  # no .part, no daily January
    assert table(result.text)[PAIR] == [
        "1",
        "3",
        f"{len(source):,}",
        "2024-01-01T00:00:00Z",
        "2024-02-03T23:59:00Z",
        "0",
        "0",
    ]
    # the cut-off archive was resumed from where it stopped, not fetched again from the start
    ranges = [r for p, r in archive.requests if p == day3]
    assert ranges[0] is None and ranges[1] and int(ranges[1].split("=")[1].rstrip("-")) > 0
    assert re.search(r"Fetched 4 archive\(s\), [\d.]+ MB in [\d.]+ s", result.text), result.text

    # prepare from the download and from the candles themselves: the same features and labels
    source.write_parquet(tmp_path / f"{PAIR}-1m.parquet")
    a = trainer("prepare", "--pair", PAIR, "--data", folder, "--output", tmp_path / "a", *PREPARE_SETS)
    b = trainer(
        "prepare",
        "--pair",
        PAIR,
        "--data",
        tmp_path / f"{PAIR}-1m.parquet",
        "--output",
        tmp_path / "b",
        *PREPARE_SETS,
    )
    assert a.exit_code == 0 and b.exit_code == 0, a.text + b.text
    (fa,), (fb,) = (tmp_path / "a").glob("*.feather"), (tmp_path / "b").glob("*.feather")
    assert fa.name == fb.name
    prepared = pl.read_ipc(fa)
    # the first ma_long - 1 candles are history only: their features read less than the full means
    assert prepared.height == len(source) - (1440 - 1) and prepared.equals(pl.read_ipc(fb))

    # the ohlcv loader finds the pair's folder by name in data.path
    from trainer_plugins.loaders.ohlcv import OhlcvLoader

    spec = default_manifest().resolve(
        PAIR,
        sets=[
            "data.loader=ohlcv",
            f"data.path={out}",
            "labels.future_window=30",
            "features.ma_short=60",
            "features.ma_long=1440",
        ],
    )
    from trainer_core.pipeline import load_pair_data
    from trainer_core.plugins import load_plugins

    data, _ = load_pair_data(spec, load_plugins(entry_points=False))
    assert np.array_equal(data.features, prepared.select(data.feature_names).to_numpy())
    assert OhlcvLoader().fingerprint(spec) == data.sha256

    # a rerun fetches nothing: not even a .CHECKSUM
    before = len(archive.requests)
    again = download(trainer, archive, out)
    assert again.exit_code == 0, again.text
    assert len(archive.requests) == before
    assert "Fetched 0 archive(s)" in again.text and "4 already there and verified" in again.text


def test_extending_the_end_fetches_only_the_new_days(trainer, archive, tmp_path):
    publish(archive)
    out = tmp_path / "downloads"
    assert download(trainer, archive, out, end="2024-02-02").exit_code == 0
    assert len(archive.fetched()) == 3
    archive.requests.clear()
    result = download(trainer, archive, out)
    assert result.exit_code == 0, result.text
    assert archive.fetched() == [p for p in archive.files if p.endswith(f"{DAYS[2]}.zip")]
    assert table(result.text)[PAIR][:2] == ["1", "3"]


def test_a_month_extended_day_by_day_stays_daily_and_a_whole_month_is_one_archive(trainer, archive, tmp_path):
    frame = simulated(PAIR, "2024-03-01", 31 * 1440)
    for d in range(1, 32):
        day = f"2024-03-{d:02d}"
        archive.add(
            PAIR,
            "1m",
            day,
            frame.filter((pl.col("timestamp") >= ms(day)) & (pl.col("timestamp") < ms(day) + 86_400_000)),
        )
    archive.add(PAIR, "1m", "2024-03", frame)
    out = tmp_path / "d"
    args = ("--pair", PAIR, "--output", out, "--base-url", archive.url)
    assert trainer("download", *args, "--start", "2024-03-01", "--end", "2024-03-02").exit_code == 0
    result = trainer("download", *args, "--start", "2024-03-01", "--end", "2024-03-31")
    assert result.exit_code == 0, result.text
    assert table(result.text)[PAIR][:3] == ["0", "31", f"{31 * 1440:,}"]  # no candle twice
    assert not any(p.endswith("2024-03.zip") for p in archive.fetched())
    whole = tmp_path / "w"
    result = download(trainer, archive, whole, start="2024-03-01", end="2024-03-31")
    assert sorted(p.name for p in (whole / PAIR).glob("*.zip")) == [f"{PAIR}-1m-2024-03.zip"]


def test_a_tampered_archive_is_an_error_naming_it_and_is_not_kept(trainer, archive, tmp_path):
    publish(archive)
    bad = next(p for p in archive.files if p.endswith(f"{DAYS[1]}.zip"))
    archive.files[bad + ".CHECKSUM"] = f"{'0' * 64}  {Path(bad).name}\n".encode()
    out = tmp_path / "downloads"
    result = download(trainer, archive, out)
    assert result.exit_code == 1, result.text
    assert f"{PAIR}-1m-{DAYS[1]}.zip: the download does not match its .CHECKSUM, twice" in result.text
    assert "Hint: Run the same command again" in result.text
    assert archive.fetched().count(bad) == 2  # retried once
    left = sorted(p.name for p in (out / PAIR).iterdir())
    assert not any(DAYS[1] in name for name in left), left
    assert f"{PAIR}-1m-{DAYS[2]}.zip" in left  # the others are kept

    # a kept archive changed on disk is no longer trusted: fetched again and verified
    archive.files[bad + ".CHECKSUM"] = f"{hashlib.sha256(archive.files[bad]).hexdigest()}  x\n".encode()
    jan = out / PAIR / f"{PAIR}-1m-2024-01.zip"
    jan.write_bytes(jan.read_bytes()[:-10] + b"0123456789")
    archive.requests.clear()
    result = download(trainer, archive, out)
    assert result.exit_code == 0, result.text
    assert sorted(Path(p).name for p in archive.fetched()) == sorted([jan.name, Path(bad).name])
    path = next(p for p in archive.files if p.endswith("2024-01.zip"))
    assert jan.read_bytes() == archive.files[path]


def test_missing_archives_are_reported_per_pair(trainer, archive, tmp_path):
    publish(archive, "BTCUSDT", days=("2024-02-01", "2024-02-03"))  # 2024-02-02 not published
    # ETHUSDT listed on 2024-01-15: no monthly January archive, daily ones from the 15th
    frame = simulated("ETHUSDT", "2024-01-15", 17 * 1440)
    for d in range(15, 32):
        day = f"2024-01-{d:02d}"
        archive.add(
            "ETHUSDT",
            "1m",
            day,
            frame.filter((pl.col("timestamp") >= ms(day)) & (pl.col("timestamp") < ms(day) + 86_400_000)),
        )
    out = tmp_path / "downloads"
    result = download(trainer, archive, out, end="2024-01-31", pairs=("BTCUSDT", "ETHUSDT"))
    assert result.exit_code == 0, result.text
    rows = table(result.text)
    assert rows["ETHUSDT"][:5] == [
        "0",
        "17",
        f"{17 * 1440:,}",
        "2024-01-15T00:00:00Z",
        "2024-01-31T23:59:00Z",
    ]
    assert "ETHUSDT: 14 archive(s) not published: ETHUSDT-1m-2024-01-01.zip" in result.text
    result = download(trainer, archive, out, pairs=("BTCUSDT", "ETHUSDT", "NOPEUSDT"))
    assert result.exit_code == 1, result.text
    rows = table(result.text)
    assert rows["BTCUSDT"][:2] == ["1", "2"] and rows["BTCUSDT"][-2:] == ["1", "1,440"]  # the missing day
    assert "BTCUSDT: 1 archive(s) not published: BTCUSDT-1m-2024-02-02.zip." in result.text
    assert rows["NOPEUSDT"][:3] == ["0", "0", "0"]
    assert "no archive at all for NOPEUSDT between 2024-01-01 and 2024-02-03" in result.text
    assert "NOPEUSDT: nothing published for 2024-01-01 to 2024-02-03" in result.text


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT], ids=["killed", "ctrl-c"])
def test_an_interrupted_download_leaves_only_a_part_file_and_resumes(archive, tmp_path, trainer, how):
    out = tmp_path / "downloads"
    proc, jan = start_stalled_download(archive, out)
    part = out / PAIR / f"{PAIR}-1m-2024-01.zip.part"
    half = len(archive.files[jan]) // 2
    deadline = time.time() + 30
    try:
        while not (part.exists() and part.stat().st_size >= half):
            assert time.time() < deadline and proc.poll() is None, "the download did not start"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, how)
        said = proc.communicate(timeout=10)[0].decode()
    if how == signal.SIGINT:  # at once, although the server still holds the connection open
        assert proc.returncode == 130 and "Interrupted: verified archives are kept" in said, said
    left = sorted(p.name for p in (out / PAIR).iterdir() if p.name != ".trainer-download.lock")
    assert left == [part.name]  # nothing looks complete (the lock of a killed run is taken over)
    kept = part.stat().st_size
    archive.stall.clear()
    archive.requests.clear()
    result = trainer(*download_args(out, end="2024-01-31"), env={"TRAINER_DOWNLOAD_URL": archive.url})
    assert result.exit_code == 0, result.text
    assert [r for p, r in archive.requests if p == jan] == [f"bytes={kept}-"]  # resumed, not restarted
    assert (out / PAIR / f"{PAIR}-1m-2024-01.zip").read_bytes() == archive.files[jan]
    assert not part.exists()


def test_server_errors_are_retried_with_back_off(trainer, archive, tmp_path):
    publish(archive, days=("2024-02-01",))
    day = next(p for p in archive.files if p.endswith("2024-02-01.zip"))
    archive.unavailable[day] = 2
    archive.unavailable[day + ".CHECKSUM"] = 1
    started = time.monotonic()
    result = download(trainer, archive, tmp_path / "d", end="2024-02-01")
    assert result.exit_code == 0, result.text
    assert archive.fetched().count(day) == 3 and archive.fetched(".CHECKSUM").count(day + ".CHECKSUM") == 2
    assert time.monotonic() - started >= 0.5 + 0.5 + 1.0  # the back-off: 0.5 s, then 0.5 s and 1 s
    assert (tmp_path / "d" / PAIR / Path(day).name).read_bytes() == archive.files[day]


def test_futures_and_other_timeframes_come_from_their_own_paths(trainer, archive, tmp_path):
    frame = simulated(PAIR, "2024-01-01", 2 * 1440)
    hourly = frame.filter(pl.col("timestamp") % 3_600_000 == 0)
    for day, offset in (("2024-01-01", 0), ("2024-01-02", 24)):
        archive.add(PAIR, "1h", day, hourly.slice(offset, 24), market="futures-um")
    out = tmp_path / "downloads"
    result = download(trainer, archive, out, "--market", "futures-um", "--timeframe", "1h", end="2024-01-02")
    assert result.exit_code == 0, result.text
    assert all("/data/futures/um/" in p for p in archive.fetched())
    assert sorted(p.name for p in (out / "futures" / PAIR).glob("*.zip")) == [
        f"{PAIR}-1h-2024-01-01.zip",
        f"{PAIR}-1h-2024-01-02.zip",
    ]
    assert table(result.text)[PAIR][2] == "48"
    spec = default_manifest().resolve(
        PAIR,
        sets=[
            "data.loader=ohlcv",
            f"data.path={out}",
            "data.timeframe=1h",
            "data.params.market=futures-um",
            "labels.future_window=3",
            "features.ma_short=3",
            "features.ma_long=6",
        ],
    )
    from trainer_core.pipeline import load_pair_data
    from trainer_core.plugins import load_plugins

    # 48 candles, the first ma_long - 1 = 5 history only
    assert len(load_pair_data(spec, load_plugins(entry_points=False))[0]) == 48 - 5


def test_bad_arguments_get_one_line_and_a_hint(trainer, tmp_path):
    result = trainer("download", "--pair", PAIR, "--start", "2024-02-01", "--end", "2024-01-01")
    assert result.exit_code == 2 and "--start 2024-02-01 is after --end 2024-01-01" in result.text
    result = trainer("download", "--pair", "BTC/USDT:X", "--start", "2024-01-01")
    assert result.exit_code == 2 and "not a valid pair name" in result.text
    result = trainer("download", "--pair", PAIR, "--timeframe", "7m", "--start", "2024-01-01")
    assert result.exit_code == 2 and "the archive has no 7m klines" in result.text and "Hint:" in result.text
    result = trainer("download", "--start", "2024-01-01")
    assert result.exit_code == 2 and "Name the pairs to download" in result.text
    assert "Traceback" not in result.text


def test_download_help_imports_neither_tensorflow_nor_ray():
    code = (
        "import sys, json\n"
        "from trainer_core.cli import main\n"
        "try:\n"
        "    main(['download', '--help'])\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'ray', 'matplotlib', 'sklearn'})\n"
        "print('MODULES=' + json.dumps(heavy))\n"
        "sys.exit(code or 0)\n"
    )
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "--base-url" in proc.stdout and "TRAINER_DOWNLOAD_URL" in proc.stdout
    line = next(l for l in proc.stdout.splitlines() if l.startswith("MODULES="))
    assert json.loads(line[len("MODULES=") :]) == []
    assert time.monotonic() - started < 15


@pytest.mark.slow
def test_batch_on_the_laptop_manifest_trains_from_the_download(archive, tmp_path):
    """`trainer download --manifest manifests/laptop.yaml`, then `trainer batch` on it, made tiny."""
    manifest = load_manifest(REPO / "manifests" / "laptop.yaml")
    everyone = [e.pair for e in manifest.pairs]
    pairs = everyone[:1]  # trained: one pair keeps the test to seconds
    for pair in everyone:
        frame = simulated(pair, "2024-01-01", 2 * 1440)
        for day in ("2024-01-01", "2024-01-02"):
            archive.add(
                pair,
                "1m",
                day,
                frame.filter((pl.col("timestamp") >= ms(day)) & (pl.col("timestamp") < ms(day) + 86_400_000)),
            )
    env = {
        **os.environ,
        "TRAINER_DOWNLOAD_URL": archive.url,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONUNBUFFERED": "1",
    }
    env = {k: v for k, v in env.items() if not k.startswith("RAY_ADDRESS")}
    downloads = tmp_path / "downloads"
    got = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer_core.cli",
            "download",
            "--manifest",
            str(REPO / "manifests" / "laptop.yaml"),
            "--start",
            "2024-01-01",
            "--end",
            "2024-01-02",
            "--output",
            str(downloads),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert got.returncode == 0, got.stdout + got.stderr
    assert all((downloads / p / f"{p}-1m-2024-01-02.zip").exists() for p in everyone)
    from trainer_core.testing import TINY_SETTINGS

    sets = [
        *TINY_SETTINGS,
        "train.epochs=1",
        "features.ma_short=60",
        "features.ma_long=240",
        f"data.path={downloads}",
        "data.start=2024-01-01",
        "data.end=2024-01-02",
        "resources.cpus=1",
    ]
    args = [a for s in sets for a in ("--set", s)]
    out = tmp_path / "artifacts"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer_core.cli",
            "batch",
            str(REPO / "manifests" / "laptop.yaml"),
            "--only",
            ",".join(pairs),
            "--output",
            str(out),
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "\x1b[" not in proc.stdout + proc.stderr  # a redirected log: Ray's worker lines uncoloured
    assert f"(train {pairs[0]} pid=" in proc.stdout + proc.stderr  # which are forwarded
    for pair in pairs:
        success = json.loads((out / pair / "_SUCCESS.json").read_text())
        assert success["pair"] == pair
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(r["pair"] for r in summary["pairs"] if r["status"] == "trained") == sorted(pairs)

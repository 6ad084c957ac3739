"""Binance's public kline archive (data.binance.vision): which archives cover a period, and fetching
them in parallel, each verified against its .CHECKSUM, resumable, with nothing unverified left
looking complete. `trainer download` (download.py) is the command around it.

The server is not trusted: a .CHECKSUM and an archive body are read up to a cap, a transfer slower
than a minimum rate is cut, a file the disk cannot hold is deleted, and links in the download
folder are never followed.
"""

from __future__ import annotations

import calendar
import errno
import hashlib
import http.client
import os
import queue
import re
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

DEFAULT_BASE_URL = "https://data.binance.vision"
BASE_URL_ENV = "TRAINER_DOWNLOAD_URL"
TIMEOUT_ENV = "TRAINER_DOWNLOAD_TIMEOUT"
MIN_RATE_ENV = "TRAINER_DOWNLOAD_MIN_RATE"
MAX_ARCHIVE_ENV = "TRAINER_DOWNLOAD_MAX_MB"
MARKET_PATHS = {"spot": "spot", "futures-um": "futures/um"}
#: the kline intervals the archive publishes
TIMEFRAMES = ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w")
CHUNK = 256 * 1024
TIMEOUT = 30.0
#: a transfer carrying fewer bytes per second than this over any TIMEOUT seconds is cut (and retried)
MIN_RATE = 1000.0
#: the most an archive may weigh (a month of 1-second klines is about 130 MB)
MAX_ARCHIVE_MB = 1024.0
#: a .CHECKSUM line is about 90 bytes
MAX_CHECKSUM_BYTES = 4096
#: network errors are retried this many times, after 0.5 s, 1 s, 2 s, ...
RETRIES = 4
BACKOFF = 0.5
SHA256_RE = re.compile(r"^\s*([0-9a-fA-F]{64})\b")


@dataclass(frozen=True)
class Archive:
    """One zip of the archive: a month or a day of one pair's klines."""

    pair: str
    period: str  # 2024-01 (monthly) or 2024-01-15 (daily)
    name: str  # BTCUSDT-1m-2024-01.zip
    url: str
    path: Path  # where the verified file is kept

    @property
    def monthly(self) -> bool:
        """Whether this is a month's archive (else a day's)."""
        return len(self.period) == 7

    @property
    def checksum_path(self) -> Path:
        """Where the verified checksum is kept: ``{name}.CHECKSUM`` beside the zip."""
        return self.path.with_name(self.path.name + ".CHECKSUM")

    @property
    def part_path(self) -> Path:
        """Where the download in progress goes: ``{name}.part`` beside the zip."""
        return self.path.with_name(self.path.name + ".part")


@dataclass
class Outcome:
    """What became of one archive: kept (verified earlier), fetched, missing (not published) or failed."""

    archive: Archive
    status: str
    bytes: int = 0
    requests: int = 0
    error: str = ""


@dataclass
class PairReport:
    """One pair's archives and what became of each."""

    pair: str
    folder: Path
    outcomes: list[Outcome] = field(default_factory=list)

    def by_status(self, status: str) -> list[Outcome]:
        """The outcomes with ``status`` (kept, fetched, missing or failed)."""
        return [o for o in self.outcomes if o.status == status]


class Missing(Exception):
    """The archive answers 404: not published (a pair listed later, a day not yet out)."""


class Failed(Exception):
    """An archive that cannot be had: a checksum that does not match twice, an HTTP error, a network
    down. `resumable`: what arrived is good so far, and its .part stays for the next run."""

    def __init__(self, message: str, resumable: bool = False):
        super().__init__(message)
        self.resumable = resumable


class Refused(Failed):
    """A link where an archive's file (or its folder) should be: never followed, never removed."""


class Stopped(Exception):
    """The run was interrupted; the .part file stays for the next run to resume."""


def env_number(name: str, default: float) -> float:
    """A positive finite number from ``$name`` (``default`` when unset); a `ConfigError` otherwise."""
    from trainer_core import ConfigError

    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (0 < value < float("inf")):
        raise ConfigError(
            f"{name}={raw!r}: expected a number greater than 0.", f"Unset it for the default ({default:g})."
        )
    return value


_connecting = threading.local()  # the connection this thread is opening, for its header deadline


class _Watched:
    """A connection whose server must send its status line and headers within `deadline` seconds of
    connecting: past it the socket is shut, so a server sending a header byte now and then cannot
    hold a request for hours (each read's own timeout would let it)."""

    deadline = TIMEOUT

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self.cut = threading.Event()
        self.watch = threading.Timer(self.deadline, self._cut)
        self.watch.daemon = True
        self.watch.start()
        _connecting.conn = self

    def _cut(self) -> None:
        self.cut.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[attr-defined]
        except OSError:
            pass


class _WatchedHTTP(_Watched, http.client.HTTPConnection):
    pass


class _WatchedHTTPS(_Watched, http.client.HTTPSConnection):
    pass


def _opener(deadline: float) -> urllib.request.OpenerDirector:
    http_class = type("_HTTP", (_WatchedHTTP,), {"deadline": deadline})
    https_class = type("_HTTPS", (_WatchedHTTPS,), {"deadline": deadline})

    class Plain(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(http_class, req)

    class Secure(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(https_class, req, context=self._context)

    return urllib.request.build_opener(Plain, Secure)


def base_url(option: str | None = None) -> str:
    """The archive's base URL: ``option``, else ``$TRAINER_DOWNLOAD_URL``, else data.binance.vision; no trailing slash."""
    return (option or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")


def pair_folder(output: Path, pair: str, market: str) -> Path:
    """`{output}/{PAIR}/` for spot, `{output}/futures/{PAIR}/` for USDⓈ-M futures (freqtrade's layout)."""
    return output / pair if market == "spot" else output / "futures" / pair


def archive(base: str, market: str, pair: str, timeframe: str, period: str, folder: Path) -> Archive:
    """The `Archive` of ``pair``'s klines for ``period`` (``YYYY-MM`` monthly, ``YYYY-MM-DD`` daily), kept in ``folder``."""
    kind = "monthly" if len(period) == 7 else "daily"
    name = f"{pair}-{timeframe}-{period}.zip"
    url = f"{base}/data/{MARKET_PATHS[market]}/{kind}/klines/{pair}/{timeframe}/{name}"
    return Archive(pair, period, name, url, folder / name)


def _months(start: date, end: date) -> Iterable[tuple[date, date]]:
    y, m = start.year, start.month
    while date(y, m, 1) <= end:
        yield date(y, m, 1), date(y, m, calendar.monthrange(y, m)[1])
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)


def _days(first: date, last: date) -> Iterable[date]:
    d = first
    while d <= last:
        yield d
        d += timedelta(days=1)


def refuse_links(a: Archive) -> None:
    """`Refused` when the archive's folder, zip, .part or .CHECKSUM is a symbolic link."""
    for p in (a.path.parent, a.path, a.part_path, a.checksum_path):
        if p.is_symlink():
            raise Refused(
                f"{a.name}: {p} is a symbolic link; the download folder is never written through a link "
                "(move or delete it yourself: the trainer neither follows nor removes it)"
            )


def _verified(a: Archive) -> bool:
    """The file is there with the checksum it was verified against (no request needed)."""
    if not (a.path.is_file() and a.checksum_path.is_file()):
        return False
    with open(a.checksum_path, "rb") as f:
        expected = parse_checksum(f.read(MAX_CHECKSUM_BYTES).decode("utf-8", errors="replace"))
    return expected is not None and file_sha256(a.path) == expected


def plan(
    pair: str, start: date, end: date, timeframe: str, market: str, base: str, folder: Path
) -> list[Archive]:
    """The archives covering [start, end], each candle in one of them.

    A month wholly inside the period comes from its monthly archive, unless the folder already
    holds that month's daily archives (a period extended day by day keeps going daily, so what was
    fetched is not fetched again inside a bigger file). A month whose monthly archive is already
    in the folder needs nothing else. The rest comes from daily archives.
    """
    out = []
    for month_first, month_last in _months(start, end):
        first, last = max(start, month_first), min(end, month_last)
        monthly = archive(base, market, pair, timeframe, month_first.strftime("%Y-%m"), folder)
        daily_here = folder.is_dir() and any(
            p.name.startswith(f"{pair}-{timeframe}-{month_first:%Y-%m}-") and p.name.endswith(".zip")
            for p in folder.iterdir()
        )
        whole = first == month_first and last == month_last
        if monthly.path.is_file() or (whole and not daily_here):
            out.append(monthly)
        else:
            out.extend(
                archive(base, market, pair, timeframe, f"{d:%Y-%m-%d}", folder) for d in _days(first, last)
            )
    return out


def daily_for(a: Archive, start: date, end: date, timeframe: str, market: str, base: str) -> list[Archive]:
    """The daily archives standing in for a monthly one that is not published (yet)."""
    y, m = int(a.period[:4]), int(a.period[5:7])
    first = max(start, date(y, m, 1))
    last = min(end, date(y, m, calendar.monthrange(y, m)[1]))
    return [
        archive(base, market, a.pair, timeframe, f"{d:%Y-%m-%d}", a.path.parent) for d in _days(first, last)
    ]


def parse_checksum(text: str) -> str | None:
    """`<sha256 hex>  <file name>` -> the lower-case hex digest."""
    match = SHA256_RE.match(text)
    return match[1].lower() if match else None


def file_sha256(path: Path) -> str:
    """The plain lower-case hex sha256 of a file, as a .CHECKSUM line writes it (`trainer_core.file_sha256`
    prefixes ``sha256:``)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Fetcher:
    """Fetches archives with urllib, one thread per job; safe to call `fetch` from several threads."""

    def __init__(
        self,
        *,
        timeout: float | None = None,
        retries: int = RETRIES,
        backoff: float = BACKOFF,
        on_bytes: Callable[[int], None] | None = None,
    ):
        self.timeout = timeout if timeout is not None else env_number(TIMEOUT_ENV, TIMEOUT)
        self.min_rate = env_number(MIN_RATE_ENV, MIN_RATE)
        self.max_bytes = int(env_number(MAX_ARCHIVE_ENV, MAX_ARCHIVE_MB) * 1e6)
        self.retries = retries
        self.backoff = backoff
        self.opener = _opener(self.timeout)
        self.on_bytes = on_bytes or (lambda n: None)
        self.stop = threading.Event()

    # -- one archive -------------------------------------------------------------------------

    def fetch(self, a: Archive) -> Outcome:
        """Get one archive, verified against its .CHECKSUM (one verified earlier is kept); the `Outcome` says what became of it."""
        out = Outcome(a, "kept")
        try:
            refuse_links(a)
            if _verified(a):
                return out
            a.path.parent.mkdir(parents=True, exist_ok=True)
            for _attempt in (1, 2):  # a checksum mismatch is fetched once more from scratch
                expected = self._checksum(a, out)
                if a.path.is_file() and file_sha256(a.path) == expected:  # a file put there by hand
                    self._keep_checksum(a, expected)
                    return out
                self._remove(a.path, a.checksum_path)
                got = self._download(a, out)
                if got == expected:
                    self._keep_checksum(a, expected)
                    os.replace(a.part_path, a.path)
                    out.status = "fetched"
                    return out
                a.part_path.unlink(missing_ok=True)
            raise Failed(
                f"{a.name}: the download does not match its .CHECKSUM, twice "
                f"(expected sha256 {expected[:12]}…, got {got[:12]}…); nothing was kept."
            )
        except Missing:
            out.status = "missing"
        except Refused as exc:
            out.status, out.error = "failed", str(exc)
        except Failed as exc:
            self._remove(a.path, a.checksum_path, *(() if exc.resumable else (a.part_path,)))
            out.status, out.error = "failed", str(exc)
        except Stopped:
            out.status, out.error = "failed", "interrupted"
        except OSError as exc:  # the output folder: full, read-only, ...
            out.status, out.error = (
                "failed",
                f"{a.name}: cannot write {a.path.parent}: {exc.strerror or exc}.",
            )
        return out

    def _checksum(self, a: Archive, out: Outcome) -> str:
        what = a.name + ".CHECKSUM"
        body = self._retrying(lambda: self._get_small(a.url + ".CHECKSUM", out, what), what)
        expected = parse_checksum(body.decode("utf-8", errors="replace"))
        if expected is None:
            raise Failed(f"{a.name}.CHECKSUM: not a sha256 checksum line ({body[:60]!r}).")
        return expected

    def _keep_checksum(self, a: Archive, expected: str) -> None:
        tmp = a.checksum_path.with_name(f".{a.checksum_path.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            tmp.write_text(f"{expected}  {a.name}\n")
            os.replace(tmp, a.checksum_path)
        finally:
            tmp.unlink(missing_ok=True)

    @staticmethod
    def _remove(*paths: Path) -> None:
        for p in paths:
            p.unlink(missing_ok=True)

    def _download(self, a: Archive, out: Outcome) -> str:
        """The archive into `name.part`, resumed from what an earlier try left; its sha256."""
        self._retrying(lambda: self._get_to_part(a, out), a.name)
        return file_sha256(a.part_path)

    # -- HTTP --------------------------------------------------------------------------------

    def _open(self, url: str, out: Outcome, headers: dict | None = None):
        if self.stop.is_set():
            raise Stopped()
        out.requests += 1
        request = urllib.request.Request(url, headers={"User-Agent": "pair-trainer", **(headers or {})})
        _connecting.conn = None
        late = TimeoutError(f"no status line and headers within {self.timeout:g} s (${TIMEOUT_ENV})")
        try:
            response = self.opener.open(request, timeout=self.timeout)
        except (urllib.error.URLError, http.client.HTTPException, OSError):
            if _connecting.conn is not None and _connecting.conn.cut.is_set():
                raise late from None
            raise
        finally:
            if _connecting.conn is not None:
                _connecting.conn.watch.cancel()
        if _connecting.conn is not None and _connecting.conn.cut.is_set():  # cut mid-headers: not an answer
            response.close()
            raise late
        return response

    def _read_body(
        self, response, what: str, limit: int, write: Callable[[bytes], None], counted: bool = True
    ) -> int:
        """Stream ``response`` into ``write``: cut past ``limit`` bytes (`Failed`) or when a window of
        ``timeout`` seconds brings less than ``min_rate`` bytes a second (`TimeoutError`, retried:
        a server sending a byte now and then cannot hold an archive open for hours)."""
        got = 0
        since, since_got = time.monotonic(), 0
        while True:
            if self.stop.is_set():
                raise Stopped()
            block = response.read1(CHUNK)  # what has arrived, so a stalled transfer still lands on disk
            if not block:
                return got
            got += len(block)
            if got > limit:
                raise Failed(
                    f"{what}: the server sent more than {_size(limit)}, the most allowed "
                    f"(${MAX_ARCHIVE_ENV} for an archive); nothing was kept."
                )
            write(block)
            if counted:  # the archives' bytes are the run's figures; a .CHECKSUM's are not
                self.on_bytes(len(block))
            now = time.monotonic()
            if now - since >= self.timeout:
                rate = (got - since_got) / (now - since)
                if rate < self.min_rate:
                    raise TimeoutError(
                        f"{got - since_got:,} bytes in {now - since:.1f} s, under the minimum of "
                        f"{self.min_rate:,.0f} bytes/s (${MIN_RATE_ENV})"
                    )
                since, since_got = now, got

    def _get_small(self, url: str, out: Outcome, what: str) -> bytes:
        with self._open(url, out) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > MAX_CHECKSUM_BYTES:
                raise Failed(
                    f"{what}: the server announces {int(length):,} bytes; a checksum file is one line."
                )
            chunks: list[bytes] = []
            try:
                self._read_body(response, what, MAX_CHECKSUM_BYTES, chunks.append, counted=False)
            except Failed:
                raise Failed(
                    f"{what}: the server sent more than {MAX_CHECKSUM_BYTES:,} bytes; a checksum file is one line."
                ) from None
            body = b"".join(chunks)
            if length is not None and length.isdigit() and len(body) < int(length):
                raise http.client.IncompleteRead(body, int(length) - len(body))
            return body

    def _get_to_part(self, a: Archive, out: Outcome) -> None:
        part = a.part_path
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            response = self._open(a.url, out, headers)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:  # the part is already whole: the checksum decides
                return
            raise
        with response:
            if response.status == 206:
                append = True
            else:  # 200: the server sends the whole file
                append, have = False, 0
            length = response.headers.get("Content-Length")
            remaining = int(length) if length is not None and length.isdigit() else None
            if remaining is not None and have + remaining > self.max_bytes:
                raise Failed(
                    f"{a.name}: the server announces {_size(have + remaining)}, over the "
                    f"{_size(self.max_bytes)} allowed for one archive (${MAX_ARCHIVE_ENV}); nothing was kept."
                )
            if remaining is not None:
                self._check_space(a, remaining, have)
            flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
            flags |= os.O_APPEND if append else os.O_TRUNC
            try:
                fd = os.open(part, flags, 0o644)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    refuse_links(a)
                raise
            got = 0
            with os.fdopen(fd, "wb") as f:

                def write(block: bytes) -> None:
                    f.write(block)
                    f.flush()

                try:
                    got = self._read_body(response, a.name, self.max_bytes - have, write)
                except OSError as exc:
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                        self._full(a, exc, have, remaining)
                    raise
            if remaining is not None and got < remaining:  # the connection closed early: resume
                raise http.client.IncompleteRead(b"", remaining - got)

    def _check_space(self, a: Archive, remaining: int, have: int) -> None:
        try:
            st = os.statvfs(a.path.parent)
        except (OSError, AttributeError):
            return
        free = st.f_bavail * st.f_frsize
        if remaining > free:
            raise Failed(
                f"{a.name}: needs {_size(remaining)} more on {a.path.parent}, which has {_size(free)} free; "
                "free some space and run again"
            )

    def _full(self, a: Archive, exc: OSError, have: int, remaining: int | None) -> None:
        """The disk filled mid-archive: its .part cannot be completed, so it goes, and the message says
        how much the archive needs."""
        written = a.part_path.stat().st_size if a.part_path.exists() else 0
        a.part_path.unlink(missing_ok=True)
        need = f"{_size(have + remaining)}" if remaining is not None else f"more than {_size(written)}"
        raise Failed(
            f"{a.name}: {exc.strerror or 'no space left on device'} on {a.path.parent} after "
            f"{_size(written)}; the archive needs {need}; its .part was deleted, free that much and run again"
        ) from None

    def _retrying(self, call, what: str):
        for attempt in range(self.retries + 1):
            try:
                return call()
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    raise Missing() from None
                if exc.code not in (408, 429) and exc.code < 500:
                    raise Failed(f"{what}: the server answered HTTP {exc.code} {exc.reason}.") from None
                error = f"HTTP {exc.code} {exc.reason}"
            except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as exc:
                reason = getattr(exc, "reason", None) or exc
                error = f"{type(exc).__name__}: {reason}" if str(reason) else type(exc).__name__
            if attempt == self.retries:
                raise Failed(f"{what}: network error after {attempt + 1} tries ({error}).", resumable=True)
            if self.stop.wait(self.backoff * 2**attempt):
                raise Stopped()
        raise AssertionError("unreachable")


def _size(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 100_000 else f"{n:,} bytes"


def run(
    archives: list[Archive],
    fetcher: Fetcher,
    jobs: int,
    *,
    fallback: Callable[[Archive], list[Archive]],
    on_done: Callable[[Outcome, int], None] = lambda o, added: None,
    on_tick: Callable[[], None] = lambda: None,
) -> list[Outcome]:
    """Fetch every archive with `jobs` threads; a monthly archive that is missing is replaced by
    `fallback(archive)` (its days). `on_done(outcome, added)` runs in the calling thread, with the
    number of archives the fallback added; `on_tick` about 5 times a second.

    The threads are daemons: on Ctrl-C the caller returns at once instead of waiting for a read
    from a stalled server, and what a thread was writing stays a `.part` for the next run."""
    tasks: queue.Queue = queue.Queue()
    results: queue.Queue = queue.Queue()

    def worker() -> None:
        while True:
            a = tasks.get()
            if a is None or fetcher.stop.is_set():
                return
            try:
                results.put(fetcher.fetch(a))
            except Exception as exc:  # a bug must not leave the run waiting for this archive forever
                results.put(Outcome(a, "failed", error=f"{a.name}: {type(exc).__name__}: {exc}"))

    for a in archives:
        tasks.put(a)
    threads = [
        threading.Thread(target=worker, name=f"download-{i}", daemon=True) for i in range(max(1, jobs))
    ]
    for t in threads:
        t.start()
    outstanding = len(archives)
    outcomes: list[Outcome] = []
    try:
        while outstanding:
            try:
                outcome = results.get(timeout=0.2)
            except queue.Empty:
                on_tick()
                continue
            outstanding -= 1
            extra = (
                fallback(outcome.archive) if outcome.status == "missing" and outcome.archive.monthly else []
            )
            if extra:
                outcome.status = "replaced"
                for a in extra:
                    tasks.put(a)
                outstanding += len(extra)
            outcomes.append(outcome)
            on_done(outcome, len(extra))
            on_tick()
    except BaseException:
        fetcher.stop.set()  # the threads stop between blocks; their .part files stay for a rerun
        raise
    finally:
        for _ in threads:
            tasks.put(None)
    return outcomes

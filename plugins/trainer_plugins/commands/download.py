"""Command `trainer download`: a pair's klines from Binance's public archive into `{output}/{PAIR}/`,
verified, resumable, ready for `trainer prepare` and the `ohlcv` loader. The fetching lives in
binance_archive.py.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import click

from trainer_core import ConfigError, PairLock, TrainerError, hookimpl

from . import binance_archive as ba

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
DEFAULT_JOBS = 4
MARKETS = tuple(ba.MARKET_PATHS)
#: Binance's kline archive begins in 2017 (spot from 2017-08-17, USDⓈ-M futures from 2019-12-31)
ARCHIVE_FIRST_DAY = date(2017, 1, 1)
LOCK_NAME = ".trainer-download.lock"


class DownloadError(TrainerError):
    """Archives that could not be had (after retries), or a pair with no archive at all."""

    exit_code = 1


def yesterday() -> date:
    """Yesterday's date in UTC (the default last day of a download)."""
    return datetime.now(timezone.utc).date() - timedelta(days=1)


def days(start: date, end: date | None, echo=click.echo) -> tuple[date, date]:
    """The first and last day to fetch: an ``end`` after yesterday (the last day the archive can
    hold) becomes yesterday, with a note; a start before the archive or after the end is refused."""
    last_published = yesterday()
    if start < ARCHIVE_FIRST_DAY:
        raise ConfigError(
            f"--start {start.isoformat()} is before Binance's kline archive begins (2017).",
            f"Give a --start from {ARCHIVE_FIRST_DAY} on (spot klines begin 2017-08-17, futures 2019-12-31).",
        )
    if end is not None and end > last_published:
        echo(
            f"Note: --end {end.isoformat()} is after yesterday, the last day the archive can hold: "
            f"downloading up to {last_published}.",
            err=True,
        )
    last = min(end or last_published, last_published)
    if start > last:
        if start > last_published:
            raise ConfigError(
                f"--start {start.isoformat()} is after yesterday ({last_published}), the last day the archive can hold.",
                "Give a start in the past (UTC days).",
            )
        raise ConfigError(
            f"--start {start} is after --end {last}.", "Give a start on or before the end (UTC days)."
        )
    return start, last


def lock_folders(stack: contextlib.ExitStack, pairs: list[tuple[str, str, str]], output: Path) -> None:
    """Hold each pair folder's download lock (the lock `trainer run` takes per pair) until ``stack`` closes:
    a second download into the same folder stops with a message naming the run that holds it."""
    for pair, _, market in pairs:
        folder = ba.pair_folder(output, pair, market)
        parts = folder.relative_to(output).parts
        for i in range(1, len(parts) + 1):
            target = output.joinpath(*parts[:i])
            if target.is_symlink():
                raise DownloadError(
                    f"{pair}: {target} is a symbolic link; the download folder is never written through a link.",
                    "Move or delete it yourself (the trainer neither follows nor removes it), or pick another --output.",
                )
        folder.mkdir(parents=True, exist_ok=True)
        stack.enter_context(PairLock(folder / LOCK_NAME, pair, str(folder), activity="downloaded into"))


def _pairs_and_settings(pairs, manifest_path, timeframe, market) -> list[tuple[str, str, str]]:
    """(pair, timeframe, market) per pair: the options, else the manifest's data settings."""
    from trainer_core import normalize_pair

    out: dict[tuple[str, str], tuple[str, str, str]] = {}  # spot and futures of a pair are two downloads
    if manifest_path:
        from trainer_core import load_manifest

        manifest = load_manifest(manifest_path)
        for entry in manifest.pairs:
            spec = manifest.resolve(entry.key)
            params = dict(spec.data.params or {})
            own_market = params.get("market") if spec.data.loader == "ohlcv" else None
            own_market = own_market or {"futures": "futures-um", "spot": "spot"}.get(spec.market or "")
            mk = market or own_market or "spot"
            out[(spec.pair, mk)] = (spec.pair, timeframe or spec.data.timeframe, mk)
    for name in pairs:
        pair = normalize_pair(name, "--pair")
        mk = market or ("futures-um" if ":" in name else "spot")  # freqtrade's BTC/USDT:USDT is futures
        out.setdefault((pair, mk), (pair, timeframe or "1m", mk))
    if not out:
        raise ConfigError(
            "Name the pairs to download: --pair BTCUSDT (repeatable) or --manifest FILE.",
            "For example: trainer download --pair BTCUSDT --pair ETHUSDT --start 2024-01-01",
        )
    for pair, tf, mk in out.values():
        if tf not in ba.TIMEFRAMES:
            raise ConfigError(
                f"{pair}: the archive has no {tf} klines.", f"Use one of {', '.join(ba.TIMEFRAMES)}."
            )
        if mk not in MARKETS:
            raise ConfigError(f"{pair}: unknown market {mk!r}.", f"Use one of {', '.join(MARKETS)}.")
    return list(out.values())


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def _pair_row(report: ba.PairReport, timeframe: str) -> tuple[list[str], str | None]:
    """The table's row (what the pair's folder holds now, read as `trainer prepare` reads it:
    gaps and the candles missing in them), and a problem line when it does not read."""
    from trainer_core import DataError, check_candles, iso_time, parse_candle_name, read_candles

    zips = sorted(report.folder.glob(f"{report.pair}-{timeframe}-*.zip")) if report.folder.is_dir() else []
    periods = [
        parsed.period for parsed in map(parse_candle_name, (z.name for z in zips)) if parsed and parsed.period
    ]
    months = sum(1 for period in periods if len(period) == 7)
    days = len(periods) - months
    row = [report.pair, str(months), str(days)]
    if not zips:
        return row + ["0", "-", "-", "-", "-"], None
    try:
        candles = read_candles(report.folder, report.pair, timeframe, echo=lambda line: None)
        gaps = check_candles(candles, timeframe, report.pair)
    except DataError as exc:
        return row + [
            "?",
            "-",
            "-",
            "?",
            "?",
        ], f"{report.pair}: the folder does not read as one series: {exc.message.rstrip('.')}" + (
            f" ({exc.hint.rstrip('.')})" if exc.hint else ""
        )
    return row + [
        f"{len(candles):,}",
        iso_time(candles.time_ms[0]),
        iso_time(candles.time_ms[-1]),
        f"{gaps.gaps:,}",
        f"{gaps.missing_candles:,}",
    ], None


def _table(rows: list[list[str]]) -> str:
    header = ["PAIR", "MONTHS", "DAYS", "CANDLES", "FIRST", "LAST", "GAPS", "MISSING"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in [header, *rows])


def download(
    pairs: list[tuple[str, str, str]],
    start: date,
    end: date,
    output: Path,
    *,
    base: str,
    jobs: int = DEFAULT_JOBS,
    echo=click.echo,
    progress: bool = True,
) -> tuple[list[ba.PairReport], dict]:
    """Fetch every (pair, timeframe, market)'s archives for [start, end]; the reports and run figures."""
    lock = threading.Lock()
    state = {"bytes": 0}

    def on_bytes(n: int) -> None:
        with lock:
            state["bytes"] += n

    fetcher = ba.Fetcher(on_bytes=on_bytes)
    reports: dict[str, ba.PairReport] = {}
    settings: dict[str, tuple[str, str]] = {}
    archives: list[ba.Archive] = []
    for pair, timeframe, market in pairs:
        folder = ba.pair_folder(output, pair, market)
        reports[pair] = ba.PairReport(pair, folder)
        settings[pair] = (timeframe, market)
        archives += ba.plan(pair, start, end, timeframe, market, base, folder)

    def fallback(a: ba.Archive) -> list[ba.Archive]:
        timeframe, market = settings[a.pair]
        return ba.daily_for(a, start, end, timeframe, market, base)

    began = time.monotonic()

    def shown(_item=None) -> str:
        seconds = max(time.monotonic() - began, 1e-6)
        return f"{_mb(state['bytes'])} ({state['bytes'] / seconds / 1e6:,.1f} MB/s)"

    label = f"Downloading {len(archives):,} archive(s) of {len(pairs)} pair(s)"
    bar = (
        click.progressbar(
            length=len(archives), label=label, file=sys.stderr, show_pos=True, item_show_func=shown
        )
        if progress
        else None
    )

    def on_done(outcome: ba.Outcome, added: int) -> None:
        reports[outcome.archive.pair].outcomes.append(outcome)
        if bar is not None:
            bar.length += added
            bar.update(1)

    def on_tick() -> None:
        if bar is not None:
            bar.update(0)

    if bar is not None:
        with bar:
            ba.run(archives, fetcher, jobs, fallback=fallback, on_done=on_done, on_tick=on_tick)
    else:
        ba.run(archives, fetcher, jobs, fallback=fallback, on_done=on_done)
    figures = {"seconds": time.monotonic() - began, "bytes": state["bytes"]}
    return list(reports.values()), figures


@click.command(name="download", context_settings=CONTEXT_SETTINGS)
@click.option(
    "--pair", "pairs", multiple=True, metavar="PAIR", help="A pair to download, e.g. BTCUSDT (repeatable)."
)
@click.option(
    "--manifest",
    "manifest_path",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Download every pair of this manifest, at its data.timeframe (and data.params.market).",
)
@click.option(
    "--start", required=True, type=click.DateTime(["%Y-%m-%d"]), metavar="YYYY-MM-DD", help="First day (UTC)."
)
@click.option(
    "--end",
    type=click.DateTime(["%Y-%m-%d"]),
    metavar="YYYY-MM-DD",
    help="Last day (UTC), included  [default: yesterday].",
)
@click.option(
    "--output",
    default="downloads/",
    show_default=True,
    metavar="DIR",
    help="Archives go to DIR/PAIR/ (futures: DIR/futures/PAIR/).",
)
@click.option(
    "--market", type=click.Choice(MARKETS), help="spot or futures-um (USDⓈ-M futures)  [default: spot]."
)
@click.option("--timeframe", metavar="TF", help="Kline interval, e.g. 1m, 5m, 1h  [default: 1m].")
@click.option(
    "--base-url",
    metavar="URL",
    help=f"The archive's address [default: ${ba.BASE_URL_ENV}, else {ba.DEFAULT_BASE_URL}].",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1, max=64),
    default=DEFAULT_JOBS,
    show_default=True,
    metavar="N",
    help="Archives fetched at once.",
)
def download_command(pairs, manifest_path, start, end, output, market, timeframe, base_url, jobs):
    """Download pairs' klines from Binance's public archive (data.binance.vision).

    Complete months come from monthly archives, the other days from daily ones, each candle
    once. Every zip is checked against its .CHECKSUM before it is kept; a rerun fetches only
    what is not there yet, and resumes a download that was cut off. Archives not published
    (a pair listed later, a day not out yet) are reported per pair. The pair's folder is ready
    for `trainer prepare --data DIR/PAIR` and the ohlcv loader (data.path: DIR).

    Example:

        trainer download --pair BTCUSDT --pair ETHUSDT --start 2024-01-01 --end 2024-03-31

        trainer download --manifest manifests/laptop.yaml --start 2024-01-01
    """
    first, last = days(start.date(), end.date() if end else None)
    ba.Fetcher()  # its settings from the environment, checked before anything is written
    chosen = _pairs_and_settings(pairs, manifest_path, timeframe, market)
    output_dir = Path(output).expanduser()
    base = ba.base_url(base_url)
    with contextlib.ExitStack() as locks:
        lock_folders(locks, chosen, output_dir)
        click.echo(f"{len(chosen)} pair(s), {first} to {last}, from {base} into {output_dir}/", err=True)
        try:
            reports, figures = download(chosen, first, last, output_dir, base=base, jobs=jobs)
        except KeyboardInterrupt:
            click.echo(
                "\nInterrupted: verified archives are kept; run the same command again to resume the rest.",
                err=True,
            )
            sys.exit(130)
        timeframes = {p: tf for p, tf, _ in chosen}
        rows = [_pair_row(r, timeframes[r.pair]) for r in reports]
    click.echo(_table([row for row, _ in rows]))
    failed, empty = [], []
    unreadable = [problem for _, problem in rows if problem]
    for r in reports:
        missing = sorted(r.by_status("missing"), key=lambda o: o.archive.name)
        if missing and not any(o.status in ("kept", "fetched") for o in r.outcomes):
            click.echo(
                f"{r.pair}: nothing published for {first} to {last} ({len(missing)} archive(s) asked for)."
            )
        elif missing:
            names = ", ".join(o.archive.name for o in missing[:4]) + (
                f" and {len(missing) - 4} more" if len(missing) > 4 else ""
            )
            click.echo(f"{r.pair}: {len(missing)} archive(s) not published: {names}.")
        failed += r.by_status("failed")
        if not any(o.status in ("kept", "fetched") for o in r.outcomes):
            empty.append(r.pair)
    fetched = [o for r in reports for o in r.outcomes if o.status == "fetched"]
    kept = sum(len(r.by_status("kept")) for r in reports)
    seconds = figures["seconds"]
    click.echo(
        f"Fetched {len(fetched)} archive(s), {_mb(figures['bytes'])} in {seconds:.1f} s "
        f"({figures['bytes'] / max(seconds, 1e-6) / 1e6:,.1f} MB/s); {kept} already there and verified. "
        f"Candles in {output_dir}/."
    )
    if failed or empty or unreadable:
        lines = [o.error.rstrip(".") for o in failed[:5]] + (
            [f"{len(failed) - 5} more"] if len(failed) > 5 else []
        )
        if empty:
            lines.append(f"no archive at all for {', '.join(empty)} between {first} and {last}")
        lines += [problem.rstrip(".") for problem in unreadable[:3]]
        counts = (
            ([f"{len(failed)} archive(s) failed"] if failed else [])
            + ([f"{len(empty)} pair(s) got nothing"] if empty else [])
            + ([f"{len(unreadable)} pair folder(s) do not read as candles"] if unreadable else [])
        )
        hints = []
        if failed or empty:
            hints.append(
                "Run the same command again: verified archives are kept and not fetched again; check the "
                "pair names and --market for a pair that got nothing."
            )
        if unreadable:
            hints.append(
                "Move the file named out of the folder (a .CHECKSUM only vouches that it is what the server sent)."
            )
        raise DownloadError(f"{' and '.join(counts)}: " + "; ".join(lines) + ".", " ".join(hints))


@hookimpl
def trainer_register_commands(cli):
    """Add the ``download`` command."""
    cli.add_command(download_command)

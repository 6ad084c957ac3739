"""Command group `trainer models`: list, show, promote, rollback and history of each pair's versions.

A pair's versions, its ``champion`` and ``challenger`` and the log of every change live beside its
folder (``OUTPUT/_models/PAIR/``, see `trainer_core.lifecycle`). `promote` moves the champion only
through the gate (`trainer_plugins.lifecycle.gate`) unless forced, and writes the evidence beside
the event; `--all` runs the gate for every pair with a challenger as Ray tasks.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

import click

from trainer_core import (
    ConfigError,
    ConflictError,
    LifecycleError,
    ModelStore,
    TrainerError,
    expired,
    find_stores,
    hookimpl,
    read_policy,
    split_selector,
    write_policy,
)

from ..lifecycle.versions import sync

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table."
)


def _echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def _store(output: str, pair: str) -> ModelStore:
    """The store of ``OUTPUT/PAIR``, its live run registered first (a folder from before stores)."""
    if not pair or pair.startswith("/") or ".." in pair.split("/") or "_models" in pair.split("/"):
        raise ConfigError(
            f"{pair!r} is not a pair folder name.", "Pass the pair as it is named under OUTPUT."
        )
    store = ModelStore(f"{output.rstrip('/')}/{pair}")
    sync(store)
    if not store.exists():
        known = ", ".join(s.name for s in find_stores(output)) or "none"
        raise LifecycleError(
            f"{store.location} holds no trained model and no versions.",
            f"Pairs with models under {output}: {known}.",
        )
    return store


def _age(created: str | None) -> str:
    if not created:
        return "-"
    seconds = (dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(created)).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def version_row(store: ModelStore, state, record: dict) -> dict:
    """One version as `list --json` gives it: id, aliases, age, expiry and headline figures."""
    metrics = record.get("metrics") or {}
    return {
        "pair": store.name,
        "id": record["id"],
        "aliases": sorted(a for a, v in state.aliases.items() if v == record["id"]),
        "created": record.get("created"),
        "trained_from": record.get("trained_from"),
        "trained_until": record.get("trained_until"),
        "valid_until": record.get("valid_until"),
        "expired": expired(record),
        "tag": record.get("tag"),
        "val_accuracy": metrics.get("val_accuracy"),
        "mcc": metrics.get("mcc"),
        "location": store.version_location(record["id"]),
    }


@click.group(context_settings=CONTEXT_SETTINGS)
def models():
    """Versions of each pair's model: the champion that predicts, the challenger, and their history.

    Every completed training is kept as a version; `promote` makes one the champion only when it
    beats the current champion on fresh candles; predictions use the champion.

    Example:

        trainer models list artifacts/

        trainer models promote artifacts/ ETHUSDT --candidate 2 --data candles/
    """


@models.command("list", context_settings=CONTEXT_SETTINGS)
@click.argument("output", metavar="OUTPUT")
@click.option("--pair", "pair", metavar="PAIR", help="Only this pair.")
@json_option
def list_command(output, pair, as_json):
    """Pairs, their versions, aliases, age, expiry and headline figures.

    Example:

        trainer models list artifacts/ --pair ETHUSDT
    """
    stores = [_store(output, pair)] if pair else find_stores(output)
    rows = []
    for store in stores:
        try:
            sync(store)
        except TrainerError as exc:
            click.echo(f"Warning: {store.name}: {exc.message}", err=True)
        state = store.state()
        rows += [version_row(store, state, state.versions[v]) for v in sorted(state.versions)]
    if as_json:
        _echo_json({"output": output, "versions": rows})
        return
    if not rows:
        click.echo(f"No model versions under {output}.")
        return
    click.echo(
        f"{'PAIR':<12} {'VERSION':>7}  {'ALIASES':<20} {'AGE':>5}  {'TRAINED UNTIL':<25} {'VALID UNTIL':<27} "
        f"{'VAL ACC':>7} {'MCC':>6}"
    )
    for r in rows:
        valid = (r["valid_until"] or "-") + (" EXPIRED" if r["expired"] else "")
        acc = f"{r['val_accuracy']:.3f}" if isinstance(r["val_accuracy"], (int, float)) else "-"
        mcc = f"{r['mcc']:.3f}" if isinstance(r["mcc"], (int, float)) else "-"
        click.echo(
            f"{r['pair']:<12} {'#' + str(r['id']):>7}  {','.join(r['aliases']) or '-':<20} "
            f"{_age(r['created']):>5}  {r['trained_until'] or '-':<25} {valid:<27} {acc:>7} {mcc:>6}"
        )


@models.command("show", context_settings=CONTEXT_SETTINGS)
@click.argument("output", metavar="OUTPUT")
@click.argument("selector", metavar="PAIR[@ALIAS|#VERSION]")
@json_option
def show_command(output, selector, as_json):
    """One version: its record, where it lives, and the pair's aliases (default: the champion, else the newest).

    Example:

        trainer models show artifacts/ ETHUSDT@champion
    """
    pair, alias, version = split_selector(selector)
    store = _store(output, pair)
    state = store.state()
    record = store.select(state, alias, version)
    doc = {
        **version_row(store, state, record),
        "record": record,
        "pair_aliases": dict(state.aliases),
    }
    if as_json:
        _echo_json(doc)
        return
    click.echo(f"{store.name} #{record['id']} ({', '.join(doc['aliases']) or 'no alias'})")
    for key in ("location", "tag", "created", "trained_from", "trained_until", "valid_until"):
        click.echo(f"  {key:<14} {doc[key]}")
    click.echo(f"  {'expired':<14} {'yes' if doc['expired'] else 'no'}")
    click.echo(f"  {'aliases':<14} " + (", ".join(f"{a} = #{v}" for a, v in state.aliases.items()) or "none"))


@models.command("history", context_settings=CONTEXT_SETTINGS)
@click.argument("output", metavar="OUTPUT")
@click.argument("pair", metavar="PAIR")
@json_option
def history_command(output, pair, as_json):
    """Every event of a pair: time, who, what, alias from -> to, the reason and the evidence file.

    Example:

        trainer models history artifacts/ ETHUSDT --json
    """
    store = _store(output, pair)
    state = store.state()
    events = [
        {**e, "evidence": store.url(e["evidence"]) if e.get("evidence") else None} for e in state.events
    ]
    if as_json:
        _echo_json({"pair": store.name, "events": events})
        return
    for e in events:
        if e["action"] in ("register", "prune") and e.get("alias") is None:
            what = f"{e['action']} #{e['version']}"
        else:
            fr = "-" if e.get("from") is None else f"#{e['from']}"
            to = "-" if e.get("to") is None else f"#{e['to']}"
            what = f"{e['action']} {e['alias']} {fr} -> {to}"
        line = f"{e['seq']:>4}  {e['time']}  {e['who']:<24} {what}"
        if e.get("reason"):
            line += f"  ({e['reason']})"
        click.echo(line)
        if e.get("evidence"):
            click.echo(f"      evidence: {e['evidence']}")


@models.command("rollback", context_settings=CONTEXT_SETTINGS)
@click.argument("output", metavar="OUTPUT")
@click.argument("pair", metavar="PAIR")
@click.option("--reason", metavar="TEXT", help="Why (recorded in the event log).")
@json_option
def rollback_command(output, pair, reason, as_json):
    """Make the previous champion the champion again (no gate: it held the alias before).

    Example:

        trainer models rollback artifacts/ ETHUSDT --reason "live drawdown"
    """
    store = _store(output, pair)
    state = store.state()
    current = state.aliases.get("champion")
    previous = store.previous_champion(state)
    if current is None or previous is None:
        raise LifecycleError(
            f"{store.name} has no previous champion to roll back to"
            + (f" (champion: #{current})." if current is not None else " (no champion)."),
            f"See `trainer models history {output} {store.name}`.",
        )
    event = store.move_alias(state, "champion", previous, "rollback", reason=reason)
    if as_json:
        _echo_json(event)
        return
    click.echo(f"{store.name}: champion #{current} -> #{previous} (rollback, event {event['seq']}).")


@models.command("policy", context_settings=CONTEXT_SETTINGS)
@click.argument("output", metavar="OUTPUT")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Change a setting (repeatable).")
@json_option
def policy_command(output, sets, as_json):
    """Show or change the output's lifecycle and promotion settings (OUTPUT/_models/policy.json).

    Keys: lifecycle.keep, lifecycle.expire_after (30d, 12h, none), lifecycle.register (true: new
    versions become the challenger), promotion.min_delta, promotion.max_drawdown_margin,
    promotion.min_trades, promotion.confidence, promotion.draws, promotion.block_length,
    promotion.seed.

    Example:

        trainer models policy artifacts/ --set lifecycle.expire_after=14d --set promotion.min_trades=50
    """
    import yaml

    policy = read_policy(output)
    for item in sets:
        key, sep, raw = item.partition("=")
        section, _, name = key.strip().partition(".")
        if not sep or section not in policy or not name:
            raise ConfigError(
                f"--set {item!r}: expected SECTION.KEY=VALUE with SECTION lifecycle or promotion.",
                "For example: --set lifecycle.expire_after=14d",
            )
        known = {"lifecycle": ("keep", "expire_after", "register")}.get(section, tuple(policy["promotion"]))
        if name not in known:
            raise ConfigError(f"Unknown setting {key}.", f"Known {section} settings: {', '.join(known)}.")
        policy[section][name] = yaml.safe_load(raw)
    if sets:
        write_policy(output, policy)
    if as_json:
        _echo_json(policy)
        return
    for section, values in policy.items():
        for key, value in values.items():
            click.echo(f"{section}.{key} = {json.dumps(value)}")


# -- promotion ------------------------------------------------------------------------------------


def promote_pair(
    location: str,
    candidate: int | None,
    data_path: str,
    force: bool = False,
    reason: str | None = None,
) -> dict:
    """Run the gate for one pair and apply its decision as one event; return the outcome.

    ``candidate`` None takes the challenger. The state read first is the basis of the decision:
    if another writer appends to the log meanwhile, nothing is applied (`ConflictError`).
    """
    from ..lifecycle.gate import decide

    store = ModelStore(location)
    sync(store)
    state = store.state()
    policy = read_policy(store.parent)
    if candidate is None:
        candidate = state.aliases.get("challenger")
        if candidate is None:
            raise LifecycleError(f"{store.name} has no challenger.", "Pass --candidate VERSION.")
    record = store.select(state, version=candidate)
    champion_id = state.aliases.get("champion")
    if champion_id == candidate:
        raise LifecycleError(
            f"{store.name} #{candidate} is already the champion.", "Pick another --candidate."
        )
    evidence_rel = f"evidence/{state.seq + 1:06d}-{uuid.uuid4().hex[:8]}.json"
    if force:
        if not reason:
            raise ConfigError("--force needs --reason TEXT: a forced promotion records why.", "Add --reason.")
        evidence = {"format": "pair-trainer promotion evidence v1", "verdict": "promote", "forced": True}
        evidence["why"] = f"forced: {reason}"
    else:
        cand = (candidate, store.version_location(candidate), record)
        champ = None
        if champion_id is not None:
            champ = (champion_id, store.version_location(champion_id), state.versions[champion_id])
        evidence = decide(cand, champ, data_path, policy)
    evidence["basis_seq"] = state.seq
    evidence["reason"] = reason
    store._write(evidence_rel, json.dumps(evidence, indent=2, default=str).encode())
    verdict = evidence["verdict"]
    to = candidate if verdict == "promote" else champion_id
    action = ("force-promote" if force else "promote") if verdict == "promote" else "keep"
    try:
        event = store.move_alias(
            state,
            "champion",
            to,
            action,
            reason=reason or evidence["why"],
            evidence=evidence_rel,
            extra={"candidate": candidate, "verdict": verdict},
        )
    except ConflictError:
        store._remove(evidence_rel)
        raise
    if verdict == "promote" and state.aliases.get("challenger") == candidate:
        try:
            store.move_alias(state, "challenger", None, "clear", reason=f"#{candidate} promoted")
        except ConflictError:
            pass  # the promotion stands; the challenger alias is left for the next change
    return {
        "pair": store.name,
        "candidate": candidate,
        "champion_before": champion_id,
        "champion": to,
        "verdict": verdict,
        "why": evidence["why"],
        "event": event["seq"],
        "evidence": store.url(evidence_rel),
        "difference": evidence.get("difference"),
        "candidate_trades": (evidence.get("candidate") or {}).get("simulation", {}).get("n_trades"),
    }


def _promote_task(location, data_path):
    """One pair of `promote --all` (runs in a Ray worker): the outcome, or the error as a row."""
    try:
        return promote_pair(location, None, data_path)
    except TrainerError as exc:
        return {"pair": location.rstrip("/").rsplit("/", 1)[-1], "verdict": "error", "why": exc.message}


def promote_all(output: str, data_path: str, address: str | None = None, cpus: float = 1) -> list[dict]:
    """The gate for every pair with a challenger, one Ray task each; rows in pair order."""
    todo = []
    for store in find_stores(output):
        sync(store)
        if "challenger" in store.state().aliases:
            todo.append(store.location)
    if not todo:
        return []
    import ray

    started = False
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        started = True
    try:
        task = ray.remote(num_cpus=cpus, max_retries=1)(_promote_task)
        return ray.get([task.remote(loc, data_path) for loc in todo])
    finally:
        if started:
            ray.shutdown()


def replay_decision(location: str, seq: int, data_path: str) -> dict:
    """Recompute the gate's decision of event ``seq`` from its evidence and the versions it names.

    Returns ``{"reproduced": bool, "differences": [...], "event": ..., "recomputed": ...}``.
    """
    from ..lifecycle.gate import decide

    store = ModelStore(location)
    state = store.state()
    event = next((e for e in state.events if e["seq"] == seq), None)
    if event is None or not event.get("evidence"):
        raise LifecycleError(
            f"{store.name} has no gate decision at event {seq}.",
            f"See `trainer models history {store.parent} {store.name}` for the events with evidence.",
        )
    raw = store._read(event["evidence"])
    if raw is None:
        raise LifecycleError(f"{store.url(event['evidence'])} is missing.", "The evidence file was deleted.")
    recorded = json.loads(raw)
    if recorded.get("forced"):
        raise LifecycleError(f"Event {seq} was a forced promotion: there is no gate decision to replay.")
    versions = {}
    for side in ("candidate", "champion"):
        info = recorded.get(side)
        if info is None:
            versions[side] = None
            continue
        record = next(
            (r for r in state.versions.values() if r.get("marker_sha256") == info["marker_sha256"]), None
        )
        if record is None:
            raise LifecycleError(
                f"{store.name} no longer keeps version #{info['version']}, which event {seq} scored.",
                "Retention keeps every version that was champion; a pruned candidate cannot be replayed.",
            )
        versions[side] = (record["id"], store.version_location(record["id"]), record)
    again = decide(
        versions["candidate"],
        versions["champion"],
        data_path,
        {"promotion": recorded["policy"]},
        recorded["costs"],
    )
    differences = []
    if recorded.get("format") != again["format"]:
        differences.append(f"format: {recorded.get('format')} was decided by an earlier interval rule")
    for key in ("verdict", "window", "bootstrap", "difference"):
        if json.loads(json.dumps(again.get(key), default=str)) != recorded.get(key):
            differences.append(key)
    if again["data"]["sha256"] != recorded["data"]["sha256"]:
        differences.append("data (the candles differ from those the decision used)")
    for side in ("candidate", "champion"):
        if recorded.get(side) and again[side].get("pnl_sha256") != recorded[side].get("pnl_sha256"):
            differences.append(f"{side} trades")
    expected = "promote" if event.get("to") == recorded["candidate"]["version"] else "keep"
    if recorded["verdict"] != expected:
        differences.append("the event's alias move does not match its evidence")
    return {"reproduced": not differences, "differences": differences, "event": event, "recomputed": again}


@models.command("replay", context_settings=CONTEXT_SETTINGS)
@click.argument("output", metavar="OUTPUT")
@click.argument("pair", metavar="PAIR")
@click.argument("seq", metavar="EVENT", type=click.IntRange(min=1))
@click.option("--data", "data_path", required=True, metavar="CANDLES", help="The candles the decision used.")
@json_option
def replay_command(output, pair, seq, data_path, as_json):
    """Recompute a promotion decision from its event and evidence; exit 1 if it differs.

    Example:

        trainer models replay artifacts/ ETHUSDT 4 --data candles/
    """
    out = replay_decision(f"{output.rstrip('/')}/{pair}", seq, data_path)
    if as_json:
        _echo_json(
            {k: v for k, v in out.items() if k != "recomputed"} | {"verdict": out["recomputed"]["verdict"]}
        )
    elif out["reproduced"]:
        click.echo(
            f"{pair}: event {seq} reproduced: {out['recomputed']['verdict']} ({out['recomputed']['why']})."
        )
    else:
        click.echo(f"{pair}: event {seq} does not reproduce: {', '.join(out['differences'])}.")
    if not out["reproduced"]:
        raise SystemExit(1)


@models.command("promote", context_settings=CONTEXT_SETTINGS)
@click.argument("output", metavar="OUTPUT")
@click.argument("pair", metavar="PAIR", required=False)
@click.option(
    "--candidate",
    type=click.IntRange(min=1),
    metavar="VERSION",
    help="The version to promote (default: the challenger).",
)
@click.option(
    "--data",
    "data_path",
    required=True,
    metavar="CANDLES",
    help="Candles after the candidate's training data (file or folder).",
)
@click.option("--all", "every", is_flag=True, help="Every pair with a challenger, in parallel on Ray.")
@click.option("--force", is_flag=True, help="Promote without the gate (needs --reason).")
@click.option("--reason", metavar="TEXT", help="Why (recorded in the event log).")
@click.option(
    "--address",
    metavar="ADDR",
    help="With --all: a Ray cluster to join (default: RAY_ADDRESS, else a local Ray).",
)
@json_option
def promote_command(output, pair, candidate, data_path, every, force, reason, address, as_json):
    """Make a version the champion if it beats the champion on fresh candles.

    Scores the candidate and the champion on the same candles after both were trained, and
    promotes only if the candidate has enough non-overlapping trades, its net return's interval
    lies above zero, its advantage over the champion's net return has a lower bound above
    promotion.min_delta, and its drawdown is no worse than the champion's plus a margin. Every
    decision (promote or keep) is one event with its evidence. Exit code 0 for a decision, 1 when
    another command changed the pair meanwhile (nothing applied).

    Example:

        trainer models promote artifacts/ ETHUSDT --candidate 2 --data candles/

        trainer models promote artifacts/ --all --data candles/
    """
    if every == bool(pair):
        raise click.UsageError("Pass a PAIR, or --all for every pair with a challenger.")
    if every:
        if candidate or force:
            raise click.UsageError(
                "--all promotes each pair's challenger through the gate: drop --candidate/--force."
            )
        rows = promote_all(output, data_path, address)
        if as_json:
            _echo_json({"decisions": rows})
        else:
            if not rows:
                click.echo(f"No pair under {output} has a challenger.")
            for r in rows:
                champ = "-" if r.get("champion") is None else f"#{r['champion']}"
                cand = "-" if r.get("candidate") is None else f"#{r['candidate']}"
                click.echo(f"{r['pair']:<12} {cand:>5} {r['verdict']:<8} champion {champ:>4}  {r['why']}")
        if any(r["verdict"] == "error" for r in rows):
            raise SystemExit(1)
        return
    out = promote_pair(f"{output.rstrip('/')}/{pair}", candidate, data_path, force, reason)
    if as_json:
        _echo_json(out)
        return
    before = "-" if out["champion_before"] is None else f"#{out['champion_before']}"
    if out["verdict"] == "promote":
        click.echo(
            f"{out['pair']}: #{out['candidate']} promoted; champion {before} -> #{out['candidate']} ({out['why']})."
        )
    else:
        click.echo(
            f"{out['pair']}: #{out['candidate']} not promoted; champion stays {before} ({out['why']})."
        )
    click.echo(f"Evidence: {out['evidence']}")


@hookimpl
def trainer_register_commands(cli):
    """Add the ``models`` command group."""
    cli.add_command(models)

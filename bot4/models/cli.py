"""``bot4 models`` (alias ``bot4 model``): the model registry from the command line.

    bot4 models register FILE --name N   a .npy of linear weights, a LightGBM text model or a
                                         scikit-learn HistGradientBoosting .joblib/.pkl;
                                         parity-checked against the library's predict
    bot4 models list | show ID | status  what is registered, one model, a slot's assignment
                                         (status --journal DIR: per-model sub-positions)
    bot4 models promote ID               make ID the slot's champion
    bot4 models shadow ID                score ID beside the champion, never trade it
    bot4 models canary ID --pct P [--ramp 5,10,25,50]   P % of intents, ramping
    bot4 models ab ID [--pct 50] [--split tick|instrument]
    bot4 models rollback                 challenger out (or the previous champion back)
    bot4 models evaluate --journal DIR [--apply]   the four triggers; --apply rolls back or
                                         advances the canary
    bot4 models watch --journal DIR      the same, automatically, following the journal

Every action takes ``--registry DIR`` (default ``$BOT4_DATA_DIR/models``) and ``--slot``
(default ``default``). Changes are mirrored into PostgreSQL (``--dsn``, else ``BOT4_DSN``,
else the embedded server under ``--data-dir``) unless ``--no-db``; reading actions never
touch the database. Errors are one ``bot4: error:`` line and exit 1, nothing changed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

__all__ = ["add_parser", "cmd_models", "main"]

PARITY_RTOL = 1e-9
PARITY_ROWS = 2048


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``models`` (alias ``model``) to a ``bot4`` subparsers object."""
    p = subparsers.add_parser(
        "models", aliases=["model"], help="model registry: register, promote, shadow, canary, "
        "ab, rollback, evaluate, watch",
    )  # fmt: skip
    _fill(p)
    return p


def _common(p: argparse.ArgumentParser, write: bool) -> None:
    p.add_argument("--registry", help="registry directory (default: $BOT4_DATA_DIR/models)")
    p.add_argument("--slot", default="default", help="assignment slot (signals param model_slot)")
    if write:
        p.add_argument("--why", default="", help="reason, kept with the event")
        p.add_argument("--no-db", action="store_true", help="files only (backtests)")
        p.add_argument("--dsn", help="events database (default: $BOT4_DSN, else embedded)")
        p.add_argument("--data-dir", help="embedded server data directory")


def _fill(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="models_action", required=True)
    r = sub.add_parser("register", help="register a trained model file")
    _common(r, True)
    r.add_argument("file", help=".npy linear weights [bias, w_1..w_F] or a LightGBM text model")
    r.add_argument("--name", required=True)
    r.add_argument("--training", default="{}", help="training metadata: JSON or @file.json")
    r.add_argument("--validation", help="rows to check parity on (.npy, n x F); default random")
    r.add_argument("--seed", type=int, default=0, help="seed of the default parity rows")
    for name in ("list", "status"):
        q = sub.add_parser(name, help=f"{name} (read-only)")
        _common(q, False)
        q.add_argument("--json", action="store_true")
        if name == "status":
            q.add_argument(
                "--journal", help="journal directory: per-model virtual sub-positions from it"
            )
            q.add_argument("--horizon", type=int, default=20, help="markout horizon, fills")
    s = sub.add_parser("show", help="one model (read-only)")
    _common(s, False)
    s.add_argument("id", type=int)
    s.add_argument("--json", action="store_true")
    s.add_argument("--verify", action="store_true", help="re-hash the artifact")
    for name, text in (
        ("promote", "make ID the slot's champion"),
        ("shadow", "score ID beside the champion on every tick, never trade it"),
        ("canary", "give ID a share of the intents, ramping on passed checkpoints"),
        ("ab", "split intents between champion and ID"),
    ):
        c = sub.add_parser(name, help=text)
        _common(c, True)
        c.add_argument("id", type=int)
        if name in ("canary", "ab"):
            c.add_argument("--pct", type=float, default=5.0 if name == "canary" else 50.0)
            c.add_argument("--split", choices=["tick", "instrument"], default="tick")
        if name == "canary":
            c.add_argument("--ramp", help="percent steps, e.g. 5,10,25,50 (last passed: champion)")
    b = sub.add_parser("rollback", help="take the challenger out, or restore the last champion")
    _common(b, True)
    e = sub.add_parser("evaluate", help="the rollback triggers on the slot's champion/challenger")
    _common(e, True)
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--journal", help="journal directory: fills attributed by ORDER.model_id")
    src.add_argument("--outcomes", help=".npz with returns_<id> and hits_<id> arrays")
    e.add_argument("--horizon", type=int, default=20, help="markout horizon, fills (journal)")
    e.add_argument("--min-trades", type=int, default=100)
    e.add_argument("--checkpoint-trades", type=int, default=100)
    e.add_argument("--max-checkpoints", type=int, default=10)
    e.add_argument("--alpha", type=float, default=0.05)
    e.add_argument("--apply", action="store_true", help="roll back / advance the canary")
    e.add_argument("--json", action="store_true")
    w = sub.add_parser(
        "watch", help="follow a journal and roll back / ramp automatically (bot4 replay's monitor)"
    )
    _common(w, True)
    w.add_argument("--journal", required=True, help="the running instance's journal directory")
    w.add_argument("--horizon", type=int, default=20, help="markout horizon, fills")
    w.add_argument("--min-trades", type=int, default=100)
    w.add_argument("--checkpoint-trades", type=int, default=100)
    w.add_argument("--max-checkpoints", type=int, default=10)
    w.add_argument("--alpha", type=float, default=0.05)
    w.add_argument("--interval", type=float, default=1.0, help="seconds between journal reads")
    w.add_argument("--once", action="store_true", help="read what the journal has, then exit")
    p.set_defaults(fn=cmd_models)


def cmd_models(args: argparse.Namespace) -> int:
    """Run one ``bot4 models`` action; the exit status (errors raise Bot4Error)."""
    action = args.models_action
    server = None
    mirror = None
    if getattr(args, "no_db", True) is False and (action != "evaluate" or args.apply):
        from bot4.db.models import PgMirror
        from bot4.db.server import resolve_dsns

        dsn, _ledger, server = resolve_dsns(args.dsn, None, args.data_dir, start=True)
        mirror = PgMirror(dsn)
    from bot4.models.registry import Registry

    reg = Registry(args.registry, mirror)
    try:
        rc = _ACTIONS[action](reg, args)
    finally:
        if server is not None and server.started:
            server.stop()
    if reg.mirror_error:
        print(
            f"bot4: warning: committed in {reg.root}; database mirror failed "
            f"({reg.mirror_error}); the next bot4 models command sends it again",
            file=sys.stderr,
        )
    return rc


def _features():
    from bot4.signals.features import FEATURES

    return FEATURES


def _read_model(path: str):
    from bot4.models.artifact import ModelError, linear_model
    from bot4.models.trees import from_lightgbm_file, from_sklearn_file

    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{path}: no such file")
    feats = _features()
    if p.suffix == ".npy":
        try:
            w = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path}: not a readable .npy: {exc}") from None
        if w.dtype != np.float64 or w.shape != (len(feats) + 1,):
            raise ModelError(
                f"{path}: linear weights must be float64 of shape ({len(feats) + 1},) "
                f"(bias + {len(feats)} features {list(feats)}), got {w.dtype} {w.shape}"
            )
        return linear_model(w, feats, {"source": p.name}), None
    head = p.read_bytes()[:64]
    if head.startswith(b"tree\n"):
        return from_lightgbm_file(p, feats), "lightgbm"
    if p.suffix in (".joblib", ".pkl", ".pickle"):
        return from_sklearn_file(p, feats), "scikit-learn"
    raise ModelError(
        f"{path}: neither a .npy of linear weights, a LightGBM text model nor a "
        "scikit-learn HistGradientBoosting model (.joblib/.pkl)"
    )


def _parity(model, lib: str | None, path: str, args) -> dict:
    """Score the validation rows with the numba scorer and with the reference (the
    library's own predict; numpy for linear weights); refuse above PARITY_RTOL."""
    from bot4.models.artifact import ModelError
    from bot4.models.scoring import score_matrix
    from bot4.models.trees import lightgbm_predict, sklearn_predict

    nf = len(model.features)
    if args.validation:
        try:
            Z = np.load(args.validation, allow_pickle=False).astype(np.float64)
        except (OSError, ValueError) as exc:
            raise ModelError(f"{args.validation}: not a readable .npy: {exc}") from None
        if Z.ndim != 2 or Z.shape[1] != nf:
            raise ModelError(f"{args.validation}: validation rows must be (n, {nf}), got {Z.shape}")
        rows = f"{args.validation} ({len(Z)} rows)"
    else:
        Z = np.random.default_rng(args.seed).standard_normal((PARITY_ROWS, nf))
        rows = f"{PARITY_ROWS} standard-normal rows, seed {args.seed}"
    got = score_matrix(model, Z)
    if lib == "lightgbm":
        ref = lightgbm_predict(path, Z)
    elif lib == "scikit-learn":
        ref = sklearn_predict(path, Z)
    else:
        ref = model.lin[0] + Z @ np.asarray(model.lin[1:])
    diff = float(np.max(np.abs(got - ref))) if len(Z) else 0.0
    scale = max(float(np.max(np.abs(ref))) if len(Z) else 0.0, 1e-300)
    rel = diff / scale
    out = {"reference": lib or "numpy", "rows": rows, "max_abs_diff": diff, "max_rel_diff": rel}
    if not np.isfinite(got).all() or rel > PARITY_RTOL:
        raise ModelError(
            f"{path}: parity check failed: numba vs {out['reference']} max abs diff {diff:.3g} "
            f"(relative {rel:.3g} > {PARITY_RTOL:g}) on {rows}; not registered"
        )
    return out


def _register(reg, args) -> int:
    from bot4.models.artifact import ModelError

    model, lib = _read_model(args.file)
    try:
        t = args.training
        training = json.loads(Path(t[1:]).read_text() if t.startswith("@") else t)
    except (OSError, ValueError) as exc:
        raise ModelError(f"--training: not JSON: {exc}") from None
    from bot4.models.artifact import validate

    validate(model, args.file)  # NaN weights, bad indices: refused before any scoring
    parity = _parity(model, lib, args.file, args)
    doc = reg.register(
        model, name=args.name, features=_features(), training=training, why=args.why,
        parity=parity,
    )  # fmt: skip
    print(
        f"registered model {doc['id']} {doc['name']!r}: {doc['kind']}, {doc['n_params']:,} "
        f"parameters, sha256 {doc['sha256'][:16]}; parity vs {parity['reference']}: max abs "
        f"diff {parity['max_abs_diff']:.3g} on {parity['rows']}"
    )
    return 0


def _list(reg, args) -> int:
    reg.recover()
    docs = reg.models()
    if args.json:
        print(json.dumps(docs, indent=1))
        return 0
    roles = _roles(reg)
    for d in docs:
        role = ", ".join(roles.get(d["id"], [])) or "-"
        print(
            f"{d['id']:>4}  {d['name']:<20} {d['kind']:<7} {d['n_params']:>9,} params  "
            f"{d['sha256'][:12]}  {role}"
        )
    if not docs:
        print(f"no models in {reg.root}")
    return 0


def _roles(reg) -> dict[int, list[str]]:
    roles: dict[int, list[str]] = {}
    for slot in reg.slots():
        a = reg.assignment(slot)
        if a.champion:
            roles.setdefault(a.champion, []).append(f"{slot}: champion")
        if a.challenger:
            roles.setdefault(a.challenger, []).append(f"{slot}: {a.mode} {a.pct:g}%")
    return roles


def _show(reg, args) -> int:
    from bot4.models.artifact import ModelError, sha256_file

    doc = reg.model(args.id)
    m = reg.load(args.id, prefault=False)
    doc = {**doc, "schema_matches_build": m.fingerprint == _fp()}
    if args.verify:
        sha = sha256_file(reg.object_path(doc["sha256"]))
        if sha != doc["sha256"]:
            raise ModelError(
                f"model {args.id}: artifact hashes to {sha}, registered {doc['sha256']}"
            )
        doc["verified"] = True
    doc["events"] = [e for e in reg.events() if e["model"] == args.id]
    if args.json:
        print(json.dumps(doc, indent=1))
        return 0
    for k in ("id", "name", "kind", "n_params", "bytes", "sha256", "fingerprint"):
        print(f"{k:>12}: {doc[k]}")
    print(f"{'features':>12}: {', '.join(doc['features'])}")
    print(
        f"{'schema':>12}: {'matches this build' if doc['schema_matches_build'] else 'DIFFERS from this build'}"
    )
    print(f"{'training':>12}: {json.dumps(doc['training'])}")
    print(f"{'parity':>12}: {json.dumps(doc['parity'])}")
    for e in doc["events"]:
        print(f"{'':>12}  {_event_line(e)}")
    return 0


def _fp() -> str:
    from bot4.models.artifact import feature_fingerprint

    return feature_fingerprint(_features())


def _event_line(e: dict) -> str:
    import time

    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e["ts_ns"] / 1e9))
    slot = f" slot {e['slot']} gen {e['generation']}" if e["slot"] else ""
    why = f" — {e['why']}" if e["why"] else ""
    return f"{when}Z {e['event']:<11} model {e['model']}{slot} by {e['who']}{why}"


def _status(reg, args) -> int:
    reg.recover()
    a = reg.assignment(args.slot)
    evs = [e for e in reg.events() if e["slot"] == args.slot]
    subs = _sub_positions(reg, args, a, evs) if args.journal else None
    if args.json:
        doc = {"assignment": a.to_dict(), "events": evs}
        if subs is not None:
            doc["sub_positions"] = subs
        print(json.dumps(doc, indent=1))
        return 0
    if not a.generation:
        print(f"slot {args.slot}: no assignment in {reg.root}")
        return 0
    line = f"slot {args.slot} generation {a.generation}: champion {a.champion}"
    if a.challenger:
        line += f", challenger {a.challenger} ({a.mode} {a.pct:g}%, split {a.split}"
        line += f", ramp {list(a.ramp)} step {a.ramp_step})" if a.ramp else ")"
    print(line)
    for e in evs[-10:]:
        print(f"  {_event_line(e)}")
    if subs is not None:
        print(f"  virtual sub-positions ({args.journal}; marks: last fill prices; risk "
              "limits are on the total):")  # fmt: skip
        for r in subs["rows"]:
            print(
                f"    model {r['model']:>3}  instrument {r['instrument']:>3}  position "
                f"{r['position']:>7}  fills {r['fills']:>5}  pnl {r['pnl']:>10} units"
            )
        for m, to in subs["handed_over"].items():
            print(f"    model {m} rolled back: its inventory is model {to}'s")
        if not subs["rows"]:
            print("    no attributed fills")
    return 0


def _sub_positions(reg, args, a, evs) -> dict:
    """Per-model virtual sub-positions from a journal (``bot4.models.rollout``); a model
    rolled back in this slot hands its inventory to the champion of that moment (the
    event's ``inventory_to``, else the slot's champion now)."""
    from bot4.models.artifact import ModelError
    from bot4.models.rollout import attribution_from_journal

    if not Path(args.journal).is_dir():
        raise ModelError(f"{args.journal}: no such journal directory")
    att = attribution_from_journal(args.journal, max(1, args.horizon))
    marks = dict(att.last_price)
    handed = {}
    for e in evs:
        if e["event"] == "rolled_back" and e["model"] != a.champion:
            to = int(e.get("details", {}).get("inventory_to") or a.champion)
            if e["model"] not in att.subs.heir and to:
                att.subs.hand_over(e["model"], to, marks)
                handed[e["model"]] = to
    return {"rows": att.subs.rows(marks), "handed_over": handed, "marks": marks}


def _change(reg, args) -> int:
    from bot4.models import registry as R
    from bot4.models.artifact import ModelError

    feats = _features()
    act = args.models_action
    if act == "promote":
        a = R.promote(reg, args.slot, args.id, features=feats, why=args.why)
    elif act == "rollback":
        a = R.rollback(reg, args.slot, why=args.why)
    else:
        ramp: tuple[float, ...] = ()
        if getattr(args, "ramp", None):
            try:
                ramp = tuple(float(x) for x in args.ramp.split(","))
            except ValueError:
                raise ModelError(
                    f"--ramp {args.ramp!r}: expected percentages like 5,10,25,50"
                ) from None
        a = R.set_challenger(
            reg, args.slot, args.id, act, pct=getattr(args, "pct", 0.0),
            split=getattr(args, "split", "tick"), ramp=ramp, features=feats, why=args.why,
        )  # fmt: skip
    print(f"slot {args.slot} generation {a.generation}: {_event_line(a.event)}")
    return 0


def _evaluate(reg, args) -> int:
    from bot4.models.artifact import ModelError
    from bot4.models.evaluate import EvalConfig, evaluate_stream
    from bot4.models.rollout import apply_verdicts, outcomes_from_journal

    a = reg.assignment(args.slot)
    if not a.challenger:
        raise ModelError(f"slot {args.slot}: no challenger to evaluate")
    if args.journal:
        if not Path(args.journal).is_dir():
            raise ModelError(f"{args.journal}: no such journal directory")
        out = outcomes_from_journal(args.journal, args.horizon)
    else:
        try:
            z = np.load(args.outcomes, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ModelError(f"{args.outcomes}: not a readable .npz: {exc}") from None
        out = {
            int(k.split("_", 1)[1]): {"returns": z[k], "hits": z[f"hits_{k.split('_', 1)[1]}"]}
            for k in z.files
            if k.startswith("returns_")
        }
    empty = {"returns": np.zeros(0), "hits": np.zeros(0, np.int64)}
    c, h = out.get(a.champion, empty), out.get(a.challenger, empty)
    cfg = EvalConfig(
        alpha=args.alpha, min_trades=args.min_trades, checkpoint_trades=args.checkpoint_trades,
        max_checkpoints=args.max_checkpoints,
    )  # fmt: skip
    verdicts = evaluate_stream(c["returns"], c["hits"], h["returns"], h["hits"], cfg)
    last = verdicts[-1] if verdicts else None
    passed = sum(1 for v in verdicts if v.passed)
    action = apply_verdicts(reg, args.slot, verdicts) if args.apply else "none"
    res = {
        "slot": args.slot,
        "champion": a.champion,
        "challenger": a.challenger,
        "trades": {"champion": int(len(c["returns"])), "challenger": int(len(h["returns"]))},
        "checkpoints": [v.to_dict() for v in verdicts],
        "action": action,
    }
    if args.json:
        print(json.dumps(res, indent=1, default=float))
        return 0
    print(
        f"slot {args.slot}: champion {a.champion} ({len(c['returns'])} trades) vs challenger "
        f"{a.challenger} ({len(h['returns'])} trades): {len(verdicts)} checkpoint(s), {passed} passed"
    )
    if last is not None and last.rollback:
        print(f"  checkpoint {last.checkpoint}: ROLLBACK: {last.reason()}")
    elif not verdicts:
        print(f"  no checkpoint yet (every {cfg.checkpoint_trades} challenger trades, at least "
              f"{cfg.min_trades} per model)")  # fmt: skip
    print(f"  action: {action}")
    return 0


def _watch(reg, args) -> int:
    """Follow a journal with the monitor ``bot4 replay`` runs (bot4.models.rollout): fills
    attributed by ORDER.model_id, a look every ``--checkpoint-trades`` challenger trades,
    a failed look rolls the slot back and a passed one moves a canary a step — ordinary
    registry changes the running signals stage picks up at its next batch. The window is
    the journal from its start, started again when the slot's assignment changes under
    it (an operator's command). Live, the challenger's open orders are not cancelled (the
    monitor has no ring to the OMS): they are named, and work or expire at the venue."""
    import time

    from bot4.journal.tail import JournalTail
    from bot4.models.artifact import ModelError
    from bot4.models.evaluate import EvalConfig
    from bot4.models.rollout import RolloutConfig, RolloutMonitor
    from bot4.records import RT_EXEC_REPORT, RT_ORDER

    if not Path(args.journal).is_dir():
        raise ModelError(f"{args.journal}: no such journal directory")
    cfg = RolloutConfig(
        max(1, args.horizon),
        EvalConfig(alpha=args.alpha, min_trades=args.min_trades,
                   checkpoint_trades=args.checkpoint_trades, max_checkpoints=args.max_checkpoints),
    )  # fmt: skip
    mon = RolloutMonitor(reg, args.slot, cfg)
    tail = JournalTail(args.journal)

    def left(orders) -> None:
        if orders:
            print(f"slot {args.slot}: {len(orders)} open order(s) of model {mon.challenger} "
                  "left with the OMS (not cancelled by watch)")  # fmt: skip

    try:
        while True:
            frames = tail.read(1 << 16)
            a = reg.assignment(args.slot)
            if a.generation != mon.assignment.generation:
                mon.assignment = a
                mon._start()
            for _i, rtype, recs in frames:  # a look as soon as a frame makes one due
                if rtype == RT_ORDER:
                    mon.attr.on_orders(recs)
                elif rtype == RT_EXEC_REPORT:
                    mon.attr.on_reports(recs)
                for rec in mon.check(time.time_ns(), dict(mon.attr.last_price), left):
                    what = "ROLLBACK: " + rec["reason"] if rec["rollback"] else rec["action"]
                    print(
                        f"slot {args.slot}: checkpoint {rec['checkpoint']} "
                        f"({rec['trades']['challenger']} challenger trades, "
                        f"{rec['trades']['champion']} champion): {what}",
                        flush=True,
                    )
            if not frames:
                if args.once:
                    break
                time.sleep(max(0.01, args.interval))
    except KeyboardInterrupt:
        pass
    finally:
        tail.close()
    a = reg.assignment(args.slot)
    print(f"slot {args.slot} generation {a.generation}: champion {a.champion}, challenger "
          f"{a.challenger or '-'}; {len(mon.actions)} look(s)")  # fmt: skip
    return 0


_ACTIONS = {
    "register": _register,
    "list": _list,
    "show": _show,
    "status": _status,
    "promote": _change,
    "shadow": _change,
    "canary": _change,
    "ab": _change,
    "rollback": _change,
    "evaluate": _evaluate,
    "watch": _watch,
}


def main(argv: list[str] | None = None) -> int:
    """``python -m bot4.models.cli ...``: the same actions, one-line errors."""
    from bot4.records.errors import Bot4Error

    p = argparse.ArgumentParser(prog="bot4 models")
    _fill(p)
    args = p.parse_args(argv)
    try:
        return args.fn(args) or 0
    except Bot4Error as exc:
        print(f"bot4: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

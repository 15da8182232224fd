"""The ``fedsim`` command line: a thin shell over the Python API.

Exit status: 0 success (also ``--help`` and ``--version``); 2 bad input
(scenario, data, arguments) with a message naming the file, the key path and
what was expected; 1 anything else; 130 interrupted. Tracebacks are printed
only with ``--debug``. What ``fedsim --help`` says is ``DESCRIPTION`` and
``EXAMPLES`` below, written for users (this docstring is for developers).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from fedsim import __version__
from fedsim.errors import InputError

log = logging.getLogger("fedsim")

DESCRIPTION = """\
fedsim simulates what federated learning costs: real PyTorch training gives
each round's accuracy, a discrete-event model of links and devices its time."""

EXAMPLES = """\
examples:
  # a first run, a few minutes; the report goes to reports/quickstart/
  fedsim scenario scenarios/quickstart.yaml
  # the same learning on slower uplinks: only the system simulation runs again
  fedsim scenario scenarios/quickstart.yaml --set system.clients.uplink='2 Mbps'
  # check a scenario or a study without running anything
  fedsim validate scenarios/mobile.yaml
  # what a parameter study would run, what is cached, how long it would take
  fedsim sweep scenarios/studies/link_vs_pruning.yaml --plan
  # every option of a command
  fedsim scenario --help

Units in scenarios: "20 Mbps" (bits/s), "5 MB/s" (bytes/s), "50 ms", "1 MiB".
Exit status: 0 done; 2 bad input (the message names the file, key and value);
1 any other error; 130 interrupted (finished rounds are kept: run it again to
resume). More in README.md and docs/ (the distribution is fedsim-cost)."""


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that raises InputError instead of exiting, so main() decides.
    (``--help`` and ``--version`` still end in argparse's ``SystemExit(0)``.)"""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError(f"{self.prog}: {message}")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")


def build_parser() -> argparse.ArgumentParser:
    """The ``fedsim`` argument parser; its ``--help`` is the user's overview
    (``DESCRIPTION``, one line per command, ``EXAMPLES``)."""
    parser = _ArgumentParser(prog="fedsim", description=DESCRIPTION, epilog=EXAMPLES,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"fedsim {__version__}",
                        help="print the version and exit")
    _add_common(parser)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_ArgumentParser,
                                title="commands", metavar="COMMAND")

    def command(name: str, line: str) -> argparse.ArgumentParser:
        """A subcommand whose one-line description is both its entry in
        ``fedsim --help`` and the head of ``fedsim NAME --help``."""
        return sub.add_parser(name, help=line, description=line)

    run = command("scenario", "run a scenario: train, simulate the system, write the report")
    _add_common(run)
    run.add_argument("path", type=Path, help="scenario YAML file")
    run.add_argument("--out", type=Path, help="output directory (default reports/<name>/)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a scenario value, e.g. system.clients.uplink='2 Mbps' (repeatable)")
    run.add_argument("--rounds", type=int, help="override rounds.max")
    run.add_argument("--methods", help="comma-separated subset of the scenario's methods")
    run.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override device")
    run.add_argument("--workers", help="worker processes for the methods: auto or N (1: one after "
                                       "another); sets parallel.workers (docs/performance.md)")
    run.add_argument("--continue-from", choices=["cpu", "cuda"],
                     help="continue each method's cached run on this other device, where there is "
                          "one, from its last checkpoint (e.g. a GPU run cut short, finished on the "
                          "CPU); its own cache entry, and the report says which device ran which rounds")
    how = run.add_mutually_exclusive_group()
    how.add_argument("--force", action="store_true", help="recompute every stage, ignoring the cache")
    how.add_argument("--cached-only", action="store_true",
                     help="train nothing: report each method up to its last cached round (e.g. an "
                          "interrupted run, or a GPU's run on a machine without one)")

    val = command("validate", "check a scenario (or a study) without running it")
    _add_common(val)
    val.add_argument("path", type=Path, help="scenario or study YAML file")
    val.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a value before checking it (repeatable)")

    sweep = command("sweep", "run a parameter study: a grid of scenarios, one report")
    _add_common(sweep)
    sweep.add_argument("path", type=Path, help="study YAML file")
    sweep.add_argument("--out", type=Path, help="output directory (default reports/<study name>/)")
    sweep.add_argument("--executor", choices=["local", "ray"], default="local",
                       help="run the cells in local processes (default) or as Ray tasks")
    sweep.add_argument("--address", help="Ray cluster address (auto or HOST:PORT); default: start a local Ray")
    sweep.add_argument("--workers", type=int, help="local executor: number of worker processes")
    sweep.add_argument("--plan", action="store_true", help="print the plan (stages to run, cached, estimate) and exit")
    sweep.add_argument("--cached-only", action="store_true",
                       help="train nothing: report each task up to its last cached round; a task with "
                            "no cached training fails, naming it")

    rep = command("replay", "report a run trained elsewhere on a scenario's network")
    _add_common(rep)
    rep.add_argument("run", type=Path, help="CSV of the run: round, accuracy[, participants, "
                                            "down_bytes, up_bytes] (docs/replay.md)")
    rep.add_argument("--system", type=Path, required=True, metavar="SCENARIO",
                     help="scenario YAML whose network, devices, clients and targets are used")
    rep.add_argument("--method", help="the run's name in the report, and the rows of a CSV with a "
                                      "method column; a method of the scenario lends its mask "
                                      "(payload, compute); default: the CSV's name")
    rep.add_argument("--out", type=Path, help="output directory (default "
                                              "reports/<scenario>-replay-<method>/)")
    rep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a scenario value (repeatable)")

    data = command("data", "fetch or inspect a dataset (mnist, fashion-mnist)")
    _add_common(data)
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=_ArgumentParser)
    fetch = data_sub.add_parser("fetch", help="download (or import) a dataset into the cache")
    _add_common(fetch)
    fetch.add_argument("name", help="mnist or fashion-mnist")
    fetch.add_argument("--from", dest="from_dir", type=Path, help="directory holding the four IDX files")
    fetch.add_argument("--force", action="store_true", help="fetch again even if cached")
    info = data_sub.add_parser("info", help="counts, checksum, source and path of a cached dataset")
    _add_common(info)
    info.add_argument("name", help="mnist or fashion-mnist")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    imp = data_sub.add_parser("import-traces", help="convert FedScale's device and behaviour pickles "
                              "into fedsim's trace CSVs (profiles.csv, sessions.csv)")
    _add_common(imp)
    imp.add_argument("--device", type=Path, help="FedScale client_device_capacity pickle")
    imp.add_argument("--behave", type=Path, help="FedScale client_behave_trace pickle")
    imp.add_argument("--out", type=Path, required=True, help="directory for the CSV files")
    imp.add_argument("--clients", type=int, help="number of fedsim clients (default: the entries)")
    imp.add_argument("--horizon", help="repeat the sessions up to this time, e.g. '7 d' "
                     "(default: one pass of the trace)")
    imp.add_argument("--reference-ms", type=float, default=5.0,
                     help="ms per sample pass of fedsim's reference device (default 5: 10 s / (5 x 400))")

    bench = command("bench", "measure the performance figures of docs/performance.md")
    _add_common(bench)
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument("--only", help="comma-separated subset: learn,pretrain,system,sweep,workload,schedule")
    return parser


def scenario_from_args(args: argparse.Namespace):
    """The scenario a parsed ``fedsim scenario`` command line runs: the file
    with its ``--set``, ``--rounds`` and ``--device`` overrides, restricted to
    ``--methods``."""
    from fedsim import config

    overrides = list(args.overrides)
    if args.rounds is not None:
        overrides.append(f"rounds.max={args.rounds}")
    if args.device is not None:
        overrides.append(f"device={args.device}")
    if getattr(args, "workers", None) is not None:
        overrides.append(f"parallel.workers={args.workers}")
    scenario = config.load(args.path, overrides=overrides)
    if args.methods:
        scenario = config.select_methods(scenario, [m.strip() for m in args.methods.split(",")])
    return scenario


def _cmd_scenario(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from fedsim import config, pipeline

    scenario = scenario_from_args(args)
    config.check_output_dir(args.out if args.out is not None else Path("reports") / scenario.name)
    result = pipeline.run(scenario, out_dir=args.out, base_dir=args.path.resolve().parent,
                          force=args.force, progress=not args.quiet, command=["fedsim", *argv],
                          cached_only=args.cached_only, continue_from=args.continue_from)
    if not args.quiet:
        print(pipeline.summary_line(result))
    print(f"report written to {result.out_dir}/ (summary.md, report.pdf, metrics.csv, rounds.csv)")
    return 0


def _cmd_replay(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from fedsim import config
    from fedsim.replay.run import default_out_dir, replay

    scenario = config.load(args.system, overrides=args.overrides)
    label = args.method or None
    if args.out is not None:
        config.check_output_dir(args.out)
    result = replay(args.run, scenario, label=label, base_dir=args.system.resolve().parent,
                    out_dir=args.out, command=["fedsim", *argv], progress=not args.quiet,
                    write=False)
    out = args.out if args.out is not None else default_out_dir(scenario, next(iter(result.methods)))
    config.check_output_dir(out)
    from fedsim.pipeline.outputs import write_outputs

    write_outputs(result, out, ["fedsim", *argv], not args.quiet)
    print(f"replay report written to {out}/ (summary.md, metrics.csv, rounds.csv)")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from fedsim import config

    raw = config.read_yaml(args.path)
    if isinstance(raw, dict) and "study" in raw:
        from fedsim import study

        plan = study.load(args.path, overrides=args.overrides)
        print(f"{args.path}: valid study '{plan.name}' with {len(plan.cells)} cells")
        return 0
    scenario = config.load(args.path, overrides=args.overrides)
    from fedsim.data.resolve import resolve_data_files  # data.npz, data.partition.file

    scenario = resolve_data_files(scenario, Path(args.path).resolve().parent)
    print(f"{args.path}: valid scenario '{scenario.name}' with methods "
          f"{', '.join(scenario.methods)}; {scenario.rounds.max} rounds max; targets "
          f"{', '.join(f'{t:g}' for t in scenario.targets)}")
    return 0


def _cmd_sweep(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from fedsim import study

    spec = study.load(args.path)
    if args.out is not None:
        from fedsim import config

        config.check_output_dir(args.out)
    if args.plan:
        print(study.plan(spec).describe())
        return 0
    result = study.run(spec, out_dir=args.out, executor=args.executor, address=args.address,
                       workers=args.workers, progress=not args.quiet, command=["fedsim", *argv],
                       cached_only=args.cached_only)
    print(f"sweep written to {result.out_dir}/ (sweep.csv, report.pdf, summary.md)")
    return 0 if not result.failed else 1


def _import_traces(args: argparse.Namespace) -> int:
    from fedsim.data.fedscale import import_traces
    from fedsim.units import parse_duration

    horizon = None
    if args.horizon is not None:
        try:
            horizon = parse_duration(args.horizon)
        except ValueError as exc:
            raise InputError(f"--horizon: {exc}") from None
    written = import_traces(args.out, device=args.device, behave=args.behave, n_clients=args.clients,
                            horizon_s=horizon, reference_ms=args.reference_ms)
    keys = {"profiles": "trace", "sessions": "sessions"}
    for name, path in written.items():
        print(f"wrote {path}  (system.clients.{keys[name]}: {path.resolve()})")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from fedsim import data

    if args.data_command == "import-traces":
        return _import_traces(args)
    if args.data_command == "fetch":
        dataset = data.fetch(args.name, from_dir=args.from_dir, force=args.force)
        print(f"{dataset.name}: {len(dataset.train_labels)} train / {len(dataset.test_labels)} test "
              f"images from {dataset.source} -> {dataset.path}")
        return 0
    facts = data.info(args.name)
    if args.json:
        print(json.dumps(facts, indent=2, sort_keys=True))
    else:
        for key, value in facts.items():
            print(f"{key}: {value}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from fedsim import bench

    only = [s.strip() for s in args.only.split(",")] if args.only else None
    figures = bench.run(only=only, progress=not (args.quiet or args.json))
    if args.json:
        print(json.dumps(figures, indent=2, sort_keys=True))
    else:
        for key, value in figures.items():
            print(f"{key}: {value}")
    return 0


_COMMANDS = {
    "validate": _cmd_validate,
    "data": _cmd_data,
    "bench": _cmd_bench,
}


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill PID``; also what a batch scheduler sends) ends a run as
    Ctrl-C does: finished rounds are checkpointed and the exit status is 130.
    Background jobs of a non-interactive shell ignore SIGINT, so ``kill`` is
    how such a run is stopped."""
    import signal
    import threading

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedsim`` console script; returns the exit status
    (0, 1, 2 or 130, see the module docstring) and raises nothing but with
    ``--debug``, where errors propagate with their traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    quiet = "--quiet" in argv
    logging.basicConfig(
        level=logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s" if debug else "%(message)s",
        force=True,
    )
    # fedsim's own loggers speak at INFO (a line per stage); libraries stay quiet.
    log.setLevel(logging.DEBUG if debug else (logging.WARNING if quiet else logging.INFO))
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as done:  # --help or --version has printed its text
            return int(done.code or 0)
        with _terminate_as_interrupt():
            if args.command == "replay":
                return _cmd_replay(args, argv)
            if args.command in ("scenario", "sweep"):
                return (_cmd_scenario if args.command == "scenario" else _cmd_sweep)(args, argv)
            return _COMMANDS[args.command](args)
    except InputError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished stages and checkpoints are kept; run again to resume",
              file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        print(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

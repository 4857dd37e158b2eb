"""`aggregate`, `tables` and `plots`: from a sweep folder to DomainBed's tables and figures.

Nothing heavy is imported at module level; each command imports pandas etc. when it runs.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ddg_sweep.errors import UserError

SELECTION_KEYS = ("iid", "oracle", "loo", "swad")
TABLE_FORMATS = ("markdown", "latex", "text")


def register(subparsers) -> None:
    aggregate = subparsers.add_parser(
        "aggregate", help="read every results.jsonl of a sweep, select models, write tables",
        description="Read every run's results.jsonl below --input-dir and write records.parquet, "
                    "table.parquet, summary.json and tables.txt (DomainBed's text) to "
                    "--output-dir.")
    aggregate.add_argument("--input-dir", required=True, type=Path,
                           help="sweep folder (holding runs/<job_id>/ or DomainBed run folders)")
    aggregate.add_argument("--output-dir", required=True, type=Path, help="aggregate folder")
    aggregate.add_argument("--include-unfinished", action="store_true",
                           help="also read runs without a `done` file")
    aggregate.add_argument("--include-stopped", action="store_true",
                           help="also read the runs a search's ASHA stopped early (tagged `stopped`)")
    aggregate.add_argument("--rows-by", default="", metavar="HPARAM[,HPARAM]",
                           help="hparams whose values make rows of their own, e.g. guidance_form,cfg_scale "
                                "(`DDG target w=3`): selection then never picks across them (full-benchmark: "
                                "the space's own)")
    aggregate.add_argument("--no-cache", action="store_true",
                           help="parse every run, neither reading nor writing OUTPUT_DIR/.parsed, the "
                                "cache of parsed runs a re-aggregate takes unchanged runs from")
    aggregate.set_defaults(func=run_aggregate)

    tables = subparsers.add_parser(
        "tables", help="print DomainBed's tables and the paper's layout from an aggregate",
        description="Render the tables of an aggregate folder made by `aggregate`.")
    tables.add_argument("--input", required=True, type=Path, help="aggregate folder")
    tables.add_argument("--format", default="text", help=f"one of {', '.join(TABLE_FORMATS)}")
    tables.add_argument("--selection", nargs="+", default=None, metavar="RULE",
                        help=f"model selection rules among {', '.join(SELECTION_KEYS)} "
                             "(default: all the aggregate has)")
    tables.add_argument("--output", type=Path, default=None, help="file to write (default stdout)")
    tables.add_argument("--show-hparams", action="store_true",
                        help="instead of the tables, list the run each cell chose: trial seed, "
                             "accuracies, step, hparams seed, run folder, job id, hyperparameters")
    tables.add_argument("--include-search", action="store_true",
                        help="also show the rows of searches (`DDG [search optuna]`, ORACLE ones so labelled)")
    tables.add_argument("--importance", action="store_true",
                        help="instead of the tables, each search's hyperparameter importance over its finished "
                             "trials (optuna.importance; needs the search extra)")
    tables.set_defaults(func=run_tables)

    plots = subparsers.add_parser(
        "plots", help="PNG figures: accuracy against hparams, training curves",
        description="Draw accuracy against lmd, cfg_scale and stage1_steps, and training curves.")
    plots.add_argument("--input", required=True, type=Path, help="aggregate folder")
    plots.add_argument("--output-dir", required=True, type=Path, help="folder for the PNG files")
    plots.set_defaults(func=run_plots)


def run_aggregate(args) -> int:
    from ddg_sweep.report.aggregate import aggregate

    summary = aggregate(args.input_dir, args.output_dir, include_unfinished=args.include_unfinished,
                        include_stopped=args.include_stopped, cache=not args.no_cache,
                        rows_by=[name.strip() for name in args.rows_by.split(",") if name.strip()])
    if summary.get("parse_cache_note"):
        print(f"note: {summary['parse_cache_note']}")
    cache = summary.get("parse_cache")
    print(f"records read: {summary['total_records']}  runs: {summary['runs']}  "
          f"unfinished runs skipped: {summary['unfinished_runs_skipped']}  "
          f"malformed lines skipped: {summary['malformed_lines']}"
          + (f"  malformed swad.json: {summary['malformed_swad']}"
             if summary["malformed_swad"] else "")
          + (f"  runs parsed: {cache['runs_parsed']}  reused from the cache: {cache['runs_reused']}"
             if cache else "  runs parsed: all (--no-cache)"))
    print(f"wrote {args.output_dir}/records.parquet, table.parquet, tables.txt")
    return 0


def run_tables(args) -> int:
    from ddg_sweep.report import aggregate_folder
    from ddg_sweep.report.render import notes
    from ddg_sweep.report.render.tables import check_format, check_selections, render, visible

    fmt = check_format(args.format)
    if args.importance:
        from ddg_sweep.report.render.importance import render_importance

        sys.stdout.write(render_importance(args.input))
        return 0
    table, summary = aggregate_folder.load_aggregate(args.input)
    selected = aggregate_folder.load_selected(args.input)
    selections = None
    if args.selection:
        selections = check_selections(args.selection)
        missing = [s for s in selections if s not in summary["selections"]]
        if missing:
            raise UserError(f"the aggregate in {args.input} has no results for selection "
                            f"{', '.join(missing)}; it has {', '.join(summary['selections']) or 'none'}"
                            + (" (swad needs runs with swad.json)" if "swad" in missing else ""))
    shown = selections or [s for s in summary["selections"]]
    for selection in shown:
        mixed = notes.version_mix(selected, selection)
        if mixed:
            print(f"warning: the {selection} tables mix versions or devices: {'; '.join(mixed)}",
                  file=sys.stderr)
    if args.show_hparams:
        from ddg_sweep.report.render.listing import list_selected

        if selected is None or "run_id" not in selected:
            raise UserError(f"{args.input} was aggregated by an older version without the chosen "
                            "runs; run `aggregate` again to list them")
        text = list_selected(selected, visible(summary, args.include_search), shown)
    else:
        text = render(table, summary, fmt, selections, selected, include_search=args.include_search)
    if args.output is None:
        sys.stdout.write(text)
    else:
        aggregate_folder.atomic_write_text(args.output, text)
        print(f"wrote {args.output}")
    return 0


def run_plots(args) -> int:
    from ddg_sweep.report.plots.figures import make_plots

    written, skipped = make_plots(args.input, args.output_dir)
    for message in skipped:
        print(f"skipped: {message}")
    for path in written:
        print(f"wrote {path}")
    return 0

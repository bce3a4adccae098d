"""``fastalign demo``: the seed experiment on synthetic data (calls :func:`fastalign.demo`)."""
import os

import fastalign

from .common import EXIT_OK, progress_enabled, say, set_threads


def add_parser(sub, parents, fmt):
    """Register the ``demo`` sub-command on ``sub`` (an argparse sub-parsers action)."""
    p = sub.add_parser(
        "demo", parents=parents, formatter_class=fmt,
        help="run a self-contained demonstration on synthetic data",
        description="Generate a synthetic misaligned tilt series, align it and write the "
                    "results (calls fastalign.demo).")
    p.add_argument("--out", "-o", metavar="DIR", default="fastalign_demo",
                   help="output directory (default: ./fastalign_demo)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing demo output")
    p.add_argument("--size", type=int, metavar="N",
                   help="phantom and detector size in pixels (default: the demo's, 256)")
    p.add_argument("--max-iter", type=int, metavar="N",
                   help="maximum outer alignment iterations (default: the demo's)")
    p.set_defaults(func=run)


def run(args):
    """Run ``fastalign demo``; prints one line per reconstruction (RMS shift error, time)."""
    set_threads(args.threads)
    out = os.path.abspath(args.out)
    options = {"progress": progress_enabled(args), "overwrite": args.overwrite}
    if args.size is not None:
        options["n"] = args.size
    if args.max_iter is not None:
        options["max_iter"] = args.max_iter
    result = fastalign.demo(out, **options)
    say(args, f"fastalign: demo written to {out}")
    for rec, err in result["errors_px"].items():
        secs = result["timings_s"][rec]
        say(args, f"fastalign: {rec}: RMS shift error {err:.4f} px (gauge removed), "
                  f"{secs:.1f} s")
    return EXIT_OK

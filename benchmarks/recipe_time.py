"""How long `sdviz train` takes: each stage's time from a run's record, and the whole run.

Issue 3's bar: the full recipe finishes on a 2-core CPU without a GPU in about 2.5 hours.
`sdviz train` records each stage's wall time (`<stage>_seconds`, a resumed stage adding
to its own) and, when it ran all stages in lanes, the whole run's (`total_seconds`).
This prints them, and the wall clock that the lanes give for those stage times
(`sdviz.training.lanes.schedule`): for a run whose stages were run one by one, or to
see what more lanes would give. `--seconds STAGE=S` supplies a stage the record lacks
(say, timed in another run); such stages are marked "given".

    python benchmarks/recipe_time.py WORK_FOLDER [--lanes 2] [--seconds unet=7080]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sdviz.training.lanes import schedule
from sdviz.training.recipe import STAGES

TARGET_MINUTES = 150.0  # "about 2.5 hours": met within 5%


def _stage_seconds(text: str) -> tuple[str, float]:
    stage, _, value = text.partition("=")
    if stage not in STAGES or not value:
        raise argparse.ArgumentTypeError(f"expected STAGE=SECONDS with a stage of {STAGES}")
    try:
        return stage, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path, help="the run's work folder (has record.json)")
    parser.add_argument("--lanes", type=int, default=2)
    parser.add_argument("--seconds", type=_stage_seconds, action="append", default=[])
    args = parser.parse_args(argv)
    path = args.work / "record.json"
    if not path.exists():
        parser.error(f"{path} does not exist: give the work folder of a `sdviz train` run")
    record = json.loads(path.read_text())
    seconds = {s: record[f"{s}_seconds"] for s in STAGES if f"{s}_seconds" in record}
    given = dict(args.seconds)
    seconds.update(given)
    missing = [s for s in STAGES if s not in seconds]
    if missing:
        parser.error(f"the record has no time for {missing}: add --seconds STAGE=SECONDS")
    times = schedule(seconds, STAGES, args.lanes)
    print(f"{'stage':<11} {'minutes':>8}  {'from':>6} {'to':>6}  source")
    for stage in STAGES:
        start, end = times[stage]
        source = "given" if stage in given else "measured"
        print(
            f"{stage:<11} {seconds[stage] / 60:8.1f}  {start / 60:6.1f} {end / 60:6.1f}  {source}"
        )
    total = max(end for _, end in times.values()) / 60
    one = sum(seconds.values()) / 60
    ok = "met" if total <= TARGET_MINUTES * 1.05 else "NOT met"
    print(f"\nstages one after another: {one:.1f} min")
    print(f"{args.lanes} lanes: {total:.1f} min (about {TARGET_MINUTES:.0f} min wanted: {ok})")
    if "total_seconds" in record:
        print(
            f"the run itself (lanes {record.get('lanes')}): {record['total_seconds'] / 60:.1f} min"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

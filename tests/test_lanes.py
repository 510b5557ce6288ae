"""`sdviz.training.lanes`: the recipe's stages in parallel processes, each after what it needs.

The scheduler runs real processes here, but small ones: each stage is a Python one-liner
that may wait for files (written by another stage, or by the test) before it ends. Tests
read the order of events from the scheduler's own record (its log of stages started and
finished) and make stages overlap with those files, not with sleeps of chosen lengths.
(The real stages run in tests/test_train.py.)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sys

import pytest
import torch

from sdviz.commands import main as cli_main
from sdviz.training import recipe, workdir
from sdviz.training.lanes import (
    NEEDS,
    StageFailed,
    ready,
    run_lanes,
    runs_alone,
    schedule,
    upstream,
)

# argv: stage, threads, folder, exit code, then the files it waits for before it ends
FAKE_STAGE = """
import json, os, sys, time
stage, threads, folder, code, *waits = sys.argv[1:]
with open(os.path.join(folder, stage + ".pid.tmp"), "w") as f:
    f.write(str(os.getpid()))
os.replace(os.path.join(folder, stage + ".pid.tmp"), os.path.join(folder, stage + ".pid"))
for name in waits:
    for _ in range(1200):  # a minute at most (a stuck test), then say so and fail
        if os.path.exists(os.path.join(folder, name)):
            break
        time.sleep(0.05)
    else:
        open(os.path.join(folder, stage + ".timeout"), "w").close()
        sys.exit(9)
if int(code):
    sys.exit(int(code))
with open(os.path.join(folder, stage + ".json"), "w") as f:
    json.dump({"threads": int(threads)}, f)
"""
POLL = 0.05  # how often run_lanes looks at its processes (seconds)


def fake(folder, waits=None, codes=None):
    """`command` for run_lanes: stage S waits for the files `waits[S]` in `folder`."""

    def command(stage: str, threads: int) -> list[str]:
        code = (codes or {}).get(stage, 0)
        barriers = (waits or {}).get(stage, ())
        argv = [stage, str(threads), str(folder), str(code), *barriers]
        return [sys.executable, "-c", FAKE_STAGE, *argv]

    return command


def lane_events(messages: list[str]) -> list[tuple[str, str]]:
    """(stage, "started" or "finished"), in the order run_lanes logged them."""
    found = (re.match(r"lanes: (\w+) (started|finished)", m) for m in messages)
    return [m.groups() for m in found if m]


def test_needs_cover_the_recipe_and_its_order_is_a_valid_one():
    assert set(NEEDS) == set(recipe.STAGES)
    for i, stage in enumerate(recipe.STAGES):  # each stage after all it needs
        assert upstream(stage) <= set(recipe.STAGES[:i]), stage
    assert upstream("assemble") == set(NEEDS) - {"assemble"}
    assert upstream("unet") == {"data", "vae", "clip", "encode", "decoder", "clip_image"}
    # the first stage, the UNet (data-parallel on every core) and the last run alone
    assert [s for s in NEEDS if runs_alone(s)] == ["data", "unet", "assemble"]
    assert ready(["vae", "clip", "encode", "unet"], {"data"}) == ["vae", "clip"]
    assert ready(["unet", "decoder"], {"data", "vae", "encode"}) == ["decoder"]


def test_run_lanes_runs_two_at_once_each_after_what_it_needs(tmp_path):
    # clip cannot end before the decoder has: only a second lane can take the VAE's
    # stages through while clip runs (with one, clip would wait for ever and fail)
    messages = []
    command = fake(tmp_path, {"clip": ["decoder.json"]})
    run_lanes(recipe.STAGES, command, lanes=2, threads=2, log=messages.append, poll=POLL)
    order = lane_events(messages)
    assert sorted(order) == sorted(itertools.product(recipe.STAGES, ("started", "finished")))
    for stage in recipe.STAGES:
        for need in NEEDS[stage]:
            assert order.index((need, "finished")) < order.index((stage, "started")), stage
        threads = json.loads((tmp_path / f"{stage}.json").read_text())["threads"]
        assert threads == (2 if runs_alone(stage) else 1), stage
    running = itertools.accumulate(1 if what == "started" else -1 for _, what in order)
    assert max(running) == 2
    # while clip ran, the other lane did the VAE, encode and the decoder (the log says
    # which processes it found ended at each look, in no order within one look)
    for stage in ("vae", "encode", "decoder"):
        assert order.index(("clip", "started")) < order.index((stage, "finished"))
        assert order.index((stage, "started")) < order.index(("clip", "finished"))
    assert order.index(("clip", "finished")) < order.index(("unet", "started"))
    assert "lanes: clip started with 1 thread" in messages


def test_one_lane_runs_the_stages_in_order(tmp_path):
    messages = []
    run_lanes(recipe.STAGES, fake(tmp_path), lanes=1, threads=2, log=messages.append, poll=POLL)
    assert lane_events(messages) == [
        (stage, what) for stage in recipe.STAGES for what in ("started", "finished")
    ]
    assert all((tmp_path / f"{stage}.json").exists() for stage in recipe.STAGES)


def test_a_failed_stage_stops_the_other_lane_and_what_waits(tmp_path):
    # vae waits for a file that never comes: only being stopped ends it. clip fails once
    # vae has started.
    command = fake(tmp_path, {"vae": ["never"], "clip": ["vae.pid"]}, {"clip": 3})
    with pytest.raises(StageFailed, match="stage 'clip' failed .exit code 3.*--resume"):
        run_lanes(recipe.STAGES, command, lanes=2, threads=2, log=lambda m: None, poll=POLL)
    pid = int((tmp_path / "vae.pid").read_text())
    assert not (tmp_path / "vae.timeout").exists()  # stopped, not waited for
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # and gone
    assert sorted(p.stem for p in tmp_path.glob("*.json")) == ["data"]


def test_run_lanes_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="lanes must be at least 1"):
        run_lanes(recipe.STAGES, fake(tmp_path), lanes=0, threads=2)
    with pytest.raises(ValueError, match=r"unknown stages \['wheer'\]"):
        run_lanes(["data", "wheer"], fake(tmp_path), lanes=2, threads=2)
    assert not list(tmp_path.iterdir())  # nothing ran


def test_a_subset_of_stages_counts_the_others_as_done(tmp_path):
    run_lanes(["unet", "assemble"], fake(tmp_path), 2, 2, log=lambda m: None, poll=POLL)
    assert sorted(p.stem for p in tmp_path.glob("*.json")) == ["assemble", "unet"]


@pytest.mark.parametrize("flag", ["--lanes", "--threads"])
def test_train_rejects_zero_lanes_or_threads(tmp_path, capsys, flag):
    out = tmp_path / "mini"
    assert cli_main(["train", "--quick", "--out", str(out), flag, "0"]) == 2
    assert "expected a whole number >= 1, got 0" in capsys.readouterr().err
    assert not tmp_path.joinpath("mini.work").exists()


def test_a_stage_process_gets_the_run_s_settings(tmp_path):
    parser = recipe.add_arguments(argparse.ArgumentParser())
    args = parser.parse_args(
        ["--quick", "--out", str(tmp_path / "m"), "--seed", "7", "--unet-minutes", "5"]
    )
    args.work = str(tmp_path / "w")
    cmd = recipe._stage_command(args, "unet", 1)
    assert cmd[:3] == [sys.executable, "-m", "sdviz.training.recipe"]
    child = parser.parse_args(cmd[3:])
    assert (child.stage, child.resume, child.threads) == ("unet", True, 1)
    for name in ("quick", "out", "work", "seed", "device", "unet_minutes"):
        assert getattr(child, name) == getattr(args, name), name


def test_schedule_gives_the_wall_clock_of_the_lanes():
    minutes = dict(data=1, vae=20, clip=30, encode=5, decoder=30, clip_image=15, unet=100)
    minutes["assemble"] = 1
    times = schedule(minutes, recipe.STAGES, lanes=2)
    assert times["clip"] == (1, 31) and times["encode"] == (21, 26)
    assert times["decoder"] == (26, 56) and times["clip_image"] == (31, 46)
    assert times["unet"] == (56, 156)  # alone, after the decoder
    assert times["assemble"] == (156, 157)  # data + vae + encode + decoder + unet + assemble
    one = schedule(minutes, recipe.STAGES, lanes=1)
    assert max(end for _, end in one.values()) == sum(minutes.values())
    with pytest.raises(ValueError, match=r"no time given for stages \['unet'\]"):
        schedule({k: v for k, v in minutes.items() if k != "unet"}, recipe.STAGES, 2)


def test_run_lanes_starts_the_stages_in_the_order_schedule_says(tmp_path):
    # One run two ways: planned from stage times, and run with files that make its
    # stages end in the plan's order (clip after encode, the decoder after clip_image).
    seconds = {"data": 0.3, "vae": 0.5, "clip": 2.0, "encode": 0.3, "decoder": 2.0}
    seconds.update(clip_image=0.3, unet=0.5, assemble=0.3)
    planned = schedule(seconds, recipe.STAGES, lanes=2)
    waits = {"clip": ["encode.json"], "decoder": ["clip_image.json"]}
    messages = []
    run_lanes(
        recipe.STAGES, fake(tmp_path, waits), lanes=2, threads=2, log=messages.append, poll=POLL
    )
    order = lane_events(messages)
    started = [stage for stage, what in order if what == "started"]
    assert started == sorted(recipe.STAGES, key=lambda stage: planned[stage][0])
    # clip_image runs beside the decoder, which the UNet waits for
    assert planned["clip_image"][0] < planned["decoder"][1] == planned["unet"][0]
    assert order.index(("clip_image", "started")) < order.index(("decoder", "finished"))
    assert order.index(("decoder", "finished")) < order.index(("unet", "started"))


def test_recipe_time_benchmark_reads_a_record(tmp_path, capsys, benchmark_module):
    minutes = dict(data=1, vae=20, clip=30, encode=5, decoder=30, clip_image=15, assemble=1)
    record = {f"{s}_seconds": 60.0 * m for s, m in minutes.items()}
    (tmp_path / "record.json").write_text(json.dumps(record))
    bench = benchmark_module("recipe_time")
    with pytest.raises(SystemExit):  # the UNet's time is missing
        bench.main([str(tmp_path)])
    assert "no time for ['unet']: add --seconds STAGE=SECONDS" in capsys.readouterr().err
    assert bench.main([str(tmp_path), "--seconds", "unet=6000"]) == 0
    out = capsys.readouterr().out
    assert "2 lanes: 157.0 min" in out and "stages one after another: 202.0 min" in out
    assert re.search(r"unet +100\.0 +56\.0 +156\.0  given", out)  # after the decoder
    assert bench.main([str(tmp_path), "--seconds", "unet=4800"]) == 0
    assert "2 lanes: 137.0 min (about 150 min wanted: met)" in capsys.readouterr().out


def test_the_last_stage_left_running_is_granted_every_thread(tmp_path):
    # clip and clip_image each end only once granted every thread: the grant's file is
    # what they wait for (as the real stages take a grant up from a file,
    # `workdir.following_threads`)
    messages = []

    def grant(stage: str, threads: int) -> None:
        messages.append(f"grant: {stage} {threads}")
        (tmp_path / f"{stage}.granted").write_text(str(threads))

    command = fake(tmp_path, {"clip": ["clip.granted"], "clip_image": ["clip_image.granted"]})
    run_lanes(
        recipe.STAGES, command, lanes=2, threads=2, log=messages.append, grant=grant, poll=POLL
    )
    # clip, then clip_image, each alone while the UNet waits for it; the UNet starts
    # with every thread (it runs alone), so it needs no grant
    assert [m for m in messages if m.startswith("grant:")] == [
        "grant: clip 2",
        "grant: clip_image 2",
    ]
    at = messages.index
    assert at("lanes: decoder finished") < at("grant: clip 2") < at("lanes: clip finished")
    assert at("lanes: clip finished") < at("grant: clip_image 2")
    assert at("grant: clip_image 2") < at("lanes: clip_image finished")
    runs = {s: json.loads((tmp_path / f"{s}.json").read_text()) for s in recipe.STAGES}
    assert runs["unet"]["threads"] == 2 and runs["decoder"]["threads"] == 1


def test_a_stage_process_takes_up_the_threads_it_is_granted(tmp_path):
    lines = []
    follow = workdir.following_threads(tmp_path, "unet", lines.append)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        follow("unet step 0")  # no grant yet
        assert torch.get_num_threads() == 1 and lines == ["unet step 0"]
        workdir.threads_file(tmp_path, "unet").parent.mkdir()
        workdir.threads_file(tmp_path, "unet").write_text("2")
        follow("unet step 50")
        assert torch.get_num_threads() == 2 and lines[-1] == "unet: now on 2 threads"
        follow("unet step 100")  # said once
        assert lines[-1] == "unet step 100"
        workdir.threads_file(tmp_path, "unet").write_text("")  # caught mid-write: ignored
        follow("unet step 150")
        assert torch.get_num_threads() == 2 and lines[-1] == "unet step 150"
    finally:
        torch.set_num_threads(before)


def test_the_record_lock_is_released_and_a_stale_one_is_named(tmp_path):
    path = tmp_path / "record.json"
    with workdir.locked(path):
        assert (tmp_path / "record.json.lock").exists()
    assert not (tmp_path / "record.json.lock").exists()
    (tmp_path / "record.json.lock").write_text("")  # left by a run that was killed
    with pytest.raises(TimeoutError, match="record.json.lock has been held .* delete it"):
        with workdir.locked(path, wait=0.2):
            pass


def test_the_unet_stage_runs_alone_with_every_thread():
    # it waits for every stage but assembly, so that its data-parallel processes have
    # all the cores (sdviz.training.parallel)
    assert runs_alone("unet")
    seconds = {s: 10.0 for s in recipe.STAGES} | {"decoder": 100.0, "unet": 50.0}
    times = schedule(seconds, recipe.STAGES, lanes=2)
    assert times["unet"][0] == max(times[s][1] for s in ("decoder", "clip_image", "clip"))

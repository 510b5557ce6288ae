"""`sdviz train --quick`: the whole recipe end to end, then load and generate.

How long the recipe takes is measured, not tested: `python benchmarks/recipe_time.py WORK`
prints each stage's time from a run's record.json.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from transformers import CLIPModel, CLIPTokenizer

from sdviz.commands import main as cli_main
from sdviz.training.recipe import FULL, QUICK, STAGES


class QuickRun(NamedTuple):
    out: Path  # the pipeline folder (its work folder is mini.work beside it)
    code: int  # what `sdviz train` returned
    rng_before: torch.Tensor  # torch's global (CPU) RNG state before the run ...
    rng_after: torch.Tensor  # ... and after it


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, device) -> QuickRun:
    out = tmp_path_factory.mktemp("train") / "mini"
    # one lane: the stages run in this process (tests/test_lanes.py runs them in parallel)
    argv = ["train", "--quick", "--out", str(out), "--threads", "1", "--lanes", "1"]
    argv += ["--device", str(device)]
    before = torch.get_rng_state()
    code = cli_main(argv)
    return QuickRun(out, code, before, torch.get_rng_state())


def test_quick_training_runs_every_stage_and_writes_a_pipeline(quick_run):
    out, code = quick_run.out, quick_run.code
    assert code == 0
    work = json.loads((out.parent / "mini.work" / "record.json").read_text())
    assert all(f"{stage}_seconds" in work for stage in STAGES)  # each stage ran and was timed
    record = json.loads((out / "training_record.json").read_text())
    assert record["unet_steps_done"] == QUICK.unet_steps
    # the pipeline's UNet is the last EMA snapshot
    assert record["unet_snapshot"] == f"unet_ema_{QUICK.unet_steps:06d}.safetensors"
    # the sampler reads the UNet's output as what the recipe trained it to predict
    scheduler = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["prediction_type"] == record["unet_prediction_type"]
    assert record["unet_prediction_type"] == FULL.unet_prediction_type
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "clip"):
        assert (out / part).is_dir(), part
    assert not list(out.rglob("*.bin")), "weights must be saved as safetensors"


def test_recipe_settings_are_frozen_and_quick_keeps_the_full_objective():
    with pytest.raises(dataclasses.FrozenInstanceError):
        FULL.unet_steps = 1  # type: ignore[misc]
    changed = {k for k, v in dataclasses.asdict(QUICK).items() if getattr(FULL, k) != v}
    objective = {"unet_prediction_type", "unet_snr_gamma", "unet_snr_floor"}
    assert not changed & (objective | {"unet_where_oversample", "clip_hard_negative_lr"})
    assert all(getattr(QUICK, k) < getattr(FULL, k) for k in changed - {"unet_lr_drops"})


def test_seeded_models_are_built_without_the_global_rng():
    # sdviz.training.live builds its models this way: the weights of torch.manual_seed(3),
    # from a local generator, the global one neither reseeded nor advanced
    from sdviz.builder import tiny_pipeline
    from sdviz.seeding import drawing_from
    from sdviz.training.clip import build_clip
    from sdviz.training.unet import build_unet

    tokenizer = tiny_pipeline().tokenizer
    builds = {"unet": lambda: build_unet(32, 8), "clip": lambda: build_clip(tokenizer, 32)}
    for name, build in builds.items():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(3)
            reference = build().state_dict()
        before = torch.get_rng_state()
        with drawing_from(torch.Generator().manual_seed(3)):
            weights = build().state_dict()
        assert torch.equal(torch.get_rng_state(), before), name
        assert all(torch.equal(v, reference[k]) for k, v in weights.items()), name


def test_quick_training_leaves_the_global_rng_alone(quick_run):
    # every stage builds its models from a generator of its own (seeding.drawing_from)
    # and trains with generators of its own: the global RNG is not reseeded, nor advanced
    assert quick_run.code == 0
    assert torch.equal(quick_run.rng_after, quick_run.rng_before)


def test_vae_training_draws_from_its_seed_only():
    # the weights depend on `seed` alone, whatever state the global RNG is in, and the
    # global RNG is left as it was
    from sdviz.training.vae import finetune_decoder, train_vae

    images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)

    def trained(global_seed: int) -> tuple[dict, bool]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(global_seed)  # a state the training must not read
            before = torch.get_rng_state()
            vae = train_vae(_tiny_vae(), images, 2, batch=2, crop=8, seed=1, log=_quiet)
            vae = finetune_decoder(vae, images, 2, batch=2, seed=1, log=_quiet)
            return vae.state_dict(), torch.equal(torch.get_rng_state(), before)

    (a, kept_a), (b, kept_b) = trained(5), trained(6)
    assert kept_a and kept_b
    assert all(torch.equal(v, b[k]) for k, v in a.items())


def _quiet(message: str) -> None:
    pass


def test_quick_clip_stage_ends_with_hard_negatives(quick_run):
    out = quick_run.out
    log = (out.parent / f"{out.name}.work" / "train.log").read_text()
    negatives = [int(n) for n in re.findall(r"clip step \d+/\d+ .*\(\+(\d+) negatives\)", log)]
    assert negatives[0] == 0 and max(negatives) > 0, log  # plain CLIP, then with negatives


def test_quick_pipeline_loads_and_generates(quick_run):
    out = quick_run.out
    pipe = StableDiffusionPipeline.from_pretrained(out, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.vae.config.scaling_factor != 0.18215  # measured on the data
    image = pipe(
        "a red circle",
        num_inference_steps=3,
        guidance_scale=2.0,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images[0]
    assert image.shape == (64, 64, 3) and np.isfinite(image).all()


def test_quick_clip_ranks_with_both_towers(quick_run):
    out = quick_run.out
    clip = CLIPModel.from_pretrained(out / "clip")
    tok = CLIPTokenizer.from_pretrained(out / "clip")
    ids = tok(["a red circle", "a blue square"], padding="max_length", return_tensors="pt")
    with torch.no_grad():
        out_ = clip(input_ids=ids.input_ids, pixel_values=torch.zeros(1, 3, 64, 64))
    assert out_.logits_per_image.shape == (1, 2)


def test_resume_skips_finished_stages(quick_run):
    out = quick_run.out
    code = cli_main(
        ["train", "--quick", "--out", str(out), "--resume", "--stage", "vae", "--threads", "1"]
    )
    assert code == 0
    log = (out.parent / "mini.work" / "train.log").read_text()
    assert "vae: already done" in log
    # a resumed stage adds its time to its own clock, not to another stage's
    work = out.parent / "mini.work"
    saved = (work / "record.json").read_text()
    rec = json.loads(saved)
    rec.update(unet_seconds=5000.0, clip_seconds=1000.0)
    (work / "record.json").write_text(json.dumps(rec))
    try:
        argv = ["train", "--quick", "--out", str(out), "--resume", "--stage", "unet"]
        began = time.time()
        assert cli_main(argv + ["--threads", "1"]) == 0
        took = time.time() - began  # what the resumed stage may add, at most
        after = json.loads((work / "record.json").read_text())
    finally:
        (work / "record.json").write_text(saved)
    assert after["unet_steps_done"] == rec["unet_steps_done"]  # nothing left to train
    assert 5000.0 <= after["unet_seconds"] <= 5000.0 + took + 0.05  # recorded to 0.1 s
    assert after["clip_seconds"] == 1000.0


def test_the_unet_stage_trains_in_one_process_per_thread(quick_run):
    out = quick_run.out
    work = out.parent / "mini.work"
    log = (work / "train.log").read_text()
    assert "unet: 1 process, batch 8" in log  # the quick run's --threads 1
    before = torch.get_num_threads()
    try:  # by hand on two threads: two processes (resumed: nothing is left to train)
        argv = ["train", "--quick", "--out", str(out), "--resume", "--stage", "unet"]
        assert cli_main(argv + ["--threads", "2"]) == 0
    finally:
        torch.set_num_threads(before)
    assert "unet: 2 processes, batch 8" in (work / "train.log").read_text()
    steps = json.loads((work / "record.json").read_text())["unet_steps_done"]
    assert steps == QUICK.unet_steps and (work / f"unet_ema_{steps:06d}.safetensors").exists()


def test_quick_unet_oversamples_captions_that_say_where(quick_run):
    from sdviz.shapes import says_where
    from sdviz.training import data

    out = quick_run.out
    work = out.parent / "mini.work"
    log = (work / "train.log").read_text()
    said, total, rows = map(
        int, re.search(r"unet: (\d+) of (\d+) captions say where; (\d+) rows", log).groups()
    )
    _, captions = data.make_dataset(work, QUICK.images)
    assert said == sum(map(says_where, captions)) > 0 and total == len(captions)
    assert rows == total + QUICK.unet_where_oversample * said


def test_unet_learning_rate_steps_down(quick_run):
    from sdviz.training.data import warmup_lr

    out = quick_run.out
    state = torch.load(out.parent / "mini.work" / "unet_state.pt", weights_only=False)
    (drop_at, dropped), last = QUICK.unet_lr_drops[-1], state["step"] - 1
    assert last >= drop_at, "the quick run must pass its learning-rate drop"
    lr = state["opt"]["param_groups"][0]["lr"]
    assert lr == pytest.approx(dropped * warmup_lr(last, 300))


def test_quick_pipeline_makes_the_latents_its_unet_learned(quick_run):
    # The encode stage balanced the latent channels and `assemble` folded that into the
    # VAE: the shipped VAE must encode the training images to the cached UNet latents.
    from sdviz.autoencoder import encode
    from sdviz.training import data

    out = quick_run.out
    work = out.parent / "mini.work"
    cached = torch.load(work / "latents.pt")
    images, _ = data.make_dataset(work, len(cached["latents"]))
    pipe = StableDiffusionPipeline.from_pretrained(out, use_safetensors=True)
    z = encode(pipe, torch.from_numpy(images).permute(0, 3, 1, 2))  # (n, c, h, w), scaled
    assert torch.allclose(z, cached["latents"].float(), atol=2e-2)
    assert z.mean(dim=(0, 2, 3)).abs().max() < 1e-2  # every channel centred ...
    std = z.std(dim=(0, 2, 3))
    assert (std - std.mean()).abs().max() < 1e-2  # ... with one spread
    raw_std = cached["channel_std"]
    assert raw_std.max() / raw_std.min() > 1.05, "the quick VAE's channels should differ"


def _tiny_vae():
    from sdviz.seeding import drawing_from
    from sdviz.training.vae import build_vae

    with drawing_from(torch.Generator().manual_seed(0)):  # the global RNG left alone
        return build_vae(16).eval()


def test_contrastive_loss_is_clips_own_and_hard_negatives_raise_it(quick_run):
    from sdviz.training.clip import contrastive_loss

    clip = CLIPModel.from_pretrained(quick_run.out / "clip")
    side = clip.config.vision_config.image_size
    ids, pixels = torch.randint(3, 50, (4, 6)), torch.randn(4, 3, side, side)
    out = clip(input_ids=ids, pixel_values=pixels, return_loss=True)
    torch.testing.assert_close(contrastive_loss(out.logits_per_image), out.loss)
    logits = torch.zeros(4, 6)
    logits[torch.arange(4), torch.arange(4)] = 5.0
    easy, hard = logits.clone(), logits.clone()
    hard[0, 4] = 5.0  # image 0 likes a negative caption as much as its own
    assert contrastive_loss(hard) > contrastive_loss(easy)
    # the negatives are not images' captions: the text-to-image half ignores them
    easy[:, 4:] = -5.0
    torch.testing.assert_close(
        contrastive_loss(easy) - contrastive_loss(easy[:, :4]),
        (
            torch.nn.functional.cross_entropy(easy, torch.arange(4))
            - torch.nn.functional.cross_entropy(easy[:, :4], torch.arange(4))
        )
        / 2,
    )
    with pytest.raises(ValueError, match="batch \\+ negatives"):
        contrastive_loss(torch.zeros(4, 3))


def test_balance_channels_keeps_images_and_balances_latents():
    from sdviz.training.vae import balance_channels, channel_stats

    vae = _tiny_vae()
    x = torch.rand(6, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        before = vae.encode(x).latent_dist
        image = vae.decode(before.mode()).sample
        mean, std = channel_stats(before.mode())
        balance_channels(vae, mean, std, target=2.0)
        after = vae.encode(x).latent_dist
        image2 = vae.decode(after.mode()).sample
    gain = (2.0 / std)[None, :, None, None]
    expected = (before.mode() - mean[None, :, None, None]) * gain
    assert torch.allclose(after.mode(), expected, atol=1e-5)
    assert torch.allclose(after.std, before.std * gain, rtol=1e-4)  # log-variance moved too
    assert torch.allclose(image2, image, atol=1e-5)  # the decoder undoes it first
    m2, s2 = channel_stats(after.mode())
    assert torch.allclose(m2, torch.zeros(4), atol=1e-5)
    assert torch.allclose(s2, torch.full((4,), 2.0), atol=1e-4)


def test_balance_channels_rejects_bad_input_and_changes_nothing():
    from diffusers import AutoencoderKL

    from sdviz.training.vae import balance_channels

    vae = _tiny_vae()
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    ones = torch.ones(4)
    with pytest.raises(ValueError, match="one value per latent channel"):
        balance_channels(vae, torch.zeros(3), ones, 1.0)
    with pytest.raises(ValueError, match="positive"):
        balance_channels(vae, torch.zeros(4), torch.tensor([1.0, 0.0, 1.0, 1.0]), 1.0)
    with pytest.raises(ValueError, match="positive"):
        balance_channels(vae, torch.zeros(4), ones, 0.0)
    assert all(torch.equal(v, before[k]) for k, v in vae.state_dict().items())
    plain = AutoencoderKL(
        block_out_channels=(16,), norm_num_groups=8, use_quant_conv=False, use_post_quant_conv=False
    )
    with pytest.raises(ValueError, match="quant_conv"):
        balance_channels(plain, torch.zeros(4), ones, 1.0)


def test_train_unet_on_the_test_device(tmp_path, device):
    # SDVIZ_DEVICE=cuda (benchmarks/gpu_check.sh) runs this on the GPU.
    from safetensors.torch import load_file

    from sdviz.builder import tiny_pipeline
    from sdviz.training.data import tokenize
    from sdviz.training.unet import train_unet

    pipe = tiny_pipeline()
    unet, te, tok = pipe.unet, pipe.text_encoder, pipe.tokenizer
    start = {k: v.clone() for k, v in unet.state_dict().items()}
    c, s = unet.config.in_channels, unet.config.sample_size
    latents = torch.randn(8, c, s, s)
    ids = tokenize(tok, ["a red circle"] * 8)
    ema, done = train_unet(
        unet,
        te,
        latents,
        ids,
        tokenize(tok, [""]),
        3,
        tmp_path,
        batch=4,
        snapshot_every=3,
        ema_decay=0.5,
        device=device,
    )
    assert done == 3 and next(ema.parameters()).device.type == device.type
    snap = load_file(tmp_path / "unet_ema_000003.safetensors")  # saved from the CPU
    assert all(v.device.type == "cpu" for v in snap.values())
    assert any(not torch.equal(snap[k], v) for k, v in start.items())


def test_a_stopped_unet_run_keeps_its_clock_for_the_resumed_one(tmp_path):
    # A killed run writes no record.json entry; its time must come from the resumable state.
    from sdviz.builder import tiny_pipeline
    from sdviz.training.data import tokenize
    from sdviz.training.unet import train_unet
    from sdviz.training.workdir import previous_seconds, record

    pipe = tiny_pipeline()
    c, s = pipe.unet.config.in_channels, pipe.unet.config.sample_size
    latents = torch.randn(4, c, s, s)
    ids, empty = tokenize(pipe.tokenizer, ["a red circle"] * 4), tokenize(pipe.tokenizer, [""])
    assert previous_seconds(tmp_path, "unet") == 0.0  # nothing run yet
    seconds = []
    for steps in (2, 4):  # the second call resumes the first, as after a kill
        train_unet(
            pipe.unet, pipe.text_encoder, latents, ids, empty, steps, tmp_path, batch=2,
            snapshot_every=2, resume=True, log=print,
        )  # fmt: skip
        state = torch.load(tmp_path / "unet_state.pt", weights_only=False)
        assert state["step"] == steps
        seconds.append(state["seconds"])
    assert 0.0 < seconds[0] < seconds[1]  # the resumed run counted on from the stopped one
    assert previous_seconds(tmp_path, "unet") == seconds[1]
    assert previous_seconds(tmp_path, "vae") == 0.0  # other stages do not resume part-way
    record(tmp_path, "unet_seconds", 1234.5)  # a finished stage's own record wins
    assert previous_seconds(tmp_path, "unet") == 1234.5


def test_data_parallel_unet_training_takes_the_same_steps_as_one_process(tmp_path):
    # Two processes that each take half of every batch and average their gradients must
    # end where one process on the whole batches ends (same draws, same optimizer steps).
    import copy

    from safetensors.torch import load_file

    from sdviz.builder import tiny_pipeline
    from sdviz.training.data import tokenize
    from sdviz.training.unet import train_unet

    pipe = tiny_pipeline()
    c, s = pipe.unet.config.in_channels, pipe.unet.config.sample_size
    latents = torch.randn(8, c, s, s, generator=torch.Generator().manual_seed(0))
    ids = tokenize(pipe.tokenizer, ["a red circle", "a blue square"] * 4)
    empty = tokenize(pipe.tokenizer, [""])
    runs, raw = {}, {}
    for n in (1, 2):
        unet = copy.deepcopy(pipe.unet)
        ema, done = train_unet(
            unet, pipe.text_encoder, latents, ids, empty, 3, tmp_path / f"p{n}", batch=4,
            snapshot_every=2, ema_decay=0.5, processes=n, log=print,
        )  # fmt: skip
        assert done == 3
        runs[n] = load_file(tmp_path / f"p{n}" / "unet_ema_000003.safetensors")
        assert all(torch.equal(v, ema.state_dict()[k]) for k, v in runs[n].items())
        raw[n] = unet.state_dict()
    start = pipe.unet.state_dict()
    assert any(not torch.allclose(runs[1][k], v) for k, v in start.items())  # it trained
    moved = sum(float((v - start[k]).norm() ** 2) for k, v in runs[1].items()) ** 0.5
    apart = sum(float((runs[2][k] - v).norm() ** 2) for k, v in runs[1].items()) ** 0.5
    assert apart < 0.01 * moved, (apart, moved)
    assert all(torch.allclose(raw[2][k], v, atol=1e-6) for k, v in raw[1].items())  # in place
    assert sorted(p.name for p in (tmp_path / "p2").iterdir()) == sorted(
        p.name for p in (tmp_path / "p1").iterdir()
    )  # the same snapshots, written once


def test_encode_captions_encodes_each_distinct_caption_once():
    from sdviz.builder import tiny_pipeline
    from sdviz.training.data import tokenize
    from sdviz.training.unet import encode_captions

    pipe = tiny_pipeline()
    te = pipe.text_encoder.eval()
    captions = ["a red circle", "a blue square", "a red circle", "", "a blue square"]
    ids = tokenize(pipe.tokenizer, captions)
    contexts, row = encode_captions(te, ids, chunk=2)  # chunks smaller than the rows
    assert len(contexts) == 3 and row.shape == (len(captions),)
    assert row[0] == row[2] and row[1] == row[4] and len({int(i) for i in row}) == 3
    with torch.no_grad():
        direct = te(ids).last_hidden_state  # (rows, L, d)
    assert contexts.shape[1:] == direct.shape[1:] == (ids.shape[1], te.config.hidden_size)
    assert torch.allclose(contexts[row], direct, atol=1e-5)


def test_train_rejects_threads_that_do_not_split_the_unet_batch(tmp_path, capsys):
    out = tmp_path / "mini"
    argv = ["train", "--quick", "--out", str(out), "--threads", "3"]
    assert QUICK.unet_batch % 3  # one process per thread: 3 cannot share the batch
    assert cli_main(argv) == 1
    assert "give a number of threads that divides it" in capsys.readouterr().err
    assert not (tmp_path / "mini.work").exists() and not out.exists()


def test_train_rejects_a_device_it_cannot_use(tmp_path, capsys):
    out = tmp_path / "mini"
    assert cli_main(["train", "--quick", "--out", str(out), "--device", "gpu"]) == 2
    assert "Unknown device" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert cli_main(["train", "--quick", "--out", str(out), "--device", "cuda"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "mini.work").exists()  # nothing started


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
def test_training_target_is_what_the_sampler_inverts(kind):
    # the target the UNet learns must give back x0 and the noise through sdviz.diffusion,
    # which converts model outputs the way the schedulers do
    from sdviz.diffusion import predicted_x0, to_epsilon
    from sdviz.training.objective import noise_scheduler, training_target

    sched = noise_scheduler()
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 4, 8, 8, generator=gen), torch.randn(3, 4, 8, 8, generator=gen)
    t = torch.tensor([0, 500, 999])
    abar = sched.alphas_cumprod[t]
    x_t = sched.add_noise(x0, noise, t)
    target = training_target(sched, x0, noise, t, kind)
    assert torch.allclose(predicted_x0(x_t, target, abar, kind), x0, atol=1e-4)
    assert torch.allclose(to_epsilon(x_t, target, abar, kind), noise, atol=1e-4)
    if kind == "v_prediction":  # diffusers' own definition agrees
        assert torch.allclose(target, sched.get_velocity(x0, noise, t), atol=1e-5)


def test_loss_weights_put_min_snr_on_x0_for_either_target():
    from sdviz.training.objective import loss_weights, noise_scheduler

    abar = noise_scheduler().alphas_cumprod
    snr = abar / (1 - abar)
    for kind, per_x0 in (("epsilon", snr), ("v_prediction", snr + 1)):
        w = loss_weights(snr, kind, 5.0)
        # weight x (squared error on the target per squared error on x0) = min(snr, 5)
        assert torch.allclose(w * per_x0, torch.clamp(snr, max=5.0), rtol=1e-5)
    assert torch.equal(loss_weights(snr, "v_prediction", None), torch.ones_like(snr))
    # a floor lifts the x0 weight of the noisiest steps only
    floored = loss_weights(snr, "epsilon", 5.0, snr_floor=1.0) * snr
    assert torch.allclose(floored, torch.clamp(snr, 1.0, 5.0), rtol=1e-5)
    assert floored[-1] == 1.0 and floored[0] == 5.0 and snr[-1] < 0.01
    for bad in (dict(snr_floor=-1.0), dict(snr_floor=6.0), dict(snr_gamma=None, snr_floor=1.0)):
        with pytest.raises(ValueError, match="snr_"):
            loss_weights(snr, "epsilon", **{"snr_gamma": 5.0, **bad})


def test_train_unet_rejects_bad_arguments_before_writing(tmp_path):
    from sdviz.builder import tiny_pipeline
    from sdviz.training.data import tokenize
    from sdviz.training.unet import train_unet

    pipe = tiny_pipeline()
    c, s = pipe.unet.config.in_channels, pipe.unet.config.sample_size
    args = (pipe.unet, pipe.text_encoder, torch.randn(2, c, s, s))
    ids = tokenize(pipe.tokenizer, ["a red circle"] * 2)
    empty = tokenize(pipe.tokenizer, [""])
    with pytest.raises(ValueError, match="prediction_type must be one of"):
        train_unet(*args, ids, empty, 1, tmp_path / "w", prediction_type="sample")
    with pytest.raises(ValueError, match="snr_gamma must be positive"):
        train_unet(*args, ids, empty, 1, tmp_path / "w", snr_gamma=0)
    # data-parallel: equal slices of each batch, over CPU processes
    with pytest.raises(ValueError, match="multiple of processes"):
        train_unet(*args, ids, empty, 1, tmp_path / "w", batch=3, processes=2)
    with pytest.raises(ValueError, match="at least 1"):
        train_unet(*args, ids, empty, 1, tmp_path / "w", processes=0)
    with pytest.raises(ValueError, match="processes=1"):
        train_unet(*args, ids, empty, 1, tmp_path / "w", processes=2, device="meta")
    assert not (tmp_path / "w").exists()

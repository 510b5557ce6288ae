"""The hyper-parameters of `sdviz train`: `FULL` (the shipped sdviz-mini) and `QUICK` (tests);
`FLOW` and `FLOW_QUICK` for `sdviz train --flow` (sdviz-mini-flow).

Each field is read by one stage of the recipe (`sdviz.training.stages`). How the
numbers of `FULL` were chosen, and what they gave, is told in the model card
(`sdviz/models/sdviz-mini/README.md`, "How the recipe's numbers were chosen").
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class RecipeConfig:
    """The settings of one `sdviz train` recipe, stage by stage."""

    images: int
    """ShapesWorld training images (64x64) that the `data` stage generates."""
    vae_steps: int
    """Training steps of the `vae` stage."""
    vae_batch: int
    """Random crops per VAE training step."""
    clip_steps: int
    """Plain contrastive steps of the `clip` stage (both towers, from random weights)."""
    clip_batch: int
    """Image-caption pairs per step of plain CLIP training and of the `clip_image` stage."""
    clip_hard_negative_steps: int
    """Steps of the `clip` stage with hard negatives, after the plain ones."""
    clip_hard_negative_batch: int
    """Image-caption pairs per step with hard negatives."""
    clip_hard_negative_lr: float
    """Peak learning rate of the hard-negative steps."""
    unet_steps: int
    """Training steps of the `unet` stage."""
    unet_batch: int
    """Latents per UNet step, split equally over its data-parallel processes."""
    unet_lr_drops: tuple[tuple[int, float], ...]
    """(step, learning rate) pairs: the UNet's rate (1e-3 after warm-up) from each step on."""
    unet_prediction_type: str
    """What the UNet predicts: "epsilon" or "v_prediction"."""
    unet_snr_gamma: float | None
    """Min-SNR cap of the UNet's loss weights (None: the plain mean squared error)."""
    unet_snr_floor: float
    """Least weight of any timestep's x0 error (`objective.loss_weights`)."""
    unet_where_oversample: int
    """Extra copies, in the UNet's rows, of each caption that says where things are."""
    snapshot_every: int
    """UNet steps between resumable snapshots (EMA weights and training state)."""
    decoder_steps: int
    """Training steps of the `decoder` stage (the VAE decoder on whole images)."""
    decoder_batch: int
    """Whole images per decoder step."""
    clip_image_steps: int
    """Training steps of the `clip_image` stage (CLIP's image tower alone)."""


FULL = RecipeConfig(
    images=16_000,
    vae_steps=600,
    vae_batch=32,
    clip_steps=1000,
    clip_batch=64,
    clip_hard_negative_steps=2500,
    clip_hard_negative_batch=128,
    clip_hard_negative_lr=3e-4,
    unet_steps=18_000,
    unet_batch=32,
    unet_lr_drops=((8_000, 3e-4), (15_000, 1e-4)),
    unet_prediction_type="epsilon",
    unet_snr_gamma=5.0,
    unet_snr_floor=1.0,
    unet_where_oversample=2,
    snapshot_every=100,
    decoder_steps=2000,
    decoder_batch=16,
    clip_image_steps=1500,
)
"""The shipped sdviz-mini's recipe: about 2.7 h on a 2-core CPU."""

QUICK = replace(
    FULL,
    images=64,
    vae_steps=4,
    vae_batch=8,
    clip_steps=4,
    clip_batch=16,
    clip_hard_negative_steps=2,
    clip_hard_negative_batch=8,
    unet_steps=4,
    unet_batch=8,
    unet_lr_drops=((2, 3e-4),),
    snapshot_every=2,
    decoder_steps=2,
    decoder_batch=4,
    clip_image_steps=2,
)
"""`sdviz train --quick`: every stage for a few steps, for tests; FULL's objective."""


@dataclass(frozen=True)
class FlowConfig:
    """The transformer's shape and its rectified-flow training settings."""

    layers: int = 6
    heads: int = 4
    head_dim: int = 32
    patch_size: int = 2
    steps: int = 20_000
    """Most training steps; with a deadline, as many as fit (planned at `plan_at`)."""
    batch: int = 32
    lr: float = 6e-4
    final_lr_fraction: float = 0.1
    """The learning rate decays along a cosine to this fraction of `lr` at the last step."""
    warmup: int = 200
    plan_at: int = 300
    """With a deadline: after this many steps the run measures its speed and fixes its
    number of steps (and so its learning-rate curve) to what fits before the deadline."""
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float = 1.0
    """Training sigma shift: measured better than SD3's 3.0 for 64 image tokens."""
    uncond_prob: float = 0.1
    guidance_scale: float = 3.0
    """Written to `sdviz.json` until a guidance sweep measures the model's own."""
    ema_decay: float = 0.999
    where_oversample: int = 2
    snapshot_every: int = 250


FLOW = FlowConfig()
"""The shipped sdviz-mini-flow's recipe (`sdviz train --flow`): a 6-layer, 4x32-head MMDiT
(3.5M parameters) on 2x2 patches of 16x16 latents, trained about 2 h on a 2-core CPU."""

FLOW_QUICK = replace(FLOW, layers=1, steps=4, batch=8, warmup=2, plan_at=2, snapshot_every=2)
"""`sdviz train --flow --quick`: a 1-layer transformer for a few steps, for tests."""

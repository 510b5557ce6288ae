"""Assemble sdviz-mini: the trained parts become one `StableDiffusionPipeline`.

Stable Diffusion (Rombach et al. 2022) is three models trained apart and joined: the
CLIP text tower (Radford et al. 2021) as `text_encoder`, the VAE, and the UNet that
denoises its latents, with a DDIM sampler (Song et al. 2021). The full CLIP model goes
next to the pipeline for the similarity lessons.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def text_encoder_from_clip(clip: Any) -> Any:
    """The CLIP text tower as a standalone `CLIPTextModel` (what SD calls `text_encoder`)."""
    from transformers import CLIPTextModel

    text = CLIPTextModel(clip.config.text_config)
    prefix = "text_model."
    weights = {k[len(prefix) :]: v for k, v in clip.state_dict().items() if k.startswith(prefix)}
    missing, unexpected = text.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"CLIP text tower mismatch: {missing} {unexpected}")
    return text.eval()


def latest_snapshot(work: Path) -> Path:
    """The newest EMA snapshot of the UNet in `work`."""
    snaps = sorted(work.glob("unet_ema_*.safetensors"))
    if not snaps:
        raise FileNotFoundError(f"no UNet snapshot in {work}: run the 'unet' stage first.")
    return snaps[-1]


def _clip_preprocessor(side: int) -> dict[str, Any]:
    """The `CLIPImageProcessor` settings of the CLIP image tower, which saw pixels in [-1, 1]."""
    return {
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": side},
        "do_center_crop": True,
        "crop_size": {"height": side, "width": side},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_convert_rgb": True,
    }


def assemble_pipeline(work: Path, out: Path, log=print, snapshot: Path | None = None):
    """Build the StableDiffusionPipeline from the work folder and save it to `out`.

    The full CLIP model (both towers), its tokenizer and image preprocessing go to
    `out/clip`, which `StableDiffusionPipeline.from_pretrained` ignores.
    """
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler
    from safetensors.torch import load_file
    from transformers import CLIPModel

    from ..builder import SD_SCHEDULE, assemble
    from . import data
    from . import unet as unet_mod
    from .vae import balance_channels

    tokenizer = data.make_tokenizer(work)
    cached = torch.load(work / "latents.pt")
    # the fine-tuned decoder when there is one (same encoder, so the same latents)
    vae_dir = work / "vae_decoder" if (work / "vae_decoder").exists() else work / "vae"
    vae = AutoencoderKL.from_pretrained(vae_dir)
    if "channel_mean" in cached:  # the UNet learned balanced latents: the VAE must make them
        balance_channels(
            vae, cached["channel_mean"], cached["channel_std"], cached["channel_target"]
        )
    vae.register_to_config(scaling_factor=round(cached["scaling_factor"], 5))
    clip = CLIPModel.from_pretrained(work / "clip")
    text_encoder = text_encoder_from_clip(clip)
    if (work / "clip_image").exists():  # image tower trained further, text tower unchanged
        clip = CLIPModel.from_pretrained(work / "clip_image")
        same = text_encoder_from_clip(clip).state_dict()
        if any(not torch.equal(v, same[k]) for k, v in text_encoder.state_dict().items()):
            raise RuntimeError("clip_image changed the text tower; it must stay frozen.")
    unet = unet_mod.build_unet(text_encoder.config.hidden_size, cached["latents"].shape[-1])
    snapshot = snapshot or latest_snapshot(work)
    unet.load_state_dict(load_file(snapshot))
    rec = json.loads((work / "record.json").read_text()) if (work / "record.json").exists() else {}
    # the sampler must read the UNet's output as what it was trained to predict
    prediction_type = rec.get("unet_prediction_type", "epsilon")
    scheduler = DDIMScheduler(prediction_type=prediction_type, **SD_SCHEDULE)
    pipe = assemble(tokenizer, text_encoder, unet.eval(), vae.eval(), scheduler)
    pipe.save_pretrained(out, safe_serialization=True)
    clip.save_pretrained(out / "clip", safe_serialization=True)
    tokenizer.save_pretrained(out / "clip")
    preprocessor = _clip_preprocessor(clip.config.vision_config.image_size)
    (out / "clip" / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=1))
    rec["unet_snapshot"] = (
        str(snapshot.relative_to(work)) if snapshot.is_relative_to(work) else snapshot.name
    )
    (out / "training_record.json").write_text(json.dumps(rec, indent=1))
    log(f"assemble: pipeline saved to {out} (UNet {snapshot.name})")
    return pipe


def assemble_flow(work: Path, out: Path, cfg: Any, log=print, snapshot: Path | None = None):
    """Save sdviz-mini-flow: the transformer (EMA weights, stored in fp16) and its scheduler,
    `model_index.json` as `save_pretrained` writes it, and an `sdviz.json` that borrows the
    VAE, CLIP and tokenizer from the sdviz-mini folder the run encoded with (`sdviz.borrowed`).
    """
    import os
    import shutil
    import tempfile

    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler
    from safetensors.torch import load_file

    from ..borrowed import BORROWED_KEY, load_borrowed
    from .flow import FLOW_CLASSES, flow_pipeline

    cached = torch.load(work / "flow_data.pt")
    spec = cached["borrowed"]
    parts = load_borrowed(Path(spec["folder"]), spec, FLOW_CLASSES)
    snaps = sorted(work.glob("flow_ema_*.safetensors"))
    if snapshot is None and not snaps:
        raise FileNotFoundError(f"no transformer snapshot in {work}: run the 'flow' stage first.")
    snapshot = snapshot or snaps[-1]
    scheduler = FlowMatchEulerDiscreteScheduler(shift=cfg.shift)
    pipe = flow_pipeline(parts, cfg, cached["latents"].shape[-1], scheduler)
    pipe.transformer.load_state_dict(load_file(snapshot))
    pipe.transformer.eval()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sdviz-flow-") as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)  # the index, as diffusers writes it
        shutil.copy(Path(tmp) / "model_index.json", out / "model_index.json")
    shutil.rmtree(out / "transformer", ignore_errors=True)
    pipe.transformer.to(torch.float16).save_pretrained(out / "transformer")  # half the bytes
    scheduler.save_pretrained(out / "scheduler")
    here = dict(spec, folder=os.path.relpath(spec["folder"], out.resolve()))
    settings_path = out / "sdviz.json"
    settings = json.loads(settings_path.read_text()) if settings_path.is_file() else {}
    settings.setdefault("guidance_scale", cfg.guidance_scale)
    settings.setdefault("num_inference_steps", 25)
    settings.update(closed_vocabulary=True, max_sequence_length=0, **{BORROWED_KEY: here})
    settings_path.write_text(json.dumps(settings, indent=2) + "\n")
    rec = json.loads((work / "record.json").read_text()) if (work / "record.json").exists() else {}
    rec["flow_snapshot"] = snapshot.name
    (out / "training_record.json").write_text(json.dumps(rec, indent=1))
    log(f"flow_assemble: pipeline saved to {out} (transformer {snapshot.name})")
    return pipe

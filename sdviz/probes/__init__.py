"""probes: computations outside a generation, each returning a record that figures draw.

A figure in `sdviz.figures` only draws: whatever needs a network (the UNet, the VAE,
CLIP) or a whole generation is computed here, or in the stage module it belongs to
(`sdviz.diffusion`, `sdviz.autoencoder`, `sdviz.text`), and handed to the figure or the
lesson as a record (a dataclass, a dict or tensors). One module per kind of probe:

    noising.py     noised_images (figure 2), noise_predictions (figure 4): an image
                   noised to timesteps, the UNet's ε̂ for it; predict_noise, check_timesteps
    images.py      step_images (figure 5): a run's x_t and x̂0 as images;
                   colour_statistics (lessons 2, 4): decoded noise vs ShapesWorld
    clip.py        clip_embeddings (figure 8): images and captions embedded by CLIP
    generation.py  guidance_runs (figure 11b), image_to_image, interpolate_prompts:
                   whole generations compared side by side (lesson 8)
    guidance.py    measured_guidance (figure 11c): the model folder's guidance sweep,
                   prompts followed and image quality against g (lessons 7, 8)
    attention.py   localisation (lesson 7): how well each word's attention map finds its
                   object on held-out ShapesWorld images; token_shares
    timing.py      time_unet (lesson 5): one UNet call timed at several sizes
    families.py    trace_families (lesson 10): SD 1.x, SDXL, SD3 and Flux traced alike
                   (the loaded model in its family's place, tiny random ones for the
                   others); families_table, text_encoders_table, records_table
    unet.py        unet_structure (figure 9): blocks, layers, skips, where t and the text
                   enter, read from the module tree; timestep_embeddings (9b): the
                   loaded UNet's time_proj and time_embedding on every t; sd_skeleton
    straightness.py measure_straightness (issue 20): how far x̂0 moves while each
                   pipeline samples, the same prompts and seeds at several step counts

Figure 6 draws `sdviz.autoencoder.reconstruct` (many images scored by PSNR:
`reconstruct_many`), figure 7 a Run or `sdviz.text.prompt_record`.
"""

from __future__ import annotations

from ..autoencoder import psnr
from .attention import Localisation, localisation, token_shares
from .clip import ClipEmbeddings, clip_embeddings
from .families import Families, trace_families
from .generation import (
    ImageToImage,
    PromptMix,
    guidance_runs,
    image_to_image,
    interpolate_prompts,
)
from .guidance import MeasuredGuidance, measured_guidance
from .images import (
    STEP_IMAGES,
    StepImages,
    colour_statistics,
    step_images,
)
from .noising import (
    NoisedImages,
    NoisePredictions,
    check_timesteps,
    noise_predictions,
    noised_images,
    predict_noise,
)
from .straightness import Straightness, measure_straightness
from .timing import UnetTiming, time_unet
from .unet import (
    TimestepEmbeddings,
    UnetStructure,
    sd_skeleton,
    timestep_embeddings,
    unet_structure,
)

__all__ = [
    "Families",
    "trace_families",
    "Localisation",
    "localisation",
    "token_shares",
    "NoisedImages",
    "noised_images",
    "NoisePredictions",
    "noise_predictions",
    "predict_noise",
    "check_timesteps",
    "STEP_IMAGES",
    "StepImages",
    "step_images",
    "colour_statistics",
    "psnr",
    "ClipEmbeddings",
    "clip_embeddings",
    "guidance_runs",
    "MeasuredGuidance",
    "measured_guidance",
    "ImageToImage",
    "image_to_image",
    "PromptMix",
    "interpolate_prompts",
    "UnetTiming",
    "time_unet",
    "UnetStructure",
    "unet_structure",
    "TimestepEmbeddings",
    "timestep_embeddings",
    "sd_skeleton",
    "Straightness",
    "measure_straightness",
]

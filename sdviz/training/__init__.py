"""Train sdviz-mini from scratch: ShapesWorld data, CLIP, VAE, UNet, then assemble.

Stable Diffusion's recipe (Rombach et al. 2022) in miniature, one module per part:
`data` (ShapesWorld images, captions, tokenizer), `clip` (contrastive text/image
towers, Radford et al. 2021), `vae` (AutoencoderKL, Kingma & Welling 2014), `unet`
(DDPM noise prediction on VAE latents, Ho et al. 2020, with caption dropout for
classifier-free guidance, Ho & Salimans 2022) and `recipe` (the `sdviz train` command;
its stages in `stages`, its settings in `config`).
"""

"""The emoji demo model: a small text-to-image latent diffusion model trained on Noto Color
Emoji glyphs and their Unicode names (``python -m emoji.train``, ``python -m emoji.evaluate``)."""

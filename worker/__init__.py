"""Render worker (GPU): runs diffusers and captures every denoising step as a frame."""

"""Encoder worker (CPU): stitches captured frames into a video with ffmpeg."""

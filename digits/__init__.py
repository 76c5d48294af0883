"""A tiny but real text-to-image model: handwritten digits drawn on request.

Trained in minutes on a CPU from scikit-learn's bundled ``load_digits`` data, saved as
a standard diffusers ``StableDiffusionPipeline`` folder, so the demo shows noise
turning into the digit the prompt asks for, with no download.
"""

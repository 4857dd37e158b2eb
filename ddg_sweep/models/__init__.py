"""Models: students, the CLIP and Stable Diffusion teachers, and the tiny family."""

"""One thin entry point per DVC stage: `python -m pipeline.<stage>`."""

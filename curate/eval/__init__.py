"""Evaluation of trained models: metrics (FVD from I3D features, CLIPSIM, weight-free video quality) and studies."""

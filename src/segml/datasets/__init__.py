"""Data sets: the shipped CDNOW loader and the synthetic generator with planted ground truth."""

from segml.datasets.cdnow import CDNOW_SHA256, cdnow_path, load_cdnow, verify_cdnow
from segml.datasets.synthetic import SynthData, SynthSpec, generate, write_synthetic

__all__ = [
    "CDNOW_SHA256",
    "SynthData",
    "SynthSpec",
    "cdnow_path",
    "generate",
    "load_cdnow",
    "verify_cdnow",
    "write_synthetic",
]

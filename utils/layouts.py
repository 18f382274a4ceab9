"""The layouts of sample and batch entries (DESIGN.md "Tensors"): how each keyed tensor is shaped,
and so how the data transforms crop/flip it and what a network's ``ArchIO.inputs`` declare. In a
batch every entry gets a leading B."""
from __future__ import annotations

LAYOUTS = {
    "image": "C×H×W",
    "clip": "T×C×H×W",
    "mask": "1×H×W",
    "map": "C×H×W aligned with lq",
    "kernel": "...×k×k (not cropped, transformed with flips)",
    "vector": "D (per sample)",
    "scalar": "() per sample",
    "displacement": "...×2 (dy, dx) vectors; T×2 per frame of a clip",
}
SPATIAL_LAYOUTS = ("image", "clip", "mask", "map")  # cropped with the image

"""dfe: sketch-based face editing (DeepFaceEditing) and Deep Feature Interpolation as a DVC pipeline.

Importing this package has no side effects; submodules hold data ops, networks, losses,
the trainer, DFI and metrics.
"""

__version__ = "0.1.0"

PARTS: tuple[str, ...] = ("eye1", "eye2", "nose", "mouth", "bg")

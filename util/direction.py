"""Which modality is the input and which the output: ``--direction`` AtoB translates modality_A into modality_B,
BtoA the reverse.
"""
from __future__ import annotations

import argparse


def source_target(opt: argparse.Namespace) -> tuple[str, str]:
    """(source, target) modality of ``opt``: (modality_A, modality_B) for --direction AtoB, the reverse for BtoA."""
    if opt.direction == 'AtoB':
        return opt.modality_A, opt.modality_B
    return opt.modality_B, opt.modality_A

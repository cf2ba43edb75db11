"""Pictures of a synthetic CT's dose a physicist reads (matplotlib, no display needed), from canonical (RAS) volumes
on the dose grid:

- cumulative DVH curves of the target and the organs at risk, the CT's dose solid, the synthetic CT's dashed;
- sagittal, coronal and axial slices through the target's centre of the CT dose, the synthetic CT's dose, their
  difference (sCT - CT, Gy) and the gamma map (0 .. 2; above 1 fails), the target outlined.
"""
from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from util.slicing import PLANE_NAMES, PLANES, slice_spacing, take_slice

DVH_BINS = 200
STYLES = {'ct': '-', 'sct': '--'}


def dvh_curve(dose: np.ndarray, mask: np.ndarray, top_gy: float) -> tuple[np.ndarray, np.ndarray]:
    """(dose axis in Gy from 0 to ``top_gy``, % of the structure receiving at least that dose)."""
    axis = np.linspace(0, top_gy, DVH_BINS)
    values = np.sort(dose[mask])
    return axis, 100 * (values.size - np.searchsorted(values, axis, side='left')) / max(values.size, 1)


def plot_dvh(panels: list[tuple[str, np.ndarray, np.ndarray, dict[str, np.ndarray]]], title: str, path: str) -> None:
    """One DVH panel per (modality, CT dose, sCT dose, {structure name: mask}) side by side, written to ``path``
    (PNG). A structure keeps its colour in both curves."""
    fig = Figure(figsize=(5.2 * len(panels), 4.2), layout='constrained')
    for k, (modality, dose_ct, dose_sct, structures) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        top = 1.05 * float(max(dose_ct.max(), dose_sct.max(), 1e-6))
        for i, (name, mask) in enumerate(structures.items()):
            colour = f'C{i % 10}'
            for key, dose in (('ct', dose_ct), ('sct', dose_sct)):
                x, y = dvh_curve(dose, mask, top)
                ax.plot(x, y, STYLES[key], color=colour, label=f'{name} ({"CT" if key == "ct" else "sCT"})')
        ax.set(xlabel='dose (Gy)', ylabel='volume (%)', title=f'{modality}: CT solid, synthetic CT dashed',
               ylim=(0, 102), xlim=(0, top))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.savefig(path, dpi=100)


def target_centre(target: np.ndarray) -> tuple[int, int, int]:
    """The voxel nearest the target's centre of mass (canonical indices)."""
    return tuple(int(round(c)) for c in np.argwhere(target).mean(axis=0))


def plot_dose_slices(dose_ct: np.ndarray, dose_sct: np.ndarray, gamma: np.ndarray, target: np.ndarray,
                     zooms: tuple[float, float, float], title: str, path: str) -> None:
    """Rows: sagittal, coronal and axial slices through the target's centre; columns: CT dose, sCT dose, sCT - CT
    (symmetric blue-red scale) and gamma (0 .. 2, grey where not evaluated); the target outlined in each. PNG."""
    centre = target_centre(target)
    top = float(max(dose_ct.max(), 1e-6))
    diff = dose_sct - dose_ct
    span = float(max(np.abs(diff).max(), 0.01 * top))
    columns = [('CT dose (Gy)', dose_ct, 'jet', 0, top), ('sCT dose (Gy)', dose_sct, 'jet', 0, top),
               ('sCT - CT (Gy)', diff, 'RdBu_r', -span, span), ('gamma 2 %/2 mm', gamma, 'RdYlGn_r', 0, 2)]
    fig = Figure(figsize=(3.6 * len(columns), 3.2 * len(PLANES) + 0.8))
    axes = fig.subplots(len(PLANES), len(columns), squeeze=False)
    fig.subplots_adjust(left=0.04, right=0.99, top=0.9, bottom=0.1, wspace=0.05, hspace=0.12)
    for row, (plane, axis) in enumerate(PLANES.items()):
        row_mm, col_mm = slice_spacing(zooms, axis)
        outline = take_slice(target.astype(np.float32), axis, centre[axis])
        for col, (name, volume, cmap, low, high) in enumerate(columns):
            ax = axes[row, col]
            image = ax.imshow(np.ma.masked_invalid(take_slice(volume, axis, centre[axis])), vmin=low, vmax=high,
                              cmap=colormaps[cmap].with_extremes(bad='0.8'), aspect=row_mm / col_mm,
                              interpolation='nearest')
            ax.contour(outline, levels=[0.5], colors='k', linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name)
            if col == 0:
                ax.set_ylabel(f'{PLANE_NAMES[plane]} {centre[axis]}')
            if row == len(PLANES) - 1:          # one colour bar per column, under it
                fig.colorbar(image, ax=axes[:, col].tolist(), orientation='horizontal', fraction=0.04, pad=0.02)
    fig.suptitle(title)
    fig.savefig(path, dpi=90)

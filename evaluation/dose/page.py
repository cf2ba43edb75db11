"""The dose part of test.py's result page (``test.py --dose``): a table of the dose metrics per modality (mean ±
std over the subjects' fused volumes), how they were made, each subject's notes, and its DVH and dose slice
pictures (drawn beside its fused volume by subject_dose.py, copied into the page's images/)."""
from __future__ import annotations

import os
import shutil

from evaluation.dose.columns import DECIMALS, METRICS, NOTE, TITLES, column, figure_files
from evaluation.comparison.results import Stat, format_stat
from util.html import HTML

FIGURE_WIDTH = 640


def add_dose_section(webpage: HTML, rows: list[dict], scorer, sct_path) -> None:
    """The dose table, notes and pictures of the fused volume ``rows`` (metrics.csv form) scored by ``scorer``
    (subject_dose.DoseScorer) at the top of ``webpage``; ``sct_path(subject)``: the subject's fused volume."""
    fused = [r for r in rows if r['plane'] == 'fused']
    modalities = scorer.settings.modalities
    webpage.add_header('Dose: the plan optimised on the CT, recomputed on the synthetic CT (fused volume), '
                       'mean ± std over subjects', top=True)
    table = [[modality, len(fused), *(format_stat(Stat.of(r.get(column(m, modality), float('nan')) for r in fused),
                                                  DECIMALS[m])[0] for m in METRICS)] for modality in modalities]
    webpage.add_table(['modality', 'subjects', *(TITLES[m] for m in METRICS)], table, top=True)
    settings = scorer.record()['settings']
    webpage.add_text(f'{NOTE}. Settings: ' + ', '.join(f'{k} {v}' for k, v in settings.items()), top=True)
    image_dir = webpage.get_image_dir()
    for r in fused:
        subject = r['subject']
        notes = scorer.subjects.get(subject, {}).get('notes', [])
        if notes:
            webpage.add_text(f'{subject}: ' + '; '.join(notes), top=True)
        names = []
        for path in figure_files(sct_path(subject), modalities):
            if os.path.isfile(path):
                names.append(os.path.basename(path))
                shutil.copyfile(path, os.path.join(image_dir, names[-1]))
        if names:
            webpage.add_images(names, [f'{subject}: DVH (CT solid, synthetic CT dashed)'] +
                               [f'{subject}: {m} dose, difference and gamma through the target' for m in modalities],
                               names, width=FIGURE_WIDTH, top=True)

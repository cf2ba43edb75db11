"""The report of a comparison TAG, rebuilt from what is on disk (so scripts/evaluate.py --append can add a row
without retraining anything): ``table.md``, ``table.csv``, the PNG figures under ``images/`` and ``index.html``.
"""
from __future__ import annotations

import functools
import glob
import os
import shlex
import shutil

from dominate import tags

from util.checkpoint import atomic_write
from evaluation.comparison.figures import (DataInfo, SubjectFiles, choose_slices, draw_strip, load_subject,
                                           plot_loss_curves, plot_metric_boxes, strip_panels)
from evaluation.comparison.results import (Result, Section, load_results, markdown_tables, options_path,
                                           safe_label, table_sections, write_table_csv)
from evaluation.dose.columns import figure_files
from util.json_file import read_json
from util.html import HTML
from util.intensity import modality_kind
from util.slicing import plane_axis, slice_spacing

PLOTS = {'loss_curves.png': 'Training losses per model (as logged every --print_freq images)',
         'psnr_by_plane.png': 'Per-slice PSNR per plane',
         'ssim_by_plane.png': 'Per-slice SSIM per plane'}


def data_info(options: dict) -> DataInfo:
    d = options['data']
    return DataInfo(d['dataroot'], d['source'], d['target'], tuple(d['ct_window']), tuple(d['mr_percentiles']))


def reference_result(results: list[Result], label: str | None) -> Result | None:
    """The result named ``label`` when it has slices, else the first that has."""
    with_slices = [r for r in results if r.slices]
    return next((r for r in with_slices if r.label == label), with_slices[0] if with_slices else None)


def describe(options: dict, results: list[Result]) -> list[str]:
    """Plain-text lines on what was compared: data, split, shared options, runs."""
    d = options['data']
    shared = ' '.join(f'--{k} {shlex.quote(str(v))}' for k, v in sorted(options['shared'].items()))
    lines = [f'{"Ablation" if options["mode"] == "ablation" else "Comparison"} {options["tag"]}: '
             f'{d["source"]} -> {d["target"]}, data {d["dataroot"]}, {len(d["test_subjects"])} test subject(s) '
             f'({", ".join(d["test_subjects"][:8])}{", ..." if len(d["test_subjects"]) > 8 else ""}).',
             f'Shared options (every run): {shared}']
    runs = {run['label']: run for run in options['runs']}
    for r in results:
        run = runs.get(r.label)
        own = ' '.join(run['args']) if run and run['args'] else '(model defaults)'
        lines.append(f'{r.label}: ' + (f'--model {run["model"]} {own}, experiment {run["name"]}' if run
                                       else f'outside result, volumes from {r.name}'))
    return lines


def html_table(section: Section) -> tags.table:
    """A dominate table of ``section``; the best value bold, the second underlined."""
    table = tags.table(border=1, style='border-collapse: collapse; text-align: right')
    with table:
        with tags.tr():
            for name in section.header:
                tags.th(name, style='padding: 2px 8px')
        for row in section.rows:
            with tags.tr():
                for cell in row:
                    with tags.td(style='padding: 2px 8px'):
                        if cell.mark and cell.main:
                            before, _, after = cell.text.partition(cell.main)
                            if before:
                                tags.span(before)
                            (tags.b if cell.mark == 'best' else tags.u)(cell.main)
                            tags.span(after)
                        else:
                            tags.span(cell.text)
    return table


def add_dose_figures(page: HTML, results: list[Result]) -> None:
    """Per row with dose columns and per subject, its DVH and dose slice pictures (drawn beside its fused volume
    by evaluation/dose/subject_dose.py), copied into the report's images/ as dose_<row>_<file>."""
    image_dir = page.get_image_dir()
    for old in glob.glob(os.path.join(glob.escape(image_dir), 'dose_*.png')):
        os.remove(old)
    rows = [r for r in results if r.dose]
    if rows:
        page.add_header('Dose per subject: DVH (CT solid, synthetic CT dashed); CT dose, synthetic CT dose, '
                        'difference and gamma (2 %/2 mm) through the target\'s centre')
    for r in rows:
        modalities = tuple(r.dose.get('settings', {}).get('modalities', ()))
        for subject in sorted({v['subject'] for v in r.volumes if (v['subject'], 'fused') in r.volume_files}):
            names = []
            for path in figure_files(r.volume_files[(subject, 'fused')], modalities):
                if os.path.isfile(path):
                    names.append(f'dose_{safe_label(r.label)}_{os.path.basename(path)}')
                    shutil.copyfile(path, os.path.join(image_dir, names[-1]))
            notes = '; '.join(r.dose.get('subjects', {}).get(subject, {}).get('notes', []))
            if names:
                page.add_images(names, [f'{r.label}, {subject}' + (f' ({notes})' if notes else '')] +
                                [f'{r.label}, {subject}'] * (len(names) - 1), names, width=560)


def write_report(folder: str, find_files: SubjectFiles) -> str:
    """Rebuild the report of the comparison in ``folder`` (results/compare_TAG); returns the page's path.

    Raises RuntimeError when no run has test results yet.
    """
    options = read_json(options_path(folder))
    results = load_results(folder)
    if not results:
        raise RuntimeError(f'{folder}: no run of this comparison has test results yet')
    sections = table_sections(results, options.get('device', ''))
    intro = describe(options, results)
    text = f'# {options["tag"]}\n\n' + '\n'.join(f'- {line}' for line in intro) + '\n\n' + markdown_tables(sections)
    atomic_write(lambda f: f.write(text), os.path.join(folder, 'table.md'), binary=False)
    write_table_csv(os.path.join(folder, 'table.csv'), results)

    page = HTML(folder, f'Comparison {options["tag"]}')
    image_dir = page.get_image_dir()
    for line in intro:
        page.add_text(line)
    for s in sections:
        page.add_header(s.title)
        page.add_text(s.note)
        page.content.add(html_table(s))
    drawn = {'loss_curves.png': plot_loss_curves(results, os.path.join(image_dir, 'loss_curves.png')),
             'psnr_by_plane.png': plot_metric_boxes(results, 'psnr', os.path.join(image_dir, 'psnr_by_plane.png')),
             'ssim_by_plane.png': plot_metric_boxes(results, 'ssim', os.path.join(image_dir, 'ssim_by_plane.png'))}
    for file, caption in PLOTS.items():
        if drawn[file]:
            page.add_header(caption)
            page.add_images([file], [caption], [file], width=900)
    reference = reference_result(results, options['report'].get('reference'))
    if reference is not None:
        info = data_info(options)
        unit = 'HU' if modality_kind(info.target) == 'ct' else f'{info.target} units'
        subject = functools.lru_cache(maxsize=None)(lambda name: load_subject(info, name, find_files))
        for old in glob.glob(os.path.join(glob.escape(image_dir), 'strip_*.png')):
            os.remove(old)
        page.add_header(f'Slices (worst, median and best of {reference.label}, and any asked for)')
        for ref in choose_slices(reference, options['report'].get('slices', []),
                                 lambda name: subject(name).body_fractions()):
            data = subject(ref.subject)
            panels, body = strip_panels(ref, results, info, data)
            file = f'strip_{ref.name}.png'
            spacing = slice_spacing(data.geometry.zooms, plane_axis(ref.plane))
            vmax = draw_strip(ref, panels, body, spacing, unit, os.path.join(image_dir, file))
            scores = ', '.join(f'{p.title.splitlines()[0]} {p.psnr:.2f} dB' for p in panels if p.error is not None)
            page.add_images([file], [f'{ref.name} ({ref.reason}); PSNR of this slice: {scores}; error scale 0 to '
                                     f'{vmax:.4g} {unit}'], [file], width=min(1600, 260 * len(panels)))
    add_dose_figures(page, results)
    return page.save()

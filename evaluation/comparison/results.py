"""What a comparison of models (or of ablations of one model) holds on disk, and its tables.

A comparison TAG lives in ``<results_dir>/compare_TAG/``:

    shared_options.json   mode, shared options, data, runs, report choices (written by scripts/compare.py)
    runs/<label>.json     per trained run: parameter counts, training time, inference time per slice
    external/<label>.json + external/<label>.csv   volumes scored by scripts/evaluate.py --append
    table.md, table.csv, index.html, images/        the report (evaluation/comparison/report.py)

Each trained run is a normal experiment ``compare_TAG_<label>`` whose test results (``metrics.csv``,
``volumes/``) come from test.py. Metrics are summarised as mean and standard deviation: the paper's per-slice
PSNR/SSIM (images in [-1, 1], data range 2), overall and per plane, and the volume set test.py scored (``--metrics``
synthrad2023: MAE in HU, PSNR, SSIM; synthrad2025: MAE, PSNR, MS-SSIM; inside the body mask) per plane and fused,
over subjects."""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from typing import Callable

from evaluation.dose.columns import DOSE_RECORD, dose_columns
from evaluation.dose.columns import DECIMALS as DOSE_DECIMALS, HIGHER_IS_BETTER as DOSE_HIGHER, NOTE as DOSE_NOTE
from evaluation.dose.columns import TITLES as DOSE_TITLES, split_column
from evaluation.metrics import finite_stats
from util.checkpoint import atomic_write
from util.json_file import read_json

PLANES = ('x', 'y', 'z')
VOLUME_PLANES = ('x', 'y', 'z', 'fused')
SLICE_METRICS = ('psnr', 'ssim')
VOLUME_METRICS = ('mae', 'psnr', 'ssim')                 # SynthRAD2023 (the default)
VOLUME_METRICS_2025 = ('mae', 'psnr', 'ms_ssim')         # --metrics synthrad2025
HIGHER_IS_BETTER = {'psnr': True, 'ssim': True, 'ms_ssim': True, 'mae': False}
METRIC_TITLES = {'psnr': 'PSNR', 'ssim': 'SSIM', 'ms_ssim': 'MS-SSIM', 'mae': 'MAE'}
DECIMALS = {'psnr': 2, 'ssim': 4, 'ms_ssim': 4, 'mae': 2}
PREFIX = 'compare_'
DOSE_METRICS = tuple(dose_columns())                     # the fused volume's, with test.py / evaluate.py --dose
HIGHER_IS_BETTER.update({c: DOSE_HIGHER[split_column(c)[0]] for c in DOSE_METRICS})
DECIMALS.update({c: DOSE_DECIMALS[split_column(c)[0]] for c in DOSE_METRICS})


def tag_dir(results_dir: str, tag: str) -> str:
    """``<results_dir>/compare_<tag>``."""
    return os.path.join(results_dir, PREFIX + tag)


def safe_label(label: str) -> str:
    """``label`` usable in a file name: '=' dropped, characters other than letters, digits, '-', '_' and '.'
    replaced by '_' ('n_masks=2' -> 'n_masks2')."""
    return ''.join(c if c.isalnum() or c in '-_.' else '_' for c in label.replace('=', ''))


def run_name(tag: str, key: str) -> str:
    """Experiment name of the run ``key`` (a file-safe label): ``compare_<tag>_<key>``."""
    return f'{PREFIX}{tag}_{key}'


def options_path(folder: str) -> str:
    return os.path.join(folder, 'shared_options.json')


def run_record_path(folder: str, key: str) -> str:
    """``runs/<key>.json``: parameter counts and times of one trained run."""
    return os.path.join(folder, 'runs', key + '.json')


def external_paths(folder: str, key: str) -> tuple[str, str]:
    """(json, csv) files of the outside result ``key`` appended by scripts/evaluate.py."""
    stem = os.path.join(folder, 'external', key)
    return stem + '.json', stem + '.csv'


def option_differences(earlier: dict, now: dict) -> list[str]:
    """Lines ``--flag: earlier X, now Y`` for every key whose value differs (a missing key reads 'unset')."""
    lines = []
    for key in sorted(set(earlier) | set(now)):
        a, b = earlier.get(key, 'unset'), now.get(key, 'unset')
        if a != b:
            lines.append(f'--{key}: earlier {a!r}, now {b!r}')
    return lines


@dataclass(frozen=True)
class Stat:
    """Mean and (population) standard deviation of the finite values; n counts them (0: mean and std NaN)."""
    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values) -> 'Stat':
        return cls(*finite_stats(values))


def _number(text: str) -> float:
    return float(text) if text not in ('', None) else math.nan


def read_metrics_csv(path: str) -> list[dict]:
    """Rows of a ``metrics.csv`` (evaluation.scoring.CSV_FIELDS) with mae/psnr/ssim as floats (NaN when empty) and
    slice as int (-1 when empty)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: metrics file not found')
    with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for m in dict.fromkeys(VOLUME_METRICS + VOLUME_METRICS_2025 + DOSE_METRICS):
            row[m] = _number(row.get(m, ''))
        row['slice'] = int(row['slice']) if row.get('slice') not in ('', None) else -1
    return rows


@dataclass
class Result:
    """One row of the comparison: a trained run or an outside result.

    slices: per-slice rows (subject, plane, slice, name, psnr, ssim); volumes: per-volume rows (subject, plane
    in x/y/z/fused, mae, psnr, ssim); volume_files: (subject, plane) -> NIfTI path of the prediction.
    """
    label: str
    model: str
    slices: list[dict] = field(default_factory=list)
    volumes: list[dict] = field(default_factory=list)
    volume_files: dict[tuple[str, str], str] = field(default_factory=dict)
    params_total: float = math.nan
    params_frozen: float = math.nan
    train_seconds: float = math.nan
    inference_ms: float = math.nan
    name: str = ''                # experiment name (trained runs) or prediction folder (outside results)
    loss_log: str = ''
    dose: dict = field(default_factory=dict)   # the dose columns' settings and notes (evaluation/dose/), if any
    train_flops: float = math.nan # training FLOPs: one step's (FlopCounterMode) x the steps trained
    volume_seconds: float = math.nan    # test.py's model time per test volume (its cost.json)
    peaks: dict = field(default_factory=dict)   # {train,test}_peak_{rss,gpu}_mib: peak memory (MiB)

    def slice_stat(self, metric: str, plane: str | None = None) -> Stat:
        return Stat.of(r[metric] for r in self.slices if plane is None or r['plane'] == plane)

    def volume_stat(self, metric: str, plane: str) -> Stat:
        return Stat.of(r[metric] for r in self.volumes if r['plane'] == plane)


def split_rows(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(slice rows, volume rows) of a metrics.csv."""
    return [r for r in rows if r['level'] == 'slice'], [r for r in rows if r['level'] == 'volume']


def load_results(folder: str) -> list[Result]:
    """The trained runs listed in ``shared_options.json`` that have test results, then the outside results,
    in the order they were added."""
    options = read_json(options_path(folder))
    results = []
    for run in options['runs']:
        test_dir = os.path.join(folder, run['test_dir'])
        metrics = os.path.join(test_dir, 'metrics.csv')
        if not os.path.isfile(metrics):
            continue
        slices, volumes = split_rows(read_metrics_csv(metrics))
        record_path = run_record_path(folder, run['key'])
        record = read_json(record_path) if os.path.isfile(record_path) else {}
        files = {(r['subject'], r['plane']): os.path.join(test_dir, 'volumes',
                                                          f"{r['subject']}_fake_B_{r['plane']}.nii.gz")
                 for r in volumes}
        results.append(Result(run['label'], run['model'], slices, volumes, files,
                              record.get('params_total', math.nan), record.get('params_frozen', math.nan),
                              record.get('train_seconds', math.nan), record.get('inference_ms', math.nan),
                              run['name'], os.path.join(folder, run['loss_log']),
                              read_json(os.path.join(test_dir, DOSE_RECORD))
                              if os.path.isfile(os.path.join(test_dir, DOSE_RECORD)) else {},
                              record.get('train_flops', math.nan), record.get('volume_seconds', math.nan),
                              {k: record[k] for k in PEAK_KEYS if k in record}))
    for key in options.get('external', []):
        meta_path, csv_path = external_paths(folder, key)
        meta = read_json(meta_path)
        _, volumes = split_rows(read_metrics_csv(csv_path))
        results.append(Result(meta['label'], 'outside', [], volumes,
                              {(s, meta['plane']): p for s, p in meta['files'].items()}, name=meta['pred'],
                              dose=meta.get('dose') or {}))
    return results


def rank_marks(values: list[float], higher_is_better: bool) -> list[str]:
    """'best' for the best value(s), 'second' for the next distinct value, '' otherwise; NaN never ranks."""
    finite = sorted({v for v in values if math.isfinite(v)}, reverse=higher_is_better)
    marks = {v: 'best' for v in finite[:1]} | {v: 'second' for v in finite[1:2]}
    return [marks.get(v, '') if math.isfinite(v) else '' for v in values]


@dataclass
class Cell:
    """A table cell: ``text``; ``main`` (the part that is bold or underlined) and ``mark`` ('best', 'second')."""
    text: str
    main: str = ''
    mark: str = ''


@dataclass
class Section:
    """One table of the report: a title, a note on how its numbers were made, a header and one row per result."""
    title: str
    note: str
    header: list[str]
    rows: list[list[Cell]]


def format_stat(stat: Stat, decimals: int) -> tuple[str, str]:
    """('mean ± std', 'mean'), or ('-', '') without values."""
    if stat.n == 0:
        return '-', ''
    main = f'{stat.mean:.{decimals}f}'
    return f'{main} ± {stat.std:.{decimals}f}', main


def _metric_columns(results: list[Result], stats: list[tuple[str, str, Callable[[Result], Stat]]]) -> list[list[Cell]]:
    """Columns (lists of cells, one per result) for [(header, metric, stat_fn(result) -> Stat)], ranked on the
    means as shown (rounded), so equal-looking values get the same mark."""
    columns = []
    for _, metric, stat_fn in stats:
        values = [stat_fn(r) for r in results]
        shown = [round(s.mean, DECIMALS[metric]) if s.n else math.nan for s in values]
        marks = rank_marks(shown, HIGHER_IS_BETTER[metric])
        columns.append([Cell(*format_stat(s, DECIMALS[metric]), mark) for s, mark in zip(values, marks)])
    return columns


def _section(title: str, note: str, results: list[Result], stats: list) -> Section:
    columns = _metric_columns(results, stats)
    rows = [[Cell(r.label)] + [col[i] for col in columns] for i, r in enumerate(results)]
    return Section(title, note, ['model'] + [h for h, _, _ in stats], rows)


def planes_present(results: list[Result]) -> list[str]:
    """The planes (x, y, z) any result has slices or volumes of, in that order."""
    seen = {r['plane'] for res in results for r in res.slices + res.volumes}
    return [p for p in PLANES if p in seen]


def format_seconds(seconds: float) -> str:
    """'-', '42.0 s', '12.5 min' or '3.20 h'."""
    if not math.isfinite(seconds):
        return '-'
    if seconds < 120:
        return f'{seconds:.1f} s'
    return f'{seconds / 60:.1f} min' if seconds < 7200 else f'{seconds / 3600:.2f} h'


def volume_metric_names(results: list[Result]) -> tuple[str, ...]:
    """The volume metric set of the results: SynthRAD2025's when any volume row has an MS-SSIM, else SynthRAD2023's."""
    has_2025 = any(math.isfinite(r.get('ms_ssim', math.nan)) for res in results for r in res.volumes)
    return VOLUME_METRICS_2025 if has_2025 else VOLUME_METRICS


def dose_title(name: str) -> str:
    """'photon dose MAE' ... of a dose column."""
    metric, modality = split_column(name)
    return f'{modality} {DOSE_TITLES[metric]}'


def dose_note(results: list[Result]) -> str:
    """How the dose columns were made: the metrics, and the settings of the rows' dose records (all of them when
    the rows differ)."""
    settings = {json.dumps(r.dose.get('settings', {}), sort_keys=True) for r in results if r.dose}
    shown = '; '.join(', '.join(f'{k} {v}' for k, v in json.loads(text).items()) for text in sorted(settings))
    differ = ' THE ROWS WERE SCORED WITH DIFFERENT DOSE SETTINGS: ' if len(settings) > 1 else ' Settings: '
    return f'Fused volume, mean ± std over test subjects. {DOSE_NOTE}.{differ}{shown or "not recorded"}.'


def table_sections(results: list[Result], device: str = '') -> list[Section]:
    """The report's tables, each with a row per result: per-slice PSNR/SSIM (the paper's Tables II-V), the
    SynthRAD2023 volume metrics per plane and fused, and cost (parameters, training and inference time)."""
    planes = planes_present(results)
    slice_stats = [(METRIC_TITLES[m], m, lambda r, m=m: r.slice_stat(m)) for m in SLICE_METRICS]
    for p in planes:
        slice_stats += [(f'{METRIC_TITLES[m]} {p}', m, lambda r, m=m, p=p: r.slice_stat(m, p)) for m in SLICE_METRICS]
    volume_stats = []
    names = volume_metric_names(results)
    for p in [*planes, 'fused']:
        unit = {'mae': ' (HU)'}
        volume_stats += [(f'{METRIC_TITLES[m]}{unit.get(m, "")} {p}', m, lambda r, m=m, p=p: r.volume_stat(m, p))
                         for m in names]
    challenge, window = (('SynthRAD2025', 'MS-SSIM after clipping to [-1024, 3000] HU') if names == VOLUME_METRICS_2025
                         else ('SynthRAD2023', 'SSIM after clipping to [-1024, 3000] HU'))
    sections = [
        _section('Per-slice PSNR and SSIM (as in the paper, Tables II-V)',
                 'Every test slice at the training size, images in [-1, 1] (data range 2), whole slice; mean ± std '
                 'over slices, all planes and per plane (x sagittal, y coronal, z axial).', results, slice_stats),
        _section(f'{challenge} volume metrics',
                 f'Slices put back into one volume per plane and a fused one, in source units; MAE in HU (CT), PSNR '
                 f'and {window} (MR: the target\'s normalisation window), inside the '
                 'body mask; mean ± std over test subjects.', results, volume_stats),
    ]
    dose = [c for c in DOSE_METRICS if any(math.isfinite(v.get(c, math.nan)) for r in results for v in r.volumes)]
    if dose:
        sections.append(_section('Dose: the plan on the CT recomputed on the synthetic CT', dose_note(results),
                                 results, [(dose_title(c), c, lambda r, c=c: r.volume_stat(c, 'fused'))
                                           for c in dose]))
    cost_rows = []
    for r in results:
        has_frozen = math.isfinite(r.params_frozen) and r.params_frozen > 0
        frozen = f' ({r.params_frozen / 1e6:.2f} M frozen)' if has_frozen else ''
        params = f'{r.params_total / 1e6:.2f} M{frozen}' if math.isfinite(r.params_total) else '-'
        infer = f'{r.inference_ms:.2f} ms' if math.isfinite(r.inference_ms) else '-'
        flops = f'{r.train_flops / 1e12:.3g} T' if math.isfinite(r.train_flops) else '-'
        cost_rows.append([Cell(r.label), Cell(params), Cell(format_seconds(r.train_seconds)), Cell(flops),
                          Cell(infer), Cell(format_seconds(r.volume_seconds)), Cell(peak_memory_text(r.peaks))])
    sections.append(Section('Cost', 'Parameters of the A -> B generator used at test time (trainable + frozen; the '
                            'frozen part in brackets), training wall time (all sessions), training FLOPs (one step '
                            'counted with torch\'s FlopCounterMode, times the steps trained), inference time per '
                            f'slice (generator forward, batch 1{", " + device if device else ""}; a 3D row: its '
                            'sliding-window pass over a test volume per slice of that volume), test.py\'s model time '
                            'per test volume (TTA and ensemble members included), and the peak memory of training '
                            'and of test.py (host resident set; on a GPU also its allocator\'s peak), MiB.',
                            ['model', 'parameters', 'training time', 'training FLOPs', 'inference / slice',
                             'prediction / volume', 'peak memory train / test'], cost_rows))
    return sections


PEAK_KEYS = tuple(f'{stage}_peak_{kind}_mib' for stage in ('train', 'test') for kind in ('rss', 'gpu'))


def peak_memory_text(peaks: dict) -> str:
    """'812 / 1503 MiB' (host peaks of training / test.py), '+ GPU 2048 / 1024 MiB' on a GPU, '-' where unknown."""
    def pair(kind: str) -> str:
        values = [peaks.get(f'{stage}_peak_{kind}_mib', math.nan) for stage in ('train', 'test')]
        return ' / '.join(f'{v:.0f}' if math.isfinite(v) else '-' for v in values)
    text = pair('rss')
    if text == '- / -':
        return '-'
    return f'{text} MiB' + (f' + GPU {pair("gpu")} MiB' if pair('gpu') != '- / -' else '')


def markdown_cell(cell: Cell) -> str:
    """Bold (best) or underlined (second) main value; '|' escaped."""
    text = cell.text
    if cell.mark and cell.main:
        wrapped = f'**{cell.main}**' if cell.mark == 'best' else f'<u>{cell.main}</u>'
        text = text.replace(cell.main, wrapped, 1)
    return text.replace('|', '\\|')


def markdown_tables(sections: list[Section]) -> str:
    """The sections as Markdown: a '## title' heading, the note, and a pipe table."""
    out = []
    for s in sections:
        out += [f'## {s.title}', '', s.note, '', '| ' + ' | '.join(s.header) + ' |',
                '|' + '|'.join(['---'] + ['---:'] * (len(s.header) - 1)) + '|']
        out += ['| ' + ' | '.join(markdown_cell(c) for c in row) + ' |' for row in s.rows]
        out.append('')
    return '\n'.join(out)


def csv_row(result: Result, planes: list[str]) -> dict:
    """One wide CSV row of a result: every statistic as <name>_mean/_std (NaN left empty), then the costs."""
    row = {'model': result.label, 'kind': result.model, 'n_slices': len(result.slices),
           'n_subjects': len({r['subject'] for r in result.volumes})}

    def put(name: str, stat: Stat) -> None:
        row[f'{name}_mean'] = stat.mean if stat.n else ''
        row[f'{name}_std'] = stat.std if stat.n else ''
    for m in SLICE_METRICS:
        put(f'slice_{m}', result.slice_stat(m))
    for p in planes:
        for m in SLICE_METRICS:
            put(f'slice_{m}_{p}', result.slice_stat(m, p))
    for p in [*planes, 'fused']:
        for m in volume_metric_names([result]):
            put(f'volume_{m}_{p}', result.volume_stat(m, p))
    for c in DOSE_METRICS:
        if any(math.isfinite(r.get(c, math.nan)) for r in result.volumes):
            put(c, result.volume_stat(c, 'fused'))
    for key, value in (('params_total', result.params_total), ('params_frozen', result.params_frozen),
                       ('train_seconds', result.train_seconds), ('train_flops', result.train_flops),
                       ('inference_ms_per_slice', result.inference_ms), ('volume_seconds', result.volume_seconds),
                       *((key, result.peaks.get(key, math.nan)) for key in PEAK_KEYS)):
        row[key] = value if math.isfinite(value) else ''
    return row


def write_table_csv(path: str, results: list[Result]) -> None:
    """``table.csv``: one row per result (see :func:`csv_row`)."""
    planes = planes_present(results)
    rows = [csv_row(r, planes) for r in results]
    def write(f) -> None:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ['model'])
        writer.writeheader()
        writer.writerows(rows)
    atomic_write(write, path, binary=False)

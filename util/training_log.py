"""The training log for programs: ``checkpoints/NAME/loss_log.jsonl``, beside the human ``loss_log.txt``.

One JSON object per line, appended as training goes (a resumed run appends, like the text log; under torchrun
only rank 0 writes). Every record has a ``kind``:

- ``{"kind": "start", "date": "2025-05-01T14:03:59+02:00"}``: a training session began (a new run or a
  ``--continue_train`` resume; the text log's ``==== Training Loss (date) ====`` line), local time, ISO 8601.
- ``{"kind": "iteration", "epoch": 3, "iters": 120, "time": 0.0513, "data": 0.0021, "losses": {"G_GAN": 0.69}}``:
  every ``--print_freq`` images (the text log's ``(epoch: E, iters: I, time: T, data: D) name: value`` line).
  epoch: as train.py counts them (from --epoch_count, 1 by default); iters: images seen in this epoch, all ranks
  together; time: seconds of computation per image (the step's time / --batch_size); data: seconds spent waiting
  for the batch; losses: name -> value of the current losses (weighted as the model adds them, averaged over
  ranks).
- ``{"kind": "validation", "epoch": 3, "seconds": 12.34, "metric": "slice_psnr", "score": 27.1,
  "scores": {"mae": 81.2, "psnr": 26.4, "ssim": 0.91, "slice_psnr": 27.1, "slice_ssim": 0.88}}``: the val split
  scored after an epoch (``--val_freq``; the text log's ``(validation epoch: N, time: S s)`` line). seconds: how
  long validation took; metric and score: what ``--val_metric`` chose and its value; scores: every metric
  computed (evaluation.validation.METRICS: the fused volume's MAE in HU, PSNR, SSIM, and the per-slice ones).

- ``{"kind": "flops", "step_flops": 2.31e9}``: floating-point operations of the run's first training step
  (torch's ``FlopCounterMode``: forward and backward of every network the step runs; one process's share under
  torchrun), written once, after that step of a new run (not under ``--compile``).
- ``{"kind": "end", "train_seconds": 61.2, "total_iters": 57, "peak_rss_mib": 812.5, "peak_gpu_mib": null}``: a
  session ended (all epochs, the time budget, early stopping): the training loop's seconds so far (resumed sessions
  included, what ``--time_budget_min`` counts), images seen, and the session's peak memory in MiB (util/peak_memory.py:
  host resident set; GPU: torch's allocator, null on a CPU).

Numbers are plain JSON numbers at full precision (the text log rounds them); a non-finite one (NaN, inf) is
``null``, so every line is valid JSON. A run killed while writing can leave an unfinished last line: the reader
skips it and the next session's writer removes it before appending.
"""
from __future__ import annotations

import datetime
import json
import math
import numbers
import os

from util.disk import writing

LOG_NAME = 'loss_log.jsonl'


def plain(value: object) -> object:
    """``value`` as plain JSON: dicts and lists element-wise, integers as int, other numbers (tensors, numpy
    scalars) as float, NaN and inf as None."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    number = float(value)
    return number if math.isfinite(number) else None


class TrainingLog:
    """Appends records to one loss_log.jsonl (a full or read-only disk: util.disk.WriteError naming it)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def append(self, record: dict) -> None:
        line = json.dumps(plain(record), allow_nan=False)
        with writing(self.path), open(self.path, 'a', encoding='utf-8') as f:
            f.write(line + '\n')

    def start(self) -> None:
        """Begin a session: drop an unfinished last line (a run killed while writing it), append a start record."""
        with writing(self.path):
            drop_unfinished_line(self.path)
        self.append({'kind': 'start', 'date': datetime.datetime.now().astimezone().isoformat(timespec='seconds')})

    def iteration(self, epoch: int, iters: int, losses: dict, t_comp: float, t_data: float) -> None:
        self.append({'kind': 'iteration', 'epoch': epoch, 'iters': iters, 'time': t_comp, 'data': t_data,
                     'losses': {k: float(v) for k, v in losses.items()}})

    def validation(self, metric: str, entry: dict) -> None:
        """``entry``: the validator's history item of the epoch ({'epoch', 'score', 'seconds', 'scores'})."""
        self.append({'kind': 'validation', 'epoch': entry['epoch'], 'seconds': entry['seconds'], 'metric': metric,
                     'score': entry['score'], 'scores': entry['scores']})

    def flops(self, step_flops: float) -> None:
        self.append({'kind': 'flops', 'step_flops': step_flops})

    def end(self, train_seconds: float, total_iters: int, memory: dict) -> None:
        """``memory``: :func:`util.peak_memory.peak_memory` of the session."""
        self.append({'kind': 'end', 'train_seconds': train_seconds, 'total_iters': total_iters, **memory})


def drop_unfinished_line(path: str) -> None:
    """Cut a last line that has no newline (the rest of a killed write) off the file at ``path``, if any."""
    if not os.path.isfile(path):
        return
    with open(path, 'rb+') as f:
        end = f.seek(0, os.SEEK_END)
        pos = end
        while pos > 0:
            step = min(pos, 1 << 16)
            f.seek(pos - step)
            chunk = f.read(step)
            if pos == end and chunk.endswith(b'\n'):
                return
            newline = chunk.rfind(b'\n')
            if newline >= 0:
                f.truncate(pos - step + newline + 1)
                return
            pos -= step
        f.truncate(0)


def read_training_log(path: str) -> list[dict]:
    """The records of a loss_log.jsonl in order. An unfinished last line (no newline, not JSON: a killed run) is
    skipped; any other line that is not a JSON object with a ``kind`` is a ValueError naming the file and line."""
    with open(path, encoding='utf-8') as f:
        lines = f.readlines()
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines) and not line.endswith('\n'):
                break
            raise ValueError(f'{path}, line {number}: not JSON ({e}): {line.strip()[:80]!r}') from None
        if not isinstance(record, dict) or not isinstance(record.get('kind'), str):
            raise ValueError(f'{path}, line {number}: not a training log record (a JSON object with a "kind"): '
                             f'{line.strip()[:80]!r}')
        records.append(record)
    return records


def iteration_seconds(path: str) -> float:
    """Mean computation time per image (s) over the iteration records of the loss_log.jsonl at ``path`` (data
    loading, validation and the SAM cache build left out); NaN when the file is missing (a run trained before
    this log existed) or holds no timed iteration."""
    if not os.path.isfile(path):
        return math.nan
    times = [r['time'] for r in read_training_log(path) if r['kind'] == 'iteration' and r.get('time') is not None]
    return sum(times) / len(times) if times else math.nan


def logged_step_flops(path: str) -> float:
    """FLOPs of one training step from the loss_log.jsonl at ``path`` (its ``flops`` record); NaN when the file is
    missing or has none (a run trained before the record existed, or under --compile)."""
    if not os.path.isfile(path):
        return math.nan
    flops = [r['step_flops'] for r in read_training_log(path) if r['kind'] == 'flops' and r.get('step_flops')]
    return float(flops[0]) if flops else math.nan


def training_summary(path: str) -> dict[str, float]:
    """From the sessions' ``end`` records of the loss_log.jsonl at ``path``: {'train_seconds': the training loop's
    seconds at the last end (all sessions), 'peak_rss_mib', 'peak_gpu_mib': the largest over the sessions (MiB)};
    NaN where no session recorded it (a missing file, a killed session, a CPU run's GPU)."""
    records = [r for r in read_training_log(path) if r['kind'] == 'end'] if os.path.isfile(path) else []
    summary = {key: max((float(r[key]) for r in records if r.get(key) is not None), default=math.nan)
               for key in ('peak_rss_mib', 'peak_gpu_mib')}
    summary['train_seconds'] = float(records[-1]['train_seconds']) if records else math.nan
    return summary

"""Run train.py in this process and SIGKILL it at a chosen moment (used by test_checkpoint_unit.py):

    python tests/kill_worker.py EVENT TARGET COUNT [train.py arguments]

EVENT 'replace': right after ``os.replace`` put the file TARGET in place for the COUNT-th time;
'write': when the COUNT-th temporary file for TARGET has been created, before anything is written into it;
'batch': before the COUNT-th batch reaches the model; 'none': never. The process runs with umask 027, so the
tests can check that files get the umask's permissions.
"""
import os
import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import data  # noqa: E402
import train  # noqa: E402

event, target, count, args = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
seen = 0


def hit() -> None:
    global seen
    seen += 1
    if seen == count:
        os.kill(os.getpid(), signal.SIGKILL)


if event == 'replace':
    real_replace = os.replace

    def replace(src, dst, *a, **k):
        real_replace(src, dst, *a, **k)
        if os.path.basename(dst) == target:
            hit()
    os.replace = replace
elif event == 'write':
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*a, **k):
        fd, path = real_mkstemp(*a, **k)
        if os.path.basename(path).startswith('.' + target + '.'):
            hit()
        return fd, path
    tempfile.mkstemp = mkstemp
elif event == 'batch':
    real_iter = data.DatasetDataLoader.__iter__

    def batches(self):
        for batch in real_iter(self):
            hit()
            yield batch
    data.DatasetDataLoader.__iter__ = batches

os.umask(0o027)
train.main(args)

"""Run under torchrun by test_distributed.py: checks collectives and DDP weight sync on 2 gloo processes."""
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from options.train_options import TrainOptions  # noqa: E402
from models import create_model  # noqa: E402
from util import distributed  # noqa: E402

out = Path(sys.argv[1])
opt = TrainOptions().parse(['--model', 'pix2pix', '--netG', 'unet_128', '--ngf', '4', '--ndf', '4', '--gpu_ids', '-1',
                            '--norm', 'syncbatch', '--checkpoints_dir', str(out / 'ckpt'), '--display_id', '0'])
avg = distributed.average_across_ranks({'x': float(opt.rank + 1), 'y': 10.0 * opt.rank})
model = create_model(opt)
model.setup(opt)
torch.manual_seed(100 + opt.rank)  # different data on each rank
for _ in range(2):
    model.set_input({'A': torch.rand(2, 3, 128, 128) * 2 - 1, 'B': torch.rand(2, 3, 128, 128) * 2 - 1,
                     'A_paths': ['a', 'b']})
    model.optimize_parameters()
checksum = sum(float(p.double().sum()) for p in model.unwrap('G').parameters())
(out / f'rank{opt.rank}.json').write_text(json.dumps({'avg': avg, 'checksum': checksum, 'world': opt.world_size,
                                                      'main': distributed.is_main_process()}))
distributed.cleanup()

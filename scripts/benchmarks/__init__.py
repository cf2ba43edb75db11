"""The benchmarks of scripts/benchmark.py, one module each (train, data_loader, predict, cache, sam) and the helpers
they share (timing.py). A module's ``bench_*(args)`` runs in the command's process and prints; its ``run_*_config
(cfg)`` runs one configuration in a fresh process (``benchmark.py _one KIND CFG``) and imports the project
(models/, data/, options/) only inside, so that ``train --code DIR`` imports DIR's."""

"""Training runs: the YAML training config, the integer (NITI) and float32 trainers, and `nitisim train`.

Files, one job each:
  config.py      strict YAML -> frozen TrainConfig (every error names file and key)
  data.py        dataset loading, subsets and the per-step batches (order and augmentation)
  integer.py     the integer trainer on the training graph (any kernel table)
  fp32.py        the float32 torch trainer of the same ModelSpec (imports torch; nothing else does)
  loop.py        the epoch loop shared by both: metrics, checkpoints, timing, summary
  averaging.py   the integer weight average over the last epochs (average_epochs)
  checkpoint.py  atomic checkpoint files
  runfiles.py    metrics.jsonl, summary.json, timing.json
  folder_lock.py the run folder's lock: one writer at a time, and the folder proven writable first
  progress.py    the plain-text progress line on stderr
  stage.py       one training run on a parsed config (train_int8, train_fp32): what `train` and `run` call
  cli.py         `nitisim train`: argv -> config -> stage.py
"""

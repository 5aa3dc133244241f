"""Reports: `nitisim compare` joins a training run, its float32 twin and simulations into one report.

Files, one job each:
  runs.py      strict reader of a training run folder (metrics.jsonl, summary.json, timing.json)
  sims.py      strict reader of a simulation folder (summary.json)
  storage.py   bytes by tensor role from the training graph, integer versus float32
  stats.py     shares, Spearman rank correlation, least-squares fit with R^2, Pareto front
  join.py      measured seconds and simulated cycles per (layer, phase), and their agreement
  tables.py    the report's sections and tables as formatted cells
  figures.py   the report's figures by name (SVG text)
  plots.py     matplotlib drawing (imported lazily, object API only)
  html.py      report.html (self-contained)      markdown.py  report.md
  numbers.py   compare.json                       write.py     writes a report folder
  cli.py       `nitisim compare`
"""

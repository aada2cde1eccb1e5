"""A run, seen: one self-contained HTML report, and the worst clips on any quality signal.

    python -m pipeline.report <out> [--run-id RUN ...] -o report.html [--usd-per-gpu-hour 2.5]
    python -m pipeline.report rank <out> --by <signal> --top N [--json]

data.py      the runs' metrics rows, per-second rows and thumbnails, from a local folder or S3
summary.py   outcome and cost, throughput per worker, failures by error, per-policy means
rank.py      the clips worst on one signal, as records (JSON) and a text table
storyboards.py  a storyboard's segments with their own signals, and its switches
plots.py     the figures (matplotlib), as PNG
page.py      the HTML page (Jinja2), figures and thumbnails inlined
__main__.py  the command line
"""

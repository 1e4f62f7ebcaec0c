"""labcloud's benchmarks: the same work done through labcloud and by hand, side by side (issue 8).

`python -m bench [--quick] [--out DIR]` brings up its own lab (never the default one),
runs the seven measurements and writes results.json, chart.png and a Markdown table.
docs/performance.md says how to read them.
"""

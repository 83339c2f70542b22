"""OPAL against what a user would do instead, on the paper's spurious-correlation protocol (and, with --settings, the
imbalanced one), under both plans (issue 13).

Methods (one experiment engine, `opal_nb.experiments.run_method`): none, reweight (sample weights: each group weighs as
if the plan's rows were added), duplicate and smote (inside each (label x attribute) group), fair_reduction (fairlearn
ExponentiatedGradient with ErrorRateParity; logistic regression only by default, see --reduction-classifiers), fair_threshold (fairlearn ThresholdOptimizer, equalized odds),
opal_gpt4 (the paper's released GPT-4 rows) and opal_tabular (TabularLM with its defaults writing every row: what
OPALOverSampler does with its defaults, GENERATED_SHARE = 1; `--methods ... opal` adds the defaults computed from
opal_tabular's rows, see bench_corpus.opal_defaults, which differ once the default share is below 1; `--methods ... opal_select`
adds OPALOverSampler(select_with=<the classifier scored>, derived={'<attribute>_positive': (attribute, 0)}) under the
'minority' plan: it fills every (label x attribute) group to the largest, which on these splits is the minority groups
filled to the majority groups' size, and chooses among written rows, half, copies and none on validation rows cut from
the training rows).
Plans: 'minority' (every synthetic row in the two minority groups, what OPALOverSampler does; the figures are read at
the k that fills both minority groups to the majority groups' size: 80 rows, k = 4, for diabetes with R = 100; 30 rows,
k = 3, for gender and heart failure with R = 50) and 'released' (the groups of the GPT-4 file, read at k = 5, R rows,
as the paper). Classifiers: logistic regression and random forest with the paper's
settings; seeds 1, 2, 6, 8, 42. Printed: mean worst-group and overall test error per data set x classifier x method,
and per plan the count of cells where OPAL is at or below the best of reweighting, group SMOTE and group duplication.
Figures are printed and written to --out, never asserted.

    python bench/bench_compare.py                                   # everything (TabularLM: ~1.5 min a task on a free core)
    python bench/bench_compare.py --no-generate                     # only generator rows already in the cache
    python bench/bench_compare.py --report-only                     # the tables of what --out holds
    python bench/bench_compare.py --settings imbalanced --plans minority --out bench/results/compare_imbalanced.csv
"""
from __future__ import annotations
import argparse, sys, warnings
from pathlib import Path

import numpy as np
import pandas as pd

from opal_nb.data import PAPER_DATASETS
from opal_nb.experiments import (USER_METHODS, FAIRLEARN_METHODS, paper_methods, run_method, split_from_paper, paper_classifiers, cache_path,
                                 paper_data_dir, fill_size)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'bench'))
from bench_corpus import opal_defaults, select_method  # noqa: E402
READ_AT = {'minority': 'fill', 'released': 5}  # minority: the rows that fill both minority groups (k_fill); released: R rows
BASELINES = ('reweight', 'smote', 'duplicate')
OPALS = ('opal_tabular', 'opal', 'opal_select')  # TabularLM writing every row (OPALOverSampler's defaults while GENERATED_SHARE is 1), and opal (`--methods ... opal`: the defaults, from opal_tabular's rows)


def run(data_dir, datasets, plans, methods, classifiers, seeds, cache_dir, generate: bool, reduction_classifiers=('logistic',),
        settings=('spurious',)) -> pd.DataFrame:
    table = paper_methods()
    parts, skipped = [], []
    for setting in settings:
        for plan in plans:
            for d in datasets:
                if setting not in PAPER_DATASETS[d].settings: continue
                for seed in seeds:
                    split = split_from_paper(data_dir, d, setting, seed)
                    clfs = {c: clf for c, clf in paper_classifiers(d).items() if c in classifiers}
                    for name in methods:
                        if name == 'opal_select':
                            if plan != 'minority' or split.attribute is None or split.positive is not None: continue  # the sampler fills the groups it finds
                            derived = {f'{split.attribute}_positive': (split.attribute, 0)}
                            with warnings.catch_warnings():
                                warnings.simplefilter('ignore')
                                r = pd.concat([run_method(split, name, select_method(split, clf, derived=derived), {c: clf}, None, plan, cache_dir)
                                               for c, clf in clfs.items()], ignore_index=True)
                            k_fill = 5 * fill_size(split) / split.n_real
                            parts.append(r.assign(plan=plan, k_fill=k_fill, k=k_fill))
                            print(f"{setting:10s} {plan:9s} {d:15s} seed {seed:2d} {name}", file=sys.stderr, flush=True)
                            continue
                        m = table[name]
                        if name == 'opal_gpt4' and plan == 'minority': continue  # the released rows have the released plan
                        if setting == 'imbalanced' and name in FAIRLEARN_METHODS: continue  # no attribute to condition on
                        derived = name == 'opal' and (cache_path(cache_dir, split, 'opal_tabular', table['opal_tabular'], plan) / 'synthetic.csv').exists()
                        if derived: m = opal_defaults(split, cache_dir, plan)  # from the rows opal_tabular wrote (run before it)
                        elif not generate and m.generate is not None and name in OPALS and \
                                not (cache_path(cache_dir, split, name, m, plan) / 'synthetic.csv').exists():
                            skipped.append((setting, plan, d, seed, name)); continue
                        use = {c: v for c, v in clfs.items() if not (name == 'fair_reduction' and c not in reduction_classifiers)}
                        with warnings.catch_warnings():
                            warnings.simplefilter('ignore')
                            r = run_method(split, name, m, use, range(6), plan, cache_dir)
                        parts.append(r.assign(plan=plan, k_fill=5 * fill_size(split) / split.n_real))
                        print(f"{setting:10s} {plan:9s} {d:15s} seed {seed:2d} {name}", file=sys.stderr, flush=True)
    if skipped: print(f"not generated (--no-generate): {len(skipped)} tasks, e.g. {skipped[:3]}", file=sys.stderr)
    return pd.concat(parts, ignore_index=True)


def report(tidy: pd.DataFrame) -> str:
    out = []
    for setting in sorted(tidy.setting.unique(), reverse=True):  # spurious first
        for plan, k in READ_AT.items():
            at = tidy.k_fill if k == 'fill' else k
            d = tidy[(tidy.setting == setting) & (tidy.plan == plan) & np.isclose(tidy.k, at) & tidy.metric.isin(['worst', 'error'])]
            if d.empty: continue
            t = d.pivot_table(index=['dataset', 'classifier', 'metric'], columns='method', values='value', aggfunc='mean')
            n = d.groupby(['dataset', 'classifier', 'method']).seed.nunique().unstack()
            order = [m for m in ('none', *BASELINES, 'fair_reduction', 'fair_threshold', 'opal_gpt4', *OPALS) if m in t.columns]
            out.append(f"\n== {setting}, plan '{plan}', k = {k} ({'the rows that fill the minority groups' if plan == 'minority' else 'R rows'}); "
                       f"mean over seeds (seeds per cell: {int(n.min().min())}-{int(n.max().max())})\n")
            out.append(t[order].round(3).to_string())
            w = t.xs('worst', level='metric')
            for o in OPALS:
                if o not in w: continue
                best = w[[b for b in BASELINES if b in w]].min(axis=1)
                gap = w[o] - best
                wins = int((gap <= 1e-12).sum())
                out.append(f"\nworst-group error, {o} minus the best of {', '.join(BASELINES)}: "
                           + ', '.join(f"{a}/{b} {v:+.3f}" for (a, b), v in gap.items())
                           + f"\n-> {o} at or below the best baseline in {wins} of {len(gap)} cells")
    return '\n'.join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data-dir', default=None)
    p.add_argument('--cache-dir', default=str(ROOT / '.opal_cache' / 'engine'))
    p.add_argument('--datasets', nargs='*', default=None, help='default: every data set of the release that has the setting')
    p.add_argument('--plans', nargs='*', default=['minority', 'released'])
    p.add_argument('--settings', nargs='*', default=['spurious'], help="'spurious' and/or 'imbalanced' (the paper's two protocols)")
    p.add_argument('--methods', nargs='*', default=[*USER_METHODS, 'opal_gpt4'])
    p.add_argument('--classifiers', nargs='*', default=['logistic', 'random_forest'])
    p.add_argument('--seeds', nargs='*', type=int, default=[1, 2, 6, 8, 42])
    p.add_argument('--no-generate', action='store_true', help='skip generator tasks whose rows are not cached')
    p.add_argument('--reduction-classifiers', nargs='*', default=['logistic'],
                   help="classifiers for fair_reduction (ExponentiatedGradient refits the classifier ~50 times: with the paper's "
                        "352-tree forest that is 136 s per task on a free core, so by default only logistic regression)")
    p.add_argument('--report-only', action='store_true')
    p.add_argument('--out', default=str(ROOT / 'bench' / 'results' / 'compare.csv'))
    a = p.parse_args(argv)
    if a.report_only: tidy = pd.read_csv(a.out)
    else:
        data_dir = paper_data_dir(a.data_dir)
        if a.datasets is None: a.datasets = [d for d, s in PAPER_DATASETS.items() if any(x in s.settings for x in a.settings)]
        if data_dir is None: sys.exit("the paper's release was not found: pass --data-dir or set OPAL_PAPER_DATA")
        tidy = run(data_dir, a.datasets, a.plans, a.methods, a.classifiers, a.seeds, a.cache_dir, not a.no_generate, a.reduction_classifiers,
                   a.settings)
        keep = tidy[tidy.metric.isin(['error', 'worst', 'minority', 'majority', 'diff', 'balanced_accuracy'])]
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        keep.to_csv(a.out, index=False)
    print(report(tidy))


if __name__ == '__main__':
    main()

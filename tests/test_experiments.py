"Integration, property-based and bad-input tests of opal_nb.experiments (the paper's protocols)."
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from opal_nb.core import OPALInputError
from opal_nb.data import load_default, imbalanced_split, spurious_split, PAPER_DATASETS
from opal_nb.evaluate import unpenalized_logistic
from opal_nb.experiments import (ExperimentSplit, PaperMethod, TIDY_COLUMNS, split_from_paper, split_from_protocol,
                                 group_plan, order_by_plan, row_groups, plan_counts, paper_methods, run_method, run_paper,
                                 error_table, smote_rows, duplicate_rows, generator_rows, released_rows, k_rows,
                                 fit_power_law, scaling_study, minority_groups, cached_results)

PAPER = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'opal-paper'
needs_paper = pytest.mark.skipif(not PAPER.is_dir(), reason=f"the paper's release is not at {PAPER}")
LOGISTIC = {'logistic': unpenalized_logistic()}


@pytest.fixture(scope='module')
def default_splits():
    d = load_default()
    imb = split_from_protocol(imbalanced_split(d.frame, d.target, 100, 10, random_state=1), 1, 'default')
    spur = split_from_protocol(spurious_split(d.frame, d.target, 'sex', 60, 5, random_state=1, test_size=100, positive=2), 1, 'default', positive=2)
    return imb, spur


# ---- the paper's figure -------------------------------------------------------------------------
@needs_paper
def test_opal_gpt4_reproduces_readme_figure(tmp_path):
    tidy = run_paper(PAPER, ['openmlDiabetes'], ['imbalanced'], ['opal_gpt4'], ['logistic'], cache_dir=tmp_path, progress=False)
    assert list(tidy.columns) == TIDY_COLUMNS
    assert error_table(tidy).iloc[0].round(3).tolist() == [0.463, 0.337, 0.295, 0.271, 0.264, 0.261]
    again = run_paper(PAPER, ['openmlDiabetes'], ['imbalanced'], ['opal_gpt4'], ['logistic'], cache_dir=tmp_path, progress=False)
    pd.testing.assert_frame_equal(tidy, again)  # from the cache


@needs_paper
@pytest.mark.parametrize('dataset', list(PAPER_DATASETS))
def test_release_train_test_identical_across_method_folders(dataset):
    from opal_nb.data import paper_split
    for setting in PAPER_DATASETS[dataset].settings:
        for seed in (1, 42):
            a = paper_split(PAPER, dataset, setting, seed)
            for m in ('smote', 'duplicate'):
                b = paper_split(PAPER, dataset, setting, seed, m)
                pd.testing.assert_frame_equal(a.train, b.train)
                pd.testing.assert_frame_equal(a.test, b.test)


@needs_paper
def test_released_plan_is_minority_first_in_imbalanced():
    sp = split_from_paper(PAPER, 'heart_failure', 'imbalanced', 1)
    assert group_plan(sp, sp.n_real) == [(0,)] * sp.n_real  # the GPT-4 CSV starts with R rows of the minority class
    assert minority_groups(sp) == [(0,)]
    with pytest.raises(OPALInputError, match='has 110 rows, 500 were planned'):
        group_plan(sp, 500)


@needs_paper
@pytest.mark.parametrize('method,fn', [('smote', smote_rows), ('duplicate', duplicate_rows)])
def test_project_baselines_follow_released_group_counts(method, fn):
    sp = split_from_paper(PAPER, 'openmlDiabetes', 'spurious', 1)
    plan = group_plan(sp, sp.n_real, reference=method)
    rows = order_by_plan(sp, fn(sp, plan, sp.seed), plan)
    assert row_groups(sp, rows) == plan  # same group at every position, so at every k
    assert plan_counts(plan) == plan_counts(row_groups(sp, sp.released[method].iloc[:sp.n_real]))
    assert list(rows.columns) == list(sp.train.columns)
    if method == 'duplicate': assert len(rows.merge(sp.train.drop_duplicates())) == len(rows)


@needs_paper
def test_run_paper_skips_craft_in_spurious(tmp_path):
    tidy = run_paper(PAPER, ['craft'], methods=['none'], classifiers=['logistic'], seeds=[1], cache_dir=tmp_path, progress=False)
    assert set(tidy.setting) == {'imbalanced'}
    err = tidy[tidy.metric == 'error']
    assert err.groupby('k').value.nunique().eq(1).all() and err.k.tolist() == list(range(6))


@needs_paper
def test_spurious_metrics_present(tmp_path):
    tidy = run_paper(PAPER, ['heart_failure'], ['spurious'], ['smote'], ['logistic'], seeds=[1], cache_dir=tmp_path, progress=False)
    assert {'error', 'minority', 'majority', 'worst', 'diff', 'balanced_accuracy'} <= set(tidy.metric)
    assert {m for m in tidy.metric if m.startswith('group:')} == {f'group:attribute={a}, label={l}' for a in (0, 1) for l in (0, 1)}
    w = tidy.pivot_table(index='k', columns='metric', values='value')
    assert (w['worst'] >= w[['minority', 'majority']].max(axis=1) - 1e-12).all()


@needs_paper
@pytest.mark.slow
def test_opal_tabular_paper_split_fills_plan():
    sp = split_from_paper(PAPER, 'openmlDiabetes', 'spurious', 2)
    plan = group_plan(sp, sp.n_real)
    rows = generator_rows(sp, plan, sp.seed, epochs=5)
    assert plan_counts(row_groups(sp, rows)) == plan_counts(plan)  # including skin = 0 groups


# ---- the protocol on the default data -----------------------------------------------------------
def test_tabular_never_sees_test_rows(default_splits):
    _, spur = default_splits
    plan = group_plan(spur, 12, 'minority')
    a = generator_rows(spur, plan, 3, epochs=3)
    other = ExperimentSplit(**{**spur.__dict__, 'test': spur.test.iloc[:5] * 0})  # a different test set
    b = generator_rows(other, plan, 3, epochs=3)
    pd.testing.assert_frame_equal(a, b)
    assert len(a.merge(spur.train)) == 0  # the filter drops copies of real rows


def test_cache_resumes_and_adds_classifiers(default_splits, tmp_path):
    imb, _ = default_splits
    calls = []
    def counting(split, plan, seed):
        calls.append(seed)
        return duplicate_rows(split, plan, seed)
    method = PaperMethod(counting, tag='count')
    r1 = run_method(imb, 'dup', method, LOGISTIC, plan='minority', cache_dir=tmp_path)
    r2 = run_method(imb, 'dup', method, LOGISTIC, plan='minority', cache_dir=tmp_path)
    pd.testing.assert_frame_equal(r1, r2)
    assert calls == [1]
    from sklearn.tree import DecisionTreeClassifier
    r3 = run_method(imb, 'dup', method, LOGISTIC | {'tree': DecisionTreeClassifier(random_state=0)}, plan='minority', cache_dir=tmp_path)
    assert calls == [1] and set(r3.classifier) == {'logistic', 'tree'}  # rows reused, only the new classifier fitted
    run_method(imb, 'dup', PaperMethod(counting, tag='changed'), LOGISTIC, plan='minority', cache_dir=tmp_path)
    assert calls == [1, 1]  # a changed tag is a new cache entry
    assert not list(tmp_path.rglob('*.part'))
    with pytest.warns(UserWarning, match='cached under several settings'):
        found = cached_results(tmp_path)
    assert len(found) == len(r3) + len(r1) and list(found.columns) == TIDY_COLUMNS


def test_failed_method_leaves_no_cache(default_splits, tmp_path):
    imb, _ = default_splits
    def broken(split, plan, seed): raise RuntimeError('model crashed')
    with pytest.raises(RuntimeError, match='model crashed'):
        run_method(imb, 'broken', PaperMethod(broken), LOGISTIC, plan='minority', cache_dir=tmp_path)
    assert not list(tmp_path.rglob('*.csv'))


def test_k_zero_equals_none(default_splits):
    imb, _ = default_splits
    m = paper_methods()
    none = run_method(imb, 'none', m['none'], LOGISTIC, plan='minority')
    smote = run_method(imb, 'smote', m['smote'], LOGISTIC, plan='minority')
    none, smote = (r[r.metric == 'error'].reset_index(drop=True) for r in (none, smote))
    assert none.value.nunique() == 1 and none.k.tolist() == list(range(6))
    assert smote.value.iloc[0] == none.value.iloc[0]
    assert smote.value.iloc[5] != none.value.iloc[5]


def test_methods_table_is_extensible(default_splits):
    imb, _ = default_splits
    methods = paper_methods() | {'first_real': PaperMethod(lambda split, plan, seed: split.train[split.train.high_progression == 1].sample(len(plan), replace=True, random_state=seed))}
    r = run_method(imb, 'first_real', methods['first_real'], LOGISTIC, ks=[0, 1], plan='minority')
    assert r.method.unique().tolist() == ['first_real'] and r[r.metric == 'error'].k.tolist() == [0, 1]


# ---- properties ---------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from([(0,), (1,)]), max_size=30), st.integers(0, 15), st.integers(0, 15))
def test_order_by_plan_property(plan, n0, n1):
    split = ExperimentSplit('t', 'imbalanced', 1, pd.DataFrame({'x': [0.0], 'y': [0]}), pd.DataFrame({'x': [0.0], 'y': [0]}), 'y')
    rows = pd.DataFrame({'x': np.arange(n0 + n1, dtype=float), 'y': [0] * n0 + [1] * n1}).sample(frac=1, random_state=0)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        out = order_by_plan(split, rows, plan)
    want, left = [], {(0,): n0, (1,): n1}
    for k in plan:
        if left[k]: want.append(k); left[k] -= 1
    assert row_groups(split, out) == want
    assert out.x.is_unique


@given(st.integers(1, 500), st.integers(0, 5))
def test_k_rows(n_real, k):
    assert k_rows(k, n_real) == -(-k * n_real // 5) and k_rows(5, n_real) == n_real  # rounded up
    assert k_rows(5 * k / n_real, n_real) == k  # a fractional k that names k rows gives them exactly


@settings(max_examples=20, deadline=None)
@given(st.floats(0.05, 0.4), st.floats(0.05, 0.4), st.floats(0.3, 3.0))
def test_fit_power_law_recovers_exponent(e_inf, b, alpha):
    n = np.array([0, 25, 50, 100, 200, 400, 800])
    law = fit_power_law(n, e_inf + b * (1 + n / 100) ** -alpha, 100)
    assert abs(law['alpha'] - alpha) < 0.05 * alpha + 1e-3 and law['rmse'] < 1e-4


# ---- bad input ----------------------------------------------------------------------------------
def test_bad_requests(default_splits):
    imb, _ = default_splits
    with pytest.raises(OPALInputError, match="unknown data set 'adult'"): run_paper('.', ['adult'])
    with pytest.raises(OPALInputError, match="unknown setting 'shift'"): run_paper('.', settings=['shift'])
    with pytest.raises(OPALInputError, match="must be a PaperMethod"): run_paper('.', methods={'x': lambda s, p, r: None})
    with pytest.raises(OPALInputError, match="has no released rows of 'focus'"): group_plan(imb, 5)
    with pytest.raises(OPALInputError, match="needs the paper's release"): released_rows(imb, [(0,)], 1)
    with pytest.raises(OPALInputError, match="at least 4 points"): fit_power_law([0, 1], [0.3, 0.2], 10)
    with pytest.raises(OPALInputError, match="no rows of metric 'best'"):
        error_table(run_method(imb, 'none', paper_methods()['none'], LOGISTIC, plan='minority'), 'best')
    with pytest.raises(OPALInputError, match="needs a sensitive attribute"):
        run_method(imb, 'fair_threshold', paper_methods()['fair_threshold'], LOGISTIC, plan='minority')


@pytest.mark.slow
def test_scaling_study_on_default(default_splits):
    imb, _ = default_splits
    tidy, fits = scaling_study([imb], multiples=(0, 0.5, 1, 2, 3), tabular={'epochs': 10}, progress=False)
    assert sorted(tidy.n_synthetic.unique()) == [0, 50, 100, 200, 300]
    assert fits.alpha.notna().all()


# ---- the benchmark script -----------------------------------------------------------------------
def _bench():
    import importlib.util
    spec = importlib.util.spec_from_file_location('reproduce_paper', Path(__file__).resolve().parents[1] / 'bench' / 'reproduce_paper.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


def test_bench_arguments_and_verdicts():
    bench = _bench()
    cfg = bench.config(bench.parse_args(['--quick']))
    assert cfg['seeds'] == [1, 2] and cfg['classifiers'] == ['logistic'] and 'opal_tabular' in cfg['methods']
    assert bench.config(bench.parse_args([]))['seeds'] == [1, 2, 6, 8, 42]
    rows = [dict(dataset='d', setting='imbalanced', method=m, classifier='logistic', seed=s, k=k, metric='error', value=v + 0.01 * s)
            for m, v in (('smote', 0.30), ('opal_gpt4', 0.25), ('opal_tabular', 0.28)) for s in (1, 2) for k in range(6)]
    text = bench.verdicts(pd.DataFrame(rows))
    assert 'd / imbalanced (2 seeds): logistic: tabular 0.295, beats smote 0.315 (-0.020), vs gpt4 0.265 (+0.030)' in text


@needs_paper
@pytest.mark.slow
def test_bench_quick_runs(tmp_path, capsys):
    tidy = _bench().main(['--quick', '--datasets', 'heart_failure', '--seeds', '1', '--cache-dir', str(tmp_path)])
    assert set(tidy.method) == {'none', 'smote', 'opal_gpt4', 'opal_tabular'}
    assert 'heart_failure / spurious (1 seeds): logistic: tabular' in capsys.readouterr().out


# ---- the pretrained (SmolLM2) methods, on a tiny random chat model --------------------------------
@pytest.fixture(scope='module')
def tiny_chat(default_splits, tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from opal_nb.chat import tiny_chat_model
    from opal_nb.prompt import rows_to_text
    from opal_nb.core import infer_schema
    _, spur = default_splits
    folder = tiny_chat_model(tmp_path_factory.mktemp('tiny') / 'm', corpus=rows_to_text(spur.train, infer_schema(spur.train, spur.target)) * 2)
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


@pytest.mark.parametrize('kind', ['icl', 'ft'])
def test_smol_methods_fill_plan_without_test_rows(default_splits, tiny_chat, kind):
    _, spur = default_splits
    plan = group_plan(spur, 6, 'minority')
    fn = (lambda s: generator_rows(s, plan, 2, 'smol_icl', model=tiny_chat, n_examples=3, batch_size=3)) if kind == 'icl' else \
         (lambda s: generator_rows(s, plan, 2, 'smol_tabular', model=tiny_chat, lora_r=None, max_steps=2, sample_batch_size=3))
    a = fn(spur)
    assert plan_counts(row_groups(spur, order_by_plan(spur, a, plan))) == plan_counts(plan)
    assert list(a.columns) == list(spur.train.columns) and (a.dtypes == spur.train.dtypes).all()
    assert len(a.merge(spur.train)) == 0  # the filter drops copies of real rows
    other = ExperimentSplit(**{**spur.__dict__, 'test': spur.test.iloc[:5] * 0})
    pd.testing.assert_frame_equal(a, fn(other))  # the test rows change nothing


def test_run_paper_default_is_the_fast_methods():
    from opal_nb.experiments import FAST_METHODS
    assert FAST_METHODS == ('none', 'duplicate', 'smote', 'opal_gpt4', 'opal_tabular')
    from opal_nb.experiments import USER_METHODS
    assert set(paper_methods()) == {*FAST_METHODS, *USER_METHODS, 'opal', 'opal_smol_icl', 'opal_smol_ft'}
    with pytest.raises(OPALInputError, match="unknown method 'opal_smol'"):
        run_paper('.', methods=['opal_smol'])


def _bench_pretrained():
    import importlib.util
    spec = importlib.util.spec_from_file_location('bench_pretrained', Path(__file__).resolve().parents[1] / 'bench' / 'bench_pretrained.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


def test_bench_pretrained_tables(tmp_path):
    b = _bench_pretrained()
    rows = [dict(dataset=d, setting='imbalanced', method=m, classifier='logistic', seed=s, k=5, metric='error', value=v + 0.01 * s)
            for d, off in (('a', 0.0), ('b', 0.1)) for m, v in (('smote', 0.30), ('opal_gpt4', 0.25), ('opal_smol_icl', 0.28 + off))
            for s in (1, 2)]
    table = b.k5_table(pd.DataFrame(rows))
    assert table.loc[('imbalanced', 'a', 'logistic', 2), 'opal_smol_icl'] == pytest.approx(0.295)
    assert 'opal_smol_icl / logistic: at or below SMOTE on 1 of 2 data sets; minus GPT-4 rows: a +0.030, b +0.130' in b.verdicts(table)
    log = tmp_path / 'cost.jsonl'
    pd.DataFrame([dict(dataset='a', setting='imbalanced', seed=s, method='opal_smol_icl', planned=10, rows=10, seconds=12.0,
                       fit_s=2.0, sample_s=10.0, sampled=20) for s in (1, 2)]).to_json(log, orient='records', lines=True)
    cost = b.cost_table(log, pd.DataFrame(rows))
    assert cost.loc['opal_smol_icl', 'sample rows/s (median)'] == 2.0 and cost.loc['opal_smol_icl', 'dropped by filters (mean)'] == 0.5


def test_timed_wrapper_counts(default_splits):
    b = _bench_pretrained()
    from opal_nb.experiments import generator_rows
    from opal_nb.generate import TabularLM
    _, spur = default_splits
    plan = group_plan(spur, 4, 'minority')
    t = b.Timed(TabularLM(epochs=2, progress=False, random_state=0))
    rows = generator_rows(spur, plan, 0, t)
    assert t.fit_s > 0 and t.sample_s > 0 and t.sampled >= len(plan) and len(rows) >= len(plan)

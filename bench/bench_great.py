"""Benchmark TabularLM against GReaT (`be_great`) in one run: same tables, same GPT-2 size, same epochs.

For each of the paper's diabetes and heart failure training tables, both generators are trained from scratch
(GReaT gets a randomly initialised GPT-2 with TabularLM's n_layer/n_embd/n_head and a small byte-level BPE
tokenizer trained on the table's own rows, both saved in a temporary folder: no hub download), for the same
number of epochs with the same batch size, one torch thread each, one after the other. Then each samples
unconditional rows and rows of the minority class (TabularLM through its own decoding loop,
`opal_nb.generate.decode_rows`, under its schema constraint; GReaT through `model.generate`, as it ships).
Every row either returns is checked against the table's schema with `opal_nb.filter.row_problems` (and, for
the minority class, its label). Printed: fit seconds, rows returned, valid rows, the valid fraction, valid rows
per second, and our/GReaT ratios measured in this run. TabularLM's sampling takes well under a second, so it is
timed REPEATS = 5 times (same seed, same rows) and the median is used; GReaT's takes seconds and is timed once.

GReaT runs in its own virtual environment (it is the peer's environment, not ours), as a subprocess of this
script (`--great-python`). Create it once with:

    python3 -m venv .opal_cache/great-venv
    .opal_cache/great-venv/bin/pip install torch==2.13.0
    .opal_cache/great-venv/bin/pip install be-great

(inside the project's ignored `.opal_cache/`; `--great-python` points at a venv elsewhere).

Run: `python bench/bench_great.py [--quick] [--datasets openmlDiabetes heart_failure] [--rows 500] [--budget 45]`
(about 4.5 minutes of CPU time with one thread; 11.7 minutes wall time measured while other jobs loaded the 2 cores.
`--quick` trains 400 steps instead of 2000, about 1.7 minutes of CPU: a smoke run, GReaT then writes few or no
valid rows).
Figures are printed, never asserted. `--json out.json` also writes them.
"""
import argparse, json, math, os, signal, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT.parent / 'shared' / 'data' / 'opal-paper'  # the paper's release beside the project (or --data-dir)
GREAT_VENV = ROOT / '.opal_cache' / 'great-venv'  # the peer's environment, inside the project's ignored folder
GREAT_PYTHON = str(GREAT_VENV / 'bin' / 'python')
SETUP = (f"python3 -m venv {GREAT_VENV} && {GREAT_VENV}/bin/pip install torch==2.13.0 && "
         f"{GREAT_VENV}/bin/pip install be-great")
BATCH_SIZE = 16  # TabularLM's default batch size; GReaT gets the same
REPEATS = 5  # TabularLM's sampling is timed this many times (same seed, same rows), the median reported


# ---------------------------------------------------------------------------------------------------------------
# The GReaT side: runs inside the great venv (`--worker JOBDIR`); imports only be_great, pandas, torch.
# ---------------------------------------------------------------------------------------------------------------
class _Deadline(Exception):
    "Raised before a new `generate` past the budget: GReaT catches it and returns the rows it has so far."


class _OutOfTime(BaseException):
    "Raised by SIGALRM when one `generate` overruns the budget by far (a BaseException: GReaT does not catch it)."


def _on_alarm(signum, frame): raise _OutOfTime()


def _great_mode(great, job: dict, mode: str, out_dir: Path) -> dict:
    "Call GReaT's `sample` in chunks until `job['rows']` rows or the time budget; save what it returned."
    import contextlib, io
    import pandas as pd
    target, budget, n = job['target'], job['budget'], job['rows']
    if mode == 'guided_minority':
        budget = job['guided_budget']
        chunk = job['guided_chunk']
        call = lambda m: great.sample(m, conditions={target: f"== {job['minority']}"}, guided_sampling=True,
                                      max_length=job['max_length'], device='cpu')
    else:
        chunk = job['k']
        dist = {job['minority']: 1.0} if mode == 'minority' else job['target_dist']
        call = lambda m: great.sample(m, start_col=target, start_col_dist=dist, k=m, max_length=job['max_length'],
                                      device='cpu')
    seqs, t0 = [0], time.perf_counter()
    deadline = t0 + budget
    orig = great.model.generate
    def counting_generate(*a, **kw):
        if time.perf_counter() > deadline: raise _Deadline('time budget spent')
        out = orig(*a, **kw); seqs[0] += int(out.shape[0]); return out
    great.model.generate = counting_generate
    frames, calls, timed_out, log = [], 0, False, io.StringIO()
    got = 0
    signal.signal(signal.SIGALRM, _on_alarm)
    try:
        while got < n:
            if time.perf_counter() > deadline: timed_out = True; break
            signal.setitimer(signal.ITIMER_REAL, deadline + 30 - time.perf_counter())
            try:
                with contextlib.redirect_stdout(log): df = call(min(chunk, n - got))
            except _OutOfTime:
                timed_out = True; break
            finally: signal.setitimer(signal.ITIMER_REAL, 0)
            calls += 1
            frames.append(df); got += len(df)
    finally: great.model.generate = orig
    timed_out = timed_out or time.perf_counter() > deadline
    seconds = time.perf_counter() - t0
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=great.columns)
    out.astype(object).to_csv(out_dir / f'{mode}.csv', index=False)
    text = log.getvalue()
    if mode == 'guided_minority': attempted = seqs[0] // len(great.columns)  # one generate per column and row
    else: attempted = seqs[0]
    ours = text.count('time budget spent')  # our deadline, reported by GReaT as an error
    return dict(seconds=seconds, returned=len(out), calls=calls, timed_out=timed_out, sequences=attempted,
                great_errors=text.count('error has occurred') + text.count('Error generating sample') - ours,
                great_gave_up=text.count('Unable to generate samples'), log_tail=text[-600:])


def worker(job_dir: Path):
    "Fit GReaT on the job's table and sample every mode; writes result.json and one CSV per mode."
    import pandas as pd, torch, transformers
    import be_great
    from importlib.metadata import version
    from be_great import GReaT
    job = json.loads((job_dir / 'job.json').read_text())
    torch.set_num_threads(job['threads'])
    torch.manual_seed(job['seed'])
    df = pd.read_csv(job_dir / 'train.csv', dtype=job['dtypes'])
    great = GReaT(llm=str(job_dir / 'llm'), experiment_dir=str(job_dir / 'trainer'), epochs=job['epochs'],
                  batch_size=job['batch_size'], float_precision=job['float_precision'],
                  learning_rate=job['learning_rate'], lr_scheduler_type='cosine', warmup_steps=job['warmup_steps'],
                  weight_decay=0.01, max_grad_norm=1.0, save_strategy='no', logging_strategy='no', seed=job['seed'],
                  use_cpu=True, dataloader_num_workers=0)
    t = time.perf_counter()
    trainer = great.fit(df, conditional_col=job['target'])
    fit_s = time.perf_counter() - t
    res = dict(fit_seconds=fit_s, steps=int(trainer.state.global_step),
               params=sum(p.numel() for p in great.model.parameters()),
               versions=dict(be_great=version('be_great'), transformers=transformers.__version__,
                             torch=torch.__version__, pandas=pd.__version__),
               modes={})
    great.model.eval()
    with torch.no_grad():
        great.sample(2, start_col=job['target'], start_col_dist=job['target_dist'], k=2,
                     max_length=job['max_length'], device='cpu')  # warm-up
        for mode in job['modes']:
            res['modes'][mode] = _great_mode(great, job, mode, job_dir)
    (job_dir / 'result.json').write_text(json.dumps(res, indent=1))


# ---------------------------------------------------------------------------------------------------------------
# Our side: runs in the project venv.
# ---------------------------------------------------------------------------------------------------------------
def _value_text(v, precision) -> str:
    "A value as GReaT writes it with `float_precision` (fixed decimals, trailing zeros dropped)."
    if isinstance(v, float):
        s = f"{v:.{precision}f}"
        return s.rstrip('0').rstrip('.') if '.' in s else s
    return str(v).strip()


def great_texts(df, precision: int, seed: int, copies: int = 20) -> list:
    "The table's rows in GReaT's training format ('col is value, ...', shuffled column orders)."
    import numpy as np
    rng = np.random.default_rng(seed)
    cols, rows = list(df.columns), df.itertuples(index=False)
    rows = [list(r) for r in rows]
    return [', '.join(f'{cols[i]} is {_value_text(r[i], precision)}' for i in rng.permutation(len(cols)))
            for _ in range(copies) for r in rows]


def build_llm(df, path: Path, n_layer: int, n_embd: int, n_head: int, precision: int, vocab_size: int,
              seed: int) -> dict:
    "Save a randomly initialised GPT-2 of the given size and a byte-level BPE tokenizer trained on the rows."
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast
    texts = great_texts(df, precision, seed)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=['<|endoftext|>'],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf = GPT2TokenizerFast(tokenizer_object=tok, bos_token='<|endoftext|>', eos_token='<|endoftext|>',
                           unk_token='<|endoftext|>')
    longest = max(len(hf(t)['input_ids']) for t in texts)
    max_length = int(math.ceil(longest * 1.1)) + 4  # one row plus slack: GReaT generates up to max_length tokens
    # guided sampling writes 'col is value; ' per column and then up to 30 tokens: it needs a longer context
    n_positions = 2 * longest + 32
    config = GPT2Config(vocab_size=len(hf), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                        bos_token_id=hf.bos_token_id, eos_token_id=hf.eos_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    model.save_pretrained(path); hf.save_pretrained(path)
    return dict(vocab=len(hf), longest_row_tokens=longest, max_length=max_length, n_positions=n_positions,
                params=sum(p.numel() for p in model.parameters()))


def to_schema_values(df, schema):
    "GReaT's returned cells (read back as text) as numbers where they read as numbers, the rest unchanged."
    import numpy as np, pandas as pd
    def conv(v):
        if v is None or (isinstance(v, float) and math.isnan(v)): return np.nan
        try: x = float(str(v).strip())
        except ValueError: return v
        return int(x) if x.is_integer() else x
    out = pd.DataFrame({c: [conv(v) for v in df[c].tolist()] if c in df else [np.nan] * len(df)
                        for c in schema.names}, index=df.index)
    return out


def _keys(df, schema) -> list:
    "Rows as tuples of numbers rounded to each column's precision (levels as they are), to spot copies."
    return [tuple(round(float(v), schema[c].precision) if schema[c].is_numeric else v for c, v in zip(schema.names, r))
            for r in df[schema.names].itertuples(index=False)]


def check_rows(df, schema, group: dict | None, train=None) -> tuple:
    "(valid rows, valid rows that copy a row of `train`, most common problems) under `schema`, inside `group`."
    from opal_nb.filter import row_problems
    if len(df) == 0: return 0, 0, {}
    probs = row_problems(df, schema)
    for c, v in (group or {}).items():
        off = df[c].map(lambda x: not (isinstance(x, (int, float)) and x == v))
        probs = probs.where(~off | (probs != ''), f'{c}: not the requested {v}')
    bad = probs[probs != '']
    top = bad.str.split(';').str[0].str.replace(r'[-\d.]+ outside', 'N outside', regex=True).value_counts().head(3)
    ok = probs == ''
    real = set(_keys(train, schema)) if train is not None else set()
    copies = sum(k in real for k in _keys(df[ok], schema))
    return int(ok.sum()), int(copies), top.to_dict()


def run_ours(train, target, minority, epochs, rows, seed):
    "Fit TabularLM and time unconditional and minority-class sampling."
    from opal_nb.generate import TabularLM
    lm = TabularLM(epochs=epochs, random_state=seed, progress=False)
    t = time.perf_counter(); lm.fit(train, target=target); fit_s = time.perf_counter() - t
    lm.sample(16, random_state=0)  # warm-up
    res = dict(fit_seconds=fit_s, steps=lm.n_steps_, params=sum(p.numel() for p in lm.model_.parameters()),
               vocab=len(lm.codec_.vocab), context=lm.model_.config.n_positions, modes={})
    for mode, group in [('unconditional', None), ('minority', {target: minority})]:
        times = []
        for _ in range(REPEATS):  # a sample of 500 rows takes well under a second: the median of several is less noisy
            t = time.perf_counter(); out = lm.sample(rows, group, random_state=seed + 1); times.append(time.perf_counter() - t)
        s = statistics.median(times)
        valid, copies, top = check_rows(out, lm.schema_, group, train)
        res['modes'][mode] = dict(seconds=s, returned=len(out), sequences=len(out) + len(lm.rejected_), valid=valid,
                                  copies=copies, problems=top, timed_out=False)
    return res, lm.schema_


def run_great(great_python, train, schema, target, minority, epochs, args, work: Path):
    "Prepare the GReaT job (model, tokenizer, table), run the worker in the great venv, check its rows."
    import pandas as pd
    from opal_nb.generate import TabularLM
    d = TabularLM()
    precision = max([schema[c].precision for c in schema.numeric_columns] + [0])
    llm = build_llm(train, work / 'llm', d.n_layer, d.n_embd, d.n_head, precision, args.vocab_size, args.seed)
    train.to_csv(work / 'train.csv', index=False)
    steps = epochs * -(-len(train) // BATCH_SIZE)
    dist = train[target].value_counts(normalize=True).sort_index()
    job = dict(target=target, minority=minority, target_dist={int(k): float(v) for k, v in dist.items()},
               dtypes={c: str(t) for c, t in train.dtypes.items()}, epochs=epochs, batch_size=BATCH_SIZE,
               learning_rate=args.great_lr, warmup_steps=max(1, steps // 20), float_precision=precision,
               max_length=llm['max_length'], k=args.k, guided_chunk=5, rows=args.rows, budget=args.budget,
               guided_budget=args.guided_budget,
               modes=['unconditional', 'minority'] + (['guided_minority'] if args.guided else []),
               seed=args.seed, threads=1)
    (work / 'job.json').write_text(json.dumps(job, indent=1))
    timeout = 120 + 40 * steps / 100 + 2 * (args.budget + 60) + args.guided_budget + 60
    with open(work / 'worker.log', 'w') as log:
        p = subprocess.run([great_python, str(Path(__file__).resolve()), '--worker', str(work)], stdout=log,
                           stderr=subprocess.STDOUT, timeout=timeout, env={**os.environ, 'TOKENIZERS_PARALLELISM': 'false'})
    if p.returncode != 0 or not (work / 'result.json').exists():
        tail = (work / 'worker.log').read_text()[-3000:]
        raise RuntimeError(f"the GReaT worker failed (exit {p.returncode}); the end of its log:\n{tail}")
    res = json.loads((work / 'result.json').read_text())
    res.update(llm=llm, vocab=llm['vocab'], context=llm['n_positions'])
    for mode, m in res['modes'].items():
        raw = pd.read_csv(work / f'{mode}.csv', dtype=object, keep_default_na=False, na_values=[''])
        rows = to_schema_values(raw, schema)
        m['valid'], m['copies'], m['problems'] = check_rows(rows, schema, None if mode == 'unconditional' else {target: minority}, train)
    return res


def _fmt(x, nd=1):
    return '-' if x is None else (f'{x:,.{nd}f}' if isinstance(x, float) else f'{x:,}')


def report(results: list):
    "Print the table and the ratios."
    head = ['table', 'generator', 'params', 'fit s', 'mode', 'asked', 'generated', 'returned', 'valid', 'valid %', 'copies',
            'sample s', 'valid rows/s', 'note']
    lines = []
    for r in results:
        for gen in ('TabularLM', 'GReaT'):
            g = r.get(gen)
            if g is None: continue
            for mode, m in g['modes'].items():
                rate = m['valid'] / m['seconds'] if m['seconds'] > 0 else 0.0
                m['valid_rows_per_s'] = rate
                note = []
                if m.get('timed_out'): note.append(f"time budget hit")
                if m.get('great_gave_up'): note.append(f"gave up x{m['great_gave_up']}")
                if m.get('great_errors'): note.append(f"errors x{m['great_errors']}")
                if m['problems']: note.append('top problems: ' + '; '.join(f'{k.strip()} ({v})' for k, v in m['problems'].items()))
                lines.append([r['table'], gen, f"{g['params']:,}", _fmt(g['fit_seconds']), mode, str(r['rows']),
                              str(m['sequences']), str(m['returned']), str(m['valid']),
                              f"{m['valid'] / m['returned']:.1%}" if m['returned'] else '-', str(m['copies']),
                              _fmt(m['seconds'], 2), _fmt(rate), ', '.join(note)])
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h) for i, h in enumerate(head)]
    widths[-1] = len(head[-1])
    print('  '.join(h.ljust(w) for h, w in zip(head, widths)))
    for l in lines: print('  '.join(c.ljust(w) for c, w in zip(l, widths)))
    print()
    for r in results:
        ours, great = r['TabularLM'], r.get('GReaT')
        if great is None: continue
        print(f"{r['table']}: epochs {r['epochs']} (TabularLM {ours['steps']} steps, GReaT {great['steps']} steps), "
              f"fit time GReaT / TabularLM = {great['fit_seconds'] / ours['fit_seconds']:.2f}")
        for mode, gm in great['modes'].items():
            om = ours['modes'].get('minority' if mode == 'guided_minority' else mode)
            g_rate, o_rate = gm['valid_rows_per_s'], om['valid_rows_per_s']
            ratio = f"{o_rate / g_rate:,.1f}x" if g_rate > 0 else \
                f"undefined: GReaT wrote 0 valid rows in {gm['seconds']:.0f} s (ours {o_rate:,.0f}/s)"
            print(f"  valid rows/s, TabularLM {('minority' if mode == 'guided_minority' else mode)} / GReaT {mode}: {ratio}")


def main(args):
    start = time.perf_counter()
    great_python = args.great_python
    have_great = Path(great_python).exists()
    if not have_great:
        print(f"GReaT's environment {great_python!r} is missing: only TabularLM's figures follow.\n"
              f"Create it with:\n  {SETUP}\n")
    if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))  # run from a checkout without installing
    import pandas as pd, torch, transformers
    from opal_nb.data import paper_split
    from opal_nb.core import infer_schema
    print(f"opal_nb side: torch {torch.__version__}, transformers {transformers.__version__}, pandas {pd.__version__}")
    results = []
    for name in args.datasets:
        split = paper_split(args.data_dir, name, 'imbalanced', 1)
        train, target = split.train, split.target
        minority = int(train[target].value_counts().idxmin())
        per_epoch = -(-len(train) // BATCH_SIZE)
        epochs = args.epochs or -(-args.steps // per_epoch)
        print(f"\n{name}: {len(train)} rows x {train.shape[1]} columns, minority {target}={minority} "
              f"({(train[target] == minority).sum()} rows), {epochs} epochs of {per_epoch} steps", flush=True)
        r = dict(table=name, epochs=epochs, rows=args.rows, budget=args.budget)
        r['TabularLM'], schema = run_ours(train, target, minority, epochs, args.rows, args.seed)
        print(f"  TabularLM: fit {r['TabularLM']['fit_seconds']:.1f} s", flush=True)
        if have_great:
            with tempfile.TemporaryDirectory(prefix='bench_great_') as tmp:
                work = Path(args.keep_dir) / name if args.keep_dir else Path(tmp)
                work.mkdir(parents=True, exist_ok=True)
                r['GReaT'] = run_great(great_python, train, schema, target, minority, epochs, args, work)
            print(f"  GReaT: fit {r['GReaT']['fit_seconds']:.1f} s", flush=True)
        results.append(r)
    if have_great:
        g = results[0]['GReaT']
        print(f"\nGReaT side: {', '.join(f'{k} {v}' for k, v in g['versions'].items())}; "
              f"GPT-2 vocabularies {[r['GReaT']['vocab'] for r in results]} (byte-level BPE trained on the rows), "
              f"context {[r['GReaT']['context'] for r in results]} tokens, sample max_length "
              f"{[r['GReaT']['llm']['max_length'] for r in results]} (longest training row "
              f"{[r['GReaT']['llm']['longest_row_tokens'] for r in results]}), learning rate {args.great_lr}, k {args.k}")
    print(f"TabularLM: vocabularies {[r['TabularLM']['vocab'] for r in results]}, "
          f"context {[r['TabularLM']['context'] for r in results]} tokens, learning rate 3e-3\n")
    report(results)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    if args.json: Path(args.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--quick', action='store_true', help='fewer epochs, rows and seconds (about 2 minutes)')
    p.add_argument('--datasets', nargs='+', default=['openmlDiabetes', 'heart_failure'])
    p.add_argument('--data-dir', type=Path, default=DATA_DIR)
    p.add_argument('--great-python', default=GREAT_PYTHON, help="python of the venv where be_great is installed")
    p.add_argument('--epochs', type=int, default=None, help='epochs for both (default: enough for --steps)')
    p.add_argument('--steps', type=int, default=None, help="training steps for both when --epochs is not given "
                   "(default 2000, TabularLM's own default; 400 with --quick)")
    p.add_argument('--rows', type=int, default=None, help='rows asked of each generator per mode (500; 200 quick)')
    p.add_argument('--budget', type=float, default=None, help="seconds GReaT may take per sampling mode (45; 15 quick)")
    p.add_argument('--guided-budget', type=float, default=None, help="seconds for GReaT's guided sampling (20; 10 quick)")
    p.add_argument('--k', type=int, default=256, help="GReaT's sampling batch size (TabularLM's sample_batch_size is 256)")
    p.add_argument('--great-lr', type=float, default=3e-3, help="GReaT's learning rate (HF default 5e-5 is for "
                   "fine-tuning; both models here start from random weights, so TabularLM's 3e-3 is used)")
    p.add_argument('--vocab-size', type=int, default=512, help="GReaT's BPE vocabulary size")
    p.add_argument('--no-guided', dest='guided', action='store_false', help="skip GReaT's guided sampling")
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--keep-dir', default=None, help='keep the GReaT job folders (model, rows, log) here')
    p.add_argument('--json', default=None, help='also write the figures to this JSON file')
    p.add_argument('--worker', default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker: worker(Path(a.worker)); sys.exit(0)
    a.steps = a.steps or (400 if a.quick else 2000)
    a.rows = a.rows or (200 if a.quick else 500)
    a.budget = a.budget or (15.0 if a.quick else 45.0)
    a.guided_budget = a.guided_budget or (10.0 if a.quick else 20.0)
    main(a)

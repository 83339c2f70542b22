"""Execute the notebooks and keep their outputs (`./dev docs`), or check that the committed outputs are current (`--check`).

Each notebook runs as `nbdev-test` runs it: execnb's `CaptureShell`, working directory the notebook's folder,
cells flagged with a `tst_flags` flag (`#| slow`) or `eval: false` left out (they keep the outputs they have).
The outputs are then made fit to commit: tqdm progress bars and matplotlib's "findfont:" fallbacks on stderr (they depend
on the machine's font cache, not on the notebook) and widget views are dropped, and
nbdev-clean's own cleaning (`nbdev.clean`) is applied. An error output, the repository's absolute path, a timing,
an "IProgress not found" warning or an API key in an output fails the run, and that notebook is not written.

Without `--check` the notebooks are written in place (or under `--out DIR`). With `--check` nothing is written:
each notebook that has committed outputs is executed in memory and its outputs compared with the committed ones,
text (streams, text/plain, text/markdown, text/html) exactly and images by presence. A notebook with no committed
output is reported as not refreshed yet and does not fail the check.
Tutorials 02-04 need the paper's data (`paper_data_dir`); without it they are skipped. The notebooks of `VOLATILE` (a real
server on loopback) are compared by the kinds of their outputs only: their text cannot repeat from run to run.

Usage: python tools/run_notebooks.py [--check] [--file-re RE] [--skip-file-re RE] [--out DIR] [--n-workers N] [NOTEBOOK ...]
"""
import argparse, concurrent.futures as cf, copy, difflib, json, multiprocessing as mp, os, re, sys, traceback
from pathlib import Path

root = Path(__file__).resolve().parents[1]
nbs = root / 'nbs'
PAPER_NBS = r'^(02_imbalanced|03_spurious|04_scaling)'
WIDGET = 'application/vnd.jupyter.widget-view+json'
# one tqdm refresh: "desc:  40%|####      | 4/10 [00:01<00:02,  2.9it/s]" (also without a total: "12it [00:01, 9.5it/s]",
# and with a unit of its own: "generating rows: 57%|#####7    | 107/187 [00:00<00:00, 224.98row/s]")
FINDFONT = re.compile(r'findfont: ')  # matplotlib falling back from a font its cache lists but cannot find (a cache made by a venv since deleted)
TQDM = re.compile(r'(\d+%\|.*\|\s*\S+/\S+\s*\[|\d+\w*\s*\[)[^\]]*(\w+/s|s/\w+|\?)\]?')  # any unit: it/s, row/s, s/step
FORBIDDEN = [(re.compile(re.escape(str(root))), 'the repository path'),
             (re.compile(re.escape(str(Path.home())) + '/'), 'the home directory'),
             (re.compile(r'Wall time:|CPU times:'), 'a timing'),
             (re.compile(r'IProgress not found'), 'an "IProgress not found" warning'),
             (re.compile(r'\bsk-(?:proj-)?[A-Za-z0-9]{20,}|\bhf_[A-Za-z0-9]{30,}'), 'what looks like an API key')]
ANSI = re.compile(r'\x1b\[[0-9;?]*[A-Za-z]')  # terminal control (tqdm moves the cursor up to redraw nested bars)
REFRESH = './dev docs'
# Notebooks whose outputs cannot repeat from run to run, and why. Their cells are compared by the kinds of output they
# show (a table where a table was committed, a figure where a figure was), not by the text. Keep this list short.
VOLATILE = {'05_bring_your_own_llm.ipynb': 'a real `transformers serve` server on loopback: a free port and a temporary '
                                           'folder per run, its start-up time, and sampling on the server, which no seed reaches'}

def text(v) -> str: return ''.join(v) if isinstance(v, list) else str(v)

def notebooks(file_re=None, skip_file_re=None) -> list[Path]:
    "The notebooks of nbs/ and nbs/tutorials/ whose file name matches `file_re` and not `skip_file_re`"
    fs = sorted(p for p in nbs.rglob('*.ipynb') if not any(part.startswith(('.', '_')) for part in p.relative_to(nbs).parts))
    if file_re: fs = [p for p in fs if re.search(file_re, p.name)]
    if skip_file_re: fs = [p for p in fs if not re.search(skip_file_re, p.name)]
    return fs

def has_paper_data() -> bool:
    sys.path.insert(0, str(root))
    from opal_nb.experiments import paper_data_dir
    return paper_data_dir() is not None

def strip_progress(s: str) -> str:
    "`s` without its tqdm refreshes: the pieces between carriage returns and newlines that are progress bars"
    keep = []
    for line in s.split('\n'):
        parts = [ANSI.sub('', p) for p in line.split('\r')]
        parts = [p for p in parts if p.strip() and not TQDM.search(p) and not FINDFONT.match(p)]  # a bar, or what is left when a nested bar clears
        if parts: keep.append(parts[-1])
        elif not line.strip(): keep.append('')
    out = '\n'.join(keep)
    return out if out.strip() else ''

def clean_outputs(outputs: list) -> list:
    "`outputs` without widget views and without tqdm bars on stderr"
    res = []
    for o in outputs:
        if WIDGET in o.get('data', {}): continue
        if o.get('output_type') == 'stream' and o.get('name') == 'stderr':
            s = strip_progress(text(o['text']))
            if not s: continue
            o = {**o, 'text': s.splitlines(keepends=True)}
        res.append(o)
    return res

def problems(outputs: list) -> list[str]:
    "What in `outputs` must not be committed"
    res = []
    for o in outputs:
        if o.get('output_type') == 'error':
            res.append(f"error output: {o.get('ename')}: {o.get('evalue')}"); continue
        if WIDGET in o.get('data', {}): res.append('a widget view (progress bar residue)')
        texts = [text(o.get('text', ''))] + [text(v) for k, v in o.get('data', {}).items() if not k.startswith('image/')]
        for pat, what in FORBIDDEN:
            for t in texts:
                if (m := pat.search(t)):
                    res.append(f"{what} in an output: ...{t[max(0, m.start() - 40):m.end() + 60]!r}..."); break
    return res

def execute(path: str) -> dict:
    "Run the notebook at `path` as nbdev-test does; its raw JSON text and the outputs of the cells that ran, by index"
    os.environ.setdefault('MPLBACKEND', 'Agg')
    os.environ['IN_TEST'] = '1'
    path = Path(path)
    from fastcore.foundation import working_directory
    from fastcore.nbio import dict2nb
    from nbdev.config import get_config
    from nbdev.process import NBProcessor
    from nbdev.test import _skip_cell
    from execnb.shell import CaptureShell
    cfg = get_config(path.parent)
    sys.path.insert(0, str(cfg.config_path))
    raw = path.read_text(encoding='utf-8')
    nb = NBProcessor(nb=dict2nb(json.loads(raw)), rm_directives=False, process=True).nb
    flags = cfg.tst_flags.split() if isinstance(cfg.tst_flags, str) else list(cfg.tst_flags or [])
    skip = _skip_cell(nb, flags)
    ran = [i for i, c in enumerate(nb.cells) if not skip(c)]
    error = None
    k = CaptureShell(path, profile=bool(cfg.get('exec_profile')))
    try:
        with working_directory(path.parent):
            k.run_all(nb, exc_stop=True, preproc=skip, cell_timeout=int(cfg.get('cell_timeout') or 600) or None)
    except BaseException:
        error = k.prettytb(fname=path) or traceback.format_exc()
    outs = {i: json.loads(json.dumps(nb.cells[i].get('outputs', []), default=str)) for i in ran}
    return dict(raw=raw, ran=ran, outputs=outs, error=error)

def refreshed(raw_nb: dict, res: dict) -> dict:
    "A copy of `raw_nb` carrying the new outputs, cleaned as nbdev-clean cleans"
    from nbdev.clean import _nbdev_clean
    nb = copy.deepcopy(raw_nb)
    for i in res['ran']: nb['cells'][i]['outputs'] = clean_outputs(res['outputs'][i])
    _nbdev_clean(nb)
    return nb

def comparable(outputs: list) -> list[tuple[str, str]]:
    "What the check compares in a cell: each text output exactly, each image by its presence"
    items = []
    for o in outputs:
        if o.get('output_type') == 'stream': items.append((f"stream {o.get('name')}", text(o.get('text', ''))))
        elif o.get('output_type') == 'error': items.append(('error', f"{o.get('ename')}: {o.get('evalue')}"))
        else:
            d = o.get('data', {})
            items += [(m, text(d[m])) for m in ('text/plain', 'text/markdown', 'text/html') if m in d]
            items += [(m, '<image>') for m in sorted(d) if m.startswith('image/')]
    return items

def kinds(outputs: list) -> list[tuple[str, str]]:
    "What the check compares in a cell of a `VOLATILE` notebook: the kind of each output, not its text"
    return [(k, '<output>') for k, _ in comparable(outputs)]

def first_difference(old: list, new: list, n: int = 12) -> str:
    "The first lines that differ between two `comparable` lists"
    a = [f'[{k}] {l}' for k, v in old for l in v.splitlines()]
    b = [f'[{k}] {l}' for k, v in new for l in v.splitlines()]
    diff = list(difflib.unified_diff(a, b, 'committed', 'fresh', lineterm='', n=1))
    return '\n'.join('      ' + l[:160] for l in diff[:n + 2])

def rel(p: Path) -> str: return str(p.relative_to(nbs)) if p.is_relative_to(nbs) else str(p)

def has_outputs(nb: dict) -> bool: return any(c.get('outputs') for c in nb['cells'])

def report_check(name: str, res: dict) -> list[str]:
    "The stale or unfit outputs of one notebook, as messages"
    committed = json.loads(res['raw'])
    fresh = refreshed(committed, res)
    msgs = []
    for i in res['ran']:
        cell, c_old, c_new = committed['cells'][i], committed['cells'][i].get('outputs', []), fresh['cells'][i]['outputs']
        where = f"{name} cell {i} (id {cell.get('id', '?')})"
        msgs += [f"{where}: committed {p}" for p in problems(c_old)]
        if Path(name).name in VOLATILE: c_old, c_new = kinds(c_old), kinds(c_new)
        else: c_old, c_new = comparable(c_old), comparable(c_new)
        if c_old != c_new:
            msgs.append(f"{where}: outputs are stale\n{first_difference(c_old, c_new)}")
    return msgs

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--check', action='store_true', help='compare fresh outputs with the committed ones; write nothing')
    ap.add_argument('--file-re', help='only notebooks whose file name matches this regex')
    ap.add_argument('--skip-file-re', help='leave out notebooks whose file name matches this regex')
    ap.add_argument('--out', type=Path, help='write the executed notebooks under this folder instead of in place')
    ap.add_argument('paths', nargs='*', type=Path, help='these notebook files instead of those of nbs/')
    ap.add_argument('--n-workers', type=int, default=min(2, os.cpu_count() or 1))
    a = ap.parse_args(argv)
    os.chdir(root)
    os.environ.setdefault('MPLBACKEND', 'Agg')
    files = [p.resolve() for p in a.paths] or notebooks(a.file_re, a.skip_file_re)
    if not has_paper_data():
        held = [p for p in files if re.search(PAPER_NBS, p.name)]
        if held: print(f"the paper's data was not found (set OPAL_PAPER_DATA): skipping {', '.join(p.stem for p in held)}")
        files = [p for p in files if p not in held]
    if a.check:
        todo = []
        for p in files:
            if has_outputs(json.loads(p.read_text(encoding='utf-8'))): todo.append(p)
            else: print(f"{rel(p)}: not refreshed yet (no outputs committed): not checked; refresh with {REFRESH}")
        files = todo
    if not files: print('no notebooks to run'); return 0
    failures = []
    with cf.ProcessPoolExecutor(a.n_workers, mp_context=mp.get_context('spawn'), max_tasks_per_child=1) as ex:
        futs = {ex.submit(execute, str(p)): p for p in files}
        for fut in cf.as_completed(futs):
            p = futs[fut]; name = rel(p)
            try: res = fut.result()
            except Exception as e: res = dict(error=f'{type(e).__name__}: {e}')
            if res.get('error'):
                failures.append(f"{name}: failed to run\n{res['error']}"); print(f"{name}: FAILED to run"); continue
            if a.check:
                msgs = report_check(name, res)
                failures += msgs
                print(f"{name}: {'STALE' if msgs else 'outputs current'} ({len(res['ran'])} cells run)")
                continue
            nb = refreshed(json.loads(res['raw']), res)
            bad = [f"{name} cell {i} (id {nb['cells'][i].get('id', '?')}): {m}" for i in res['ran'] for m in problems(nb['cells'][i]['outputs'])]
            if bad: failures += bad; print(f"{name}: NOT written, its outputs are unfit to commit"); continue
            dest = p if a.out is None else a.out / (p.relative_to(nbs) if p.is_relative_to(nbs) else p.name)
            if a.out is None and p.read_text(encoding='utf-8') != res['raw']:
                failures.append(f"{name}: edited while it ran: not written, run again"); continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            from fastcore.nbio import write_nb
            write_nb(nb, dest)
            print(f"{name}: outputs written to {dest.relative_to(root) if dest.is_relative_to(root) else dest}")
    if failures:
        print(f"\n{len(failures)} problem(s):", file=sys.stderr)
        for m in failures: print(f"- {m}", file=sys.stderr)
        if a.check: print(f"\nrefresh the outputs with: {REFRESH}  (one notebook: {REFRESH} --file-re '^NAME')", file=sys.stderr)
        return 1
    return 0

if __name__ == '__main__': sys.exit(main())

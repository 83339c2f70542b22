"""Render every docs page and check it in headless Chromium, where Quarto is not available.

nbdev's own processing (`nbdev.serve.proc_nbs`, into _proc/) makes the pages' notebooks, nbconvert's
`HTMLExporter` turns each into one HTML file with its images embedded, and Chromium (the Debian package, driven
by Playwright; `playwright install` is not needed) opens each page and checks that:
- the page loads and shows its notebook;
- every <img> has loaded (naturalWidth > 0), and every cell with a committed figure shows one;
- every cell with an HTML table output renders a <table>;
- no cell shows an error (an `error` output, or a traceback in the page).
A notebook committed without outputs has no figure or table to check yet, and does not fail for it.
It saves full-page screenshots of the home page and the quickstart to nbs/images/screenshots/.

`--overlay DIR` checks the notebooks of DIR (e.g. `tools/run_notebooks.py --out DIR`) in place of those of nbs/,
processing a temporary copy of the project so that nothing in the repository changes.
Usage: python tools/check_pages.py [--file-re RE] [--overlay DIR] [--no-screenshots] [--keep DIR]
"""
import argparse, json, os, re, shutil, sys, tempfile
from pathlib import Path

root = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get('CHROMIUM', '/usr/bin/chromium')
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--no-first-run']
SCREENSHOTS = {'index': 'home.png', 'tutorials/01_quickstart': 'quickstart.png'}

def launch(p):
    "Headless Debian Chromium through Playwright"
    if not Path(CHROMIUM).exists():
        sys.exit(f"no {CHROMIUM}: install it with `apt-get update -qq && apt-get install -y -qq chromium`")
    return p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)

def processed_notebooks(project: Path, file_re: str | None) -> tuple[Path, list[Path]]:
    "Run nbdev's docs processing in `project`; its _proc/ folder and the processed notebooks"
    from nbdev.serve import proc_nbs
    cwd = Path.cwd()
    os.chdir(project)
    try: proc = Path(proc_nbs(n_workers=min(2, os.cpu_count() or 1), file_re=file_re or ''))
    finally: os.chdir(cwd)
    fs = sorted(p for p in proc.rglob('*.ipynb') if not any(s.startswith(('.', '_')) for s in p.relative_to(proc).parts))
    if file_re: fs = [p for p in fs if re.search(file_re, p.name)]
    return proc, fs

def overlay_project(overlay: Path, dest: Path) -> Path:
    "A copy of the project's config and nbs/ in `dest`, with the notebooks of `overlay` in place of nbs/'s"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(root / 'pyproject.toml', dest / 'pyproject.toml')
    shutil.copytree(root / 'nbs', dest / 'nbs', ignore=shutil.ignore_patterns('.ipynb_checkpoints'))
    for f in overlay.rglob('*.ipynb'):
        shutil.copy2(f, dest / 'nbs' / f.relative_to(overlay))
    return dest

def to_html(nb_path: Path, out: Path) -> Path:
    "The notebook at `nb_path` as one HTML page in `out`, images embedded"
    import nbformat
    from nbconvert import HTMLExporter
    nb = nbformat.read(nb_path, as_version=4)
    for c in nb.cells: c.metadata.pop('execution', None)  # execnb's timings (floats) are not valid nbformat
    if nb.cells and nb.cells[0].cell_type == 'raw' and nb.cells[0].source.startswith('---'):  # Quarto's front matter: as Quarto shows it
        import yaml
        fm = yaml.safe_load(nb.cells[0].source.strip().strip('-')) or {}
        nb.cells[0] = nbformat.v4.new_markdown_cell(f"# {fm.get('title', '')}\n\n> {fm.get('description', '')}", id=nb.cells[0].get('id'))
    body, _ = HTMLExporter(embed_images=True).from_notebook_node(nb, resources={'metadata': {'path': str(nb_path.parent)}})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(body, encoding='utf-8')
    return out

def expectations(nb_path: Path) -> dict:
    "What the page of the notebook at `nb_path` must show: cells with figures and tables, and error outputs"
    nb = json.loads(nb_path.read_text(encoding='utf-8'))
    figs, tables, errors = [], [], []
    for i, c in enumerate(nb['cells']):
        outs = c.get('outputs', [])
        if any(k.startswith('image/') for o in outs for k in o.get('data', {})): figs.append(c.get('id', str(i)))
        if any('<table' in ''.join(o.get('data', {}).get('text/html', '')) for o in outs): tables.append(c.get('id', str(i)))
        errors += [f"cell {i} (id {c.get('id')}): {o.get('ename')}: {o.get('evalue')}" for o in outs if o.get('output_type') == 'error']
    return dict(figs=figs, tables=tables, errors=errors, n_outputs=sum(len(c.get('outputs', [])) for c in nb['cells']))

JS_STATE = """() => {
  const cell = id => document.getElementById('cell-id=' + id);
  return {
    notebook: !!document.querySelector('.jp-Notebook'),
    images: [...document.images].map(i => ({src: i.src.slice(0, 80), ok: i.complete && i.naturalWidth > 0})),
    cells: Object.fromEntries([...document.querySelectorAll('[id^="cell-id="]')].map(c => [c.id.slice(8), {
      img: [...c.querySelectorAll('.jp-OutputArea img')].some(i => i.complete && i.naturalWidth > 0),
      table: !!c.querySelector('.jp-OutputArea table')}])),
    traceback: document.body.innerText.includes('Traceback (most recent call last)'),
  };
}"""

def check_page(page, html: Path, exp: dict) -> list[str]:
    "The failures of one page"
    resp = page.goto(html.as_uri(), wait_until='load', timeout=60_000)
    if resp is None or not resp.ok: return [f"did not load ({resp.status if resp else 'no response'})"]
    s = page.evaluate(JS_STATE)
    fails = [] if s['notebook'] else ['no notebook in the page']
    fails += [f"image did not render: {i['src']}..." for i in s['images'] if not i['ok'] and not i['src'].startswith('http')]
    fails += [f"cell {c}: its committed figure does not render" for c in exp['figs'] if not s['cells'].get(c, {}).get('img')]
    fails += [f"cell {c}: its HTML table does not render" for c in exp['tables'] if not s['cells'].get(c, {}).get('table')]
    fails += [f"error output in {e}" for e in exp['errors']]
    if s['traceback'] and not exp['errors']: fails.append('a traceback shows in the page')
    return fails

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--file-re', help="only the pages of notebooks whose file name matches this regex")
    ap.add_argument('--overlay', type=Path, help='check these executed notebooks in place of those of nbs/ (a temporary copy is processed)')
    ap.add_argument('--no-screenshots', action='store_true', help='do not write nbs/images/screenshots/')
    ap.add_argument('--screenshots-dir', type=Path, default=root / 'nbs/images/screenshots')
    ap.add_argument('--keep', type=Path, help='write the HTML pages here (default: a temporary folder)')
    a = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright
    with tempfile.TemporaryDirectory(prefix='opal-pages-') as tmp:
        tmp = Path(tmp)
        project = overlay_project(a.overlay.resolve(), tmp / 'project') if a.overlay else root
        try: proc, files = processed_notebooks(project, a.file_re)
        except Exception as e:  # nbdev runs the import and show_doc cells: one that fails stops the docs build
            print(f"nbdev's docs processing (proc_nbs) failed:\n{str(e)[-3000:]}", file=sys.stderr); return 1
        site = a.keep.resolve() if a.keep else tmp / 'site'
        failures, n_empty = {}, 0
        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page(viewport={'width': 1280, 'height': 900})
            page.route(re.compile(r'^https?://'), lambda route: route.abort())  # offline: CDN scripts (MathJax, require.js) are not needed
            for f in files:
                name = f.relative_to(proc).with_suffix('').as_posix()
                exp = expectations(f)
                n_empty += exp['n_outputs'] == 0
                html = to_html(f, site / f'{name}.html')
                fails = check_page(page, html, exp)
                if fails: failures[name] = fails
                note = ' (no outputs committed yet)' if exp['n_outputs'] == 0 else ''
                print(f"{name}: {'FAIL' if fails else 'ok'}: {len(exp['figs'])} figure cell(s), {len(exp['tables'])} table cell(s){note}")
                if name in SCREENSHOTS and not a.no_screenshots:
                    a.screenshots_dir.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(a.screenshots_dir / SCREENSHOTS[name]), full_page=True)
                    print(f"  screenshot: {a.screenshots_dir / SCREENSHOTS[name]}")
            browser.close()
    print(f"{len(files)} page(s) checked, {n_empty} without outputs yet")
    if failures:
        print(f"\n{len(failures)} page(s) failed:", file=sys.stderr)
        for n, fs in failures.items(): print(f"- {n}:\n    " + '\n    '.join(fs), file=sys.stderr)
        return 1
    return 0

if __name__ == '__main__': sys.exit(main())

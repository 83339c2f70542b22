"""Step through the quickstart in a real JupyterLab, as a reader would, in headless Chromium.

Starts `jupyter lab` on 127.0.0.1 (a free port, a token, no browser) in a temporary copy of nbs/, opens
tutorials/01_quickstart.ipynb with Playwright driving the Debian `chromium`, runs all cells (JupyterLab's own
`notebook:run-all-cells` command, what Run > Run All Cells does), waits for the kernel to be idle and checks what a
person would see: no cell shows an error, no "IProgress not found" (tqdm.auto falls back to text without ipywidgets),
no widget that failed to display, and the figures show. It saves a screenshot to
nbs/images/screenshots/quickstart_jupyterlab.png. The server is always stopped, also on failure.
Usage: python tools/check_jupyterlab.py [--notebook tutorials/01_quickstart.ipynb] [--timeout 1800] [--screenshot PATH]
"""
import argparse, json, os, secrets, shutil, signal, socket, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_pages import launch

root = Path(__file__).resolve().parents[1]
SETTINGS = {  # JupyterLab user settings: every cell in the DOM (no windowing), no news pop-up
    '@jupyterlab/notebook-extension/tracker.jupyterlab-settings': {'windowingMode': 'none'},
    '@jupyterlab/apputils-extension/notification.jupyterlab-settings': {'fetchNews': 'false', 'checkForUpdates': False},
}

def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def start_lab(workdir: Path, port: int, token: str, log) -> subprocess.Popen:
    "`jupyter lab` serving `workdir`, with its config, runtime and settings folders inside `workdir`"
    cfg = workdir / '.lab'
    for name, value in SETTINGS.items():
        (cfg / 'settings' / name).parent.mkdir(parents=True, exist_ok=True)
        (cfg / 'settings' / name).write_text(json.dumps(value))
    env = {**os.environ, 'JUPYTER_CONFIG_DIR': str(cfg / 'config'), 'JUPYTER_RUNTIME_DIR': str(cfg / 'runtime'), 'JUPYTER_DATA_DIR': str(cfg / 'data'),
           'JUPYTERLAB_WORKSPACES_DIR': str(cfg / 'workspaces')}
    env.pop('MPLBACKEND', None)  # the kernel's inline backend, as a reader gets it
    cmd = [sys.executable, '-m', 'jupyter', 'lab', '--no-browser', '--ip=127.0.0.1', f'--port={port}', '--port-retries=0',
           f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={workdir}', '--LabApp.expose_app_in_browser=True',
           f'--LabApp.user_settings_dir={cfg / "settings"}', f'--LabApp.workspaces_dir={cfg / "workspaces"}',
           '--ServerApp.terminals_enabled=False'] + (['--allow-root'] if os.geteuid() == 0 else [])
    return subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None: raise RuntimeError(f'jupyter lab exited with {proc.returncode}')
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200: return
        except OSError: time.sleep(1)
    raise TimeoutError(f'jupyter lab did not answer {url} in {timeout}s')

def stop_lab(proc: subprocess.Popen):
    "Stop the server we started (its process group: the server and its kernels)"
    if proc.poll() is not None: return
    os.killpg(proc.pid, signal.SIGTERM)
    try: proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL); proc.wait(10)

JS_RUN = """async () => {
  const app = window.jupyterapp;
  await app.commands.execute('notebook:run-all-cells');
}"""
JS_BUSY = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  const running = [...document.querySelectorAll('.jp-InputPrompt')].some(p => p.textContent.includes('*'));
  return !k || k.status !== 'idle' || running;
}"""
JS_STATE = """() => {
  const nb = window.jupyterapp.shell.currentWidget.content;
  const cells = nb.widgets.map(c => c.model.toJSON());
  const code = cells.filter(c => c.cell_type === 'code');
  const text = document.querySelector('.jp-NotebookPanel').innerText;
  return {
    n_code: code.length,
    unrun: code.filter(c => (c.source + '').trim() && c.execution_count == null).length,
    errors: code.flatMap((c, i) => (c.outputs || []).filter(o => o.output_type === 'error').map(o => `${o.ename}: ${o.evalue}`)),
    iprogress: text.includes('IProgress not found'),
    widget_errors: text.includes('Error displaying widget'),
    images: [...document.querySelectorAll('.jp-OutputArea-output img')].map(i => i.complete && i.naturalWidth > 0),
    figure_cells: code.filter(c => (c.outputs || []).some(o => o.data && o.data['image/png'])).length,
    tables: document.querySelectorAll('.jp-OutputArea-output table').length,
    progress_bars: document.querySelectorAll('.jp-OutputArea-output .widget-hprogress, .jp-OutputArea-output .widget-progress, .jp-OutputArea-output progress').length,  // ipywidgets 8: widget-hprogress
  };
}"""

def check_quickstart(notebook: str = 'tutorials/01_quickstart.ipynb', timeout: float = 1800,
                     screenshot: Path = root / 'nbs/images/screenshots/quickstart_jupyterlab.png',
                     min_progress_bars: int = 1) -> list[str]:
    "Run `notebook` (a path inside nbs/) in JupyterLab; the failures a reader would see"
    from playwright.sync_api import sync_playwright, TimeoutError as PlaywrightTimeout
    with tempfile.TemporaryDirectory(prefix='opal-lab-') as tmp:
        work = Path(tmp)
        shutil.copytree(root / 'nbs', work / 'nbs', ignore=shutil.ignore_patterns('.ipynb_checkpoints', '_proc'))
        port, token = free_port(), secrets.token_hex(16)
        base = f'http://127.0.0.1:{port}'
        with open(work / 'lab.log', 'w') as log:
            proc = start_lab(work, port, token, log)
            try:
                wait_ready(f'{base}/api/status?token={token}', proc)
                with sync_playwright() as p:
                    browser = launch(p)
                    page = browser.new_page(viewport={'width': 1400, 'height': 1000})
                    page.goto(f'{base}/lab/tree/nbs/{notebook}?token={token}', timeout=120_000)
                    page.wait_for_selector('.jp-NotebookPanel .jp-Cell', timeout=120_000)
                    try:  # a notebook without a kernelspec asks for a kernel: take the default, as a reader would
                        page.click('.jp-Dialog .jp-Dialog-button.jp-mod-accept', timeout=10_000)
                        print('kernel chosen in the "Select Kernel" dialog (the notebook has no kernelspec)')
                    except PlaywrightTimeout: pass
                    page.wait_for_function('() => !(' + JS_BUSY + ')()', timeout=120_000)  # kernel started
                    print(f'JupyterLab on {base}: running all cells of {notebook}')
                    t0 = time.time()
                    page.evaluate(JS_RUN)
                    page.wait_for_timeout(2000)
                    page.wait_for_function('() => !(' + JS_BUSY + ')()', timeout=timeout * 1000, polling=1000)
                    page.wait_for_timeout(2000)  # the last outputs render
                    s = page.evaluate(JS_STATE)
                    print(f"ran in {time.time() - t0:.0f}s: {s['n_code']} code cells, {sum(s['images'])} figure(s) shown "
                          f"({s['figure_cells']} cell(s) with a PNG), {s['tables']} table(s), {s['progress_bars']} progress bar(s)")
                    fails = [f'a cell shows an error: {e}' for e in s['errors']]
                    if s['unrun']: fails.append(f"{s['unrun']} code cell(s) did not run")
                    if s['iprogress']: fails.append('"IProgress not found" shows (ipywidgets is missing from the kernel environment)')
                    if s['progress_bars'] < min_progress_bars:
                        fails.append(f"{s['progress_bars']} progress bar(s) render as widgets, {min_progress_bars} expected (tqdm fell back to text?)")
                    if s['widget_errors']: fails.append('a widget failed to display ("Error displaying widget")')
                    if not s['images']: fails.append('no figure shows in the outputs')
                    fails += [f'figure {i} did not render' for i, ok in enumerate(s['images']) if not ok]
                    fig = page.query_selector('.jp-OutputArea-output img')
                    if fig: fig.scroll_into_view_if_needed()
                    screenshot.parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(screenshot))
                    print(f'screenshot: {screenshot}')
                    browser.close()
            except Exception as e:
                log.flush()
                try: page.screenshot(path=str(Path(tempfile.gettempdir()) / 'check_jupyterlab_failed.png'))
                except Exception: pass
                fails = [f'{type(e).__name__}: {e}', 'jupyter lab log (tail):\n' + ''.join((work / 'lab.log').read_text().splitlines(True)[-20:])]
            finally:
                stop_lab(proc)
    return fails

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--notebook', default='tutorials/01_quickstart.ipynb', help='path inside nbs/')
    ap.add_argument('--timeout', type=float, default=1800, help='seconds to wait for all cells to run')
    ap.add_argument('--screenshot', type=Path, default=root / 'nbs/images/screenshots/quickstart_jupyterlab.png')
    ap.add_argument('--min-progress-bars', type=int, default=1, help='progress bars that must render as widgets (the quickstart shows 2)')
    a = ap.parse_args(argv)
    fails = check_quickstart(a.notebook, a.timeout, a.screenshot, a.min_progress_bars)
    for f in fails: print(f'- {f}', file=sys.stderr)
    print('JupyterLab check: ' + ('FAILED' if fails else 'ok'))
    return 1 if fails else 0

if __name__ == '__main__': sys.exit(main())

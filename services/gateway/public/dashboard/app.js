'use strict';
// The operator dashboard. Plain browser JS, no build step. Live parts read server-sent events
// through fetch, so the admin key travels in a header, never in a URL.
(() => {
  const BUCKET_MS = 10_000;
  const MAX_BUCKETS = 90;
  const state = {
    key: sessionStorage.getItem('tollgate-key'),
    chartBy: 'model',
    /** bucket start (ms) -> series name -> micros, for both groupings */
    buckets: { model: new Map(), service: new Map() },
    gauges: {},
    alerts: [],
    events: [],
    status: null,
    costEvents: 0,
    /** SSE paths whose stream is open now (the server fixed its position before answering). */
    streams: {},
    flags: [],
    flagChanges: [],
    /** The last analytics query answer (series by bucket) and its range, for the panels and the test. */
    analytics: null,
    /** Journey stats per template and the active journeys, as the panel shows them. */
    journeys: null,
    /** Today's external spend by operation, with rates. */
    external: null,
  };
  // Exposed for the browser test and for operators poking at the console.
  window.__tollgate = state;

  const $ = (id) => document.getElementById(id);
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const el = (tag, attrs = {}, text = '') => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    node.textContent = text;
    return node;
  };
  /** Exact USD from integer micros, without floating point. */
  const usd = (micros) => {
    const sign = micros < 0 ? '-' : '';
    const m = Math.abs(micros);
    return `${sign}$${Math.floor(m / 1e6)}.${String(m % 1e6).padStart(6, '0')}`;
  };

  async function api(path, method = 'GET') {
    const r = await fetch(path, { method, headers: { authorization: `Bearer ${state.key}` } });
    if (r.status === 401 || r.status === 403) {
      logout('That key is not an admin key.');
      throw new Error('unauthorised');
    }
    if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
    return r.json();
  }

  /** Follows an SSE endpoint, reconnecting with Last-Event-ID after a drop. */
  async function follow(path, onEvent, signal) {
    let lastId;
    while (!signal.aborted) {
      try {
        const headers = { authorization: `Bearer ${state.key}`, accept: 'text/event-stream' };
        if (lastId) headers['last-event-id'] = lastId;
        const r = await fetch(path, { headers, signal });
        if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
        state.streams[path] = true;
        const reader = r.body.getReader();
        const decoder = new TextDecoder();
        let buffer = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let cut;
          while ((cut = buffer.indexOf('\n\n')) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            const ev = { event: 'message', data: '' };
            for (const line of block.split('\n')) {
              if (line.startsWith('id: ')) ev.id = line.slice(4);
              else if (line.startsWith('event: ')) ev.event = line.slice(7);
              else if (line.startsWith('data: ')) ev.data += line.slice(6);
            }
            if (ev.id) lastId = ev.id;
            if (ev.data) onEvent(ev);
          }
        }
      } catch {
        if (signal.aborted) return;
      } finally {
        delete state.streams[path];
      }
      await sleep(2_000);
    }
  }

  // ---- gauges ----
  async function refreshGauges() {
    const { status } = await api('/v1/budgets/global/global');
    const box = $('gauges');
    box.replaceChildren();
    for (const p of status) {
      state.gauges[p.period] = p;
      const pct = p.limit_micros ? Math.min(100, (p.spent_micros / p.limit_micros) * 100) : 0;
      const gauge = el('div', { class: `gauge ${pct >= 100 ? 'bad' : pct >= 80 ? 'warn' : ''}`, 'data-period': p.period });
      const label = el('div', { class: 'label' });
      label.append(el('span', {}, `${p.period} (${p.period_key})`), el('span', { class: 'muted' }, p.mode ? `${p.mode} budget` : 'no budget'));
      const bar = el('div', { class: 'bar' });
      const fill = el('div', { class: 'fill' });
      fill.style.width = `${pct}%`;
      bar.append(fill);
      gauge.append(
        label,
        el('div', { class: 'big', 'data-role': 'spent' }, usd(p.spent_micros)),
        bar,
        el('div', { class: 'muted' }, p.limit_micros ? `of ${usd(p.limit_micros)} - ${p.used_pct}% used${p.blocked ? ' - BLOCKED' : ''}` : 'no limit'),
      );
      box.append(gauge);
    }
  }

  // ---- chart ----
  let plot;
  let plotSeries = '';
  function addCost(event) {
    const d = event.data;
    const bucket = Math.floor(Date.parse(event.occurred_at) / BUCKET_MS) * BUCKET_MS;
    const keys = { model: `${d.provider}/${d.model}`, service: d.service };
    for (const by of ['model', 'service']) {
      const map = state.buckets[by];
      const row = map.get(bucket) ?? {};
      row[keys[by]] = (row[keys[by]] ?? 0) + d.amount_micros;
      map.set(bucket, row);
      while (map.size > MAX_BUCKETS) map.delete(Math.min(...map.keys()));
    }
    state.costEvents++;
  }

  function chartData() {
    const map = state.buckets[state.chartBy];
    const xs = [...map.keys()].sort((a, b) => a - b);
    const names = [...new Set(xs.flatMap((x) => Object.keys(map.get(x))))].sort();
    const data = [xs.map((x) => x / 1000), ...names.map((n) => xs.map((x) => (map.get(x)[n] ?? 0) / 1e6))];
    return { names, data };
  }

  const COLORS = ['#58a6ff', '#3fb950', '#d29922', '#f85149', '#bc8cff', '#39c5cf', '#ff7b72', '#ffa657'];
  function renderChart() {
    const { names, data } = chartData();
    const box = $('chart');
    const signature = `${state.chartBy}|${names.join(',')}`;
    if (!plot || signature !== plotSeries) {
      plot?.destroy();
      box.replaceChildren();
      plotSeries = signature;
      plot = new uPlot(
        {
          width: Math.max(320, box.clientWidth || 800),
          height: 240,
          // A ten-minute window at least, so a first point is not stretched over years.
          // From the data itself: the min/max uPlot passes for one or two points were padded out to
          // years (an axis from 2027 to 2029 under today's spend).
          scales: {
            x: {
              time: true,
              range: (u) => {
                const xs = u.data[0] ?? [];
                const max = xs.length ? xs[xs.length - 1] : Date.now() / 1000;
                return [Math.min(xs.length ? xs[0] : max, max - 600), max + 10];
              },
            },
          },
          series: [{}, ...names.map((n, i) => ({ label: n, stroke: COLORS[i % COLORS.length], width: 2, value: (_u, v) => (v == null ? '-' : `$${v.toFixed(6)}`) }))],
          axes: [{ stroke: '#8a96a3' }, { stroke: '#8a96a3', values: (_u, vals) => vals.map((v) => `$${v}`) }],
        },
        data,
        box,
      );
    } else {
      plot.setData(data);
    }
  }

  // ---- analytics panels ----
  const RANGE_MS = { '1h': 3_600_000, '6h': 6 * 3_600_000, '24h': 24 * 3_600_000, '7d': 7 * 24 * 3_600_000 };
  const AN_METRICS = ['requests', 'completed', 'failed', 'errors_by_category', 'error_rate', 'fallback_rate', 'latency_p50', 'latency_p95', 'latency_p99', 'ttft_p50', 'ttft_p95', 'cost_micros', 'avoided_micros', 'cost_per_success_micros'];
  const anPlots = {};

  async function post(path, body) {
    const r = await fetch(path, { method: 'POST', headers: { authorization: `Bearer ${state.key}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
    return r.json();
  }

  function analyticsFilters() {
    const filters = {};
    const user = $('an-user').value.trim();
    const project = $('an-project').value.trim();
    if (user) filters.user = user;
    if (project) filters.project = project;
    return filters;
  }

  function drawSeries(id, series, xs, scale) {
    const box = $(id);
    const data = [xs, ...series.map((s) => s.values)];
    const signature = series.map((s) => s.label).join(',');
    if (!anPlots[id] || anPlots[id].signature !== signature) {
      anPlots[id]?.plot.destroy();
      box.replaceChildren();
      const plot = new uPlot(
        {
          width: Math.max(320, box.clientWidth || 800),
          height: 200,
          // The query's own range, so the axis is always the range asked for (today's, not 2027's).
          scales: { x: { time: true, range: () => [state.analytics.from / 1000, state.analytics.to / 1000] }, ...(scale && { y2: { range: [0, 1] } }) },
          series: [{}, ...series.map((s, i) => ({ label: s.label, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true, ...(s.scale && { scale: s.scale }) }))],
          axes: [{ stroke: '#8a96a3' }, { stroke: '#8a96a3' }, ...(scale ? [{ scale: 'y2', side: 1, stroke: '#8a96a3', values: (_u, v) => v.map((x) => `${Math.round(x * 100)}%`) }] : [])],
        },
        data,
        box,
      );
      anPlots[id] = { plot, signature };
    } else {
      anPlots[id].plot.setScale('x', { min: state.analytics.from / 1000, max: state.analytics.to / 1000 });
      anPlots[id].plot.setData(data);
    }
  }

  async function refreshAnalytics() {
    const range = RANGE_MS[$('an-range').value] ?? RANGE_MS['24h'];
    const to = Date.now();
    const filters = analyticsFilters();
    const [overall, byModel] = await Promise.all([
      post('/v1/analytics/query', { metrics: AN_METRICS, filters, from: to - range, to, granularity: 'auto' }),
      post('/v1/analytics/query', { metrics: ['completed', 'latency_p50', 'cost_micros', 'avoided_micros', 'cost_per_success_micros'], group_by: ['provider', 'model'], filters, from: to - range, to, granularity: 'auto', limit: 20 }),
    ]);
    const group = overall.groups[0];
    const points = group ? group.series : overall.buckets.map((t) => ({ t }));
    state.analytics = { from: to - range, to, granularity: overall.granularity, points, totals: group?.totals ?? null, models: byModel.groups };
    const xs = points.map((p) => Date.parse(p.t) / 1000);
    const col = (m) => points.map((p) => (p[m] ?? null));
    drawSeries('an-latency', [
      { label: 'latency p50', values: col('latency_p50') },
      { label: 'latency p95', values: col('latency_p95') },
      { label: 'latency p99', values: col('latency_p99') },
      { label: 'TTFT p50', values: col('ttft_p50') },
      { label: 'TTFT p95', values: col('ttft_p95') },
    ], xs);
    drawSeries('an-throughput', [
      { label: `requests per ${overall.granularity}`, values: col('requests') },
      { label: 'error rate', values: col('error_rate'), scale: 'y2' },
      { label: 'fallback rate', values: col('fallback_rate'), scale: 'y2' },
    ], xs, true);
    // What the charts' time axes actually show (seconds), for the browser test.
    state.analytics.axes = Object.fromEntries(Object.entries(anPlots).map(([id, p]) => [id, { min: p.plot.scales.x.min, max: p.plot.scales.x.max }]));
    state.analyticsRefreshes = (state.analyticsRefreshes ?? 0) + 1;
    const t = group?.totals;
    $('an-summary').textContent = t ? `${t.requests} requests, ${t.completed} completed, ${t.failed} failed, p95 ${t.latency_p95 ?? '-'} ms, TTFT p95 ${t.ttft_p95 ?? '-'} ms` : 'no traffic in this range';
    const finished = t ? t.completed + t.failed : 0;
    $('an-errors').tBodies[0].replaceChildren(
      ...Object.entries(t?.errors_by_category ?? {}).map(([c, n]) => {
        const tr = el('tr');
        tr.append(el('td', {}, c), el('td', {}, String(n)), el('td', {}, finished ? `${((n / finished) * 100).toFixed(1)}%` : '-'));
        return tr;
      }),
    );
    $('an-models').tBodies[0].replaceChildren(
      ...byModel.groups.filter((g) => g.key.model).map((g) => {
        const tr = el('tr', { 'data-model': g.key.model });
        const x = g.totals;
        tr.append(
          el('td', {}, `${g.key.provider}/${g.key.model}`),
          el('td', {}, String(x.completed)),
          el('td', {}, x.latency_p50 == null ? '-' : String(x.latency_p50)),
          el('td', {}, usd(x.cost_micros)),
          el('td', {}, x.cost_per_success_micros == null ? '-' : usd(x.cost_per_success_micros)),
          el('td', {}, usd(x.avoided_micros)),
        );
        return tr;
      }),
    );
  }

  // ---- journeys ----
  const pct = (r) => (r == null ? '-' : `${(r * 100).toFixed(1)}%`);
  const ms = (v) => (v == null ? '-' : v >= 60_000 ? `${(v / 60_000).toFixed(1)} min` : `${(v / 1000).toFixed(1)} s`);
  /** A cell with a small bar (0-1) and its percentage. */
  function rateCell(r, cls = '') {
    const td = el('td', { class: 'nowrap' });
    const bar = el('span', { class: `rate ${cls}` });
    const fill = el('span');
    fill.style.width = `${r == null ? 0 : Math.round(r * 100)}%`;
    bar.append(fill);
    td.append(bar, document.createTextNode(pct(r)));
    return td;
  }
  const row = (cells, attrs = {}) => {
    const tr = el('tr', attrs);
    tr.append(...cells.map((c) => (typeof c === 'string' ? el('td', {}, c) : c)));
    return tr;
  };

  /**
   * Conversion of each template's latest version (the API counts every user: it has no tenant or
   * time filter), and the active journeys, narrowed by the page's user/project filters.
   */
  async function refreshJourneys() {
    const filters = analyticsFilters();
    const qs = new URLSearchParams({ state: 'active', limit: '100' });
    if (filters.user) qs.set('user_id', filters.user);
    const [{ templates }, { journeys }] = await Promise.all([api('/v1/journeys/templates'), api(`/v1/journeys?${qs}`)]);
    const stats = await Promise.all(templates.map((t) => api(`/v1/analytics/journeys/${encodeURIComponent(t.key)}?version=${t.version}`)));
    // The list API filters by user only; a project filter narrows what it returned.
    const active = filters.project ? journeys.filter((j) => j.project_id === filters.project) : journeys;
    state.journeys = { templates: stats, active };
    state.journeysRefreshes = (state.journeysRefreshes ?? 0) + 1;

    $('jr-templates').tBodies[0].replaceChildren(
      ...stats.map((t) =>
        row([t.template, String(t.version), String(t.started), String(t.completed), String(t.active), String(t.abandoned), String(t.cancelled), rateCell(t.completion_rate), t.cost_per_completed ? usd(t.cost_per_completed.micros) : '-'], { 'data-template': t.template }),
      ),
    );
    $('jr-steps').replaceChildren(
      ...stats.map((t) => {
        const box = el('div', { 'data-template': t.template });
        const table = el('table', { class: 'jr-steps' });
        const head = el('thead');
        head.append(row(['step', 'reached', 'done', 'conversion', 'drop-off', 'abandoned', 'p50 time'].map((h) => el('th', {}, h))));
        const body = el('tbody');
        body.append(
          ...t.steps.map((st) =>
            row([`${st.key}${st.required ? '' : ' (optional)'}`, String(st.reached), String(st.completed), rateCell(st.conversion), rateCell(st.drop_off_rate, 'drop'), String(st.abandoned_here), ms(st.time_in_step_p50_ms)], { 'data-step': st.key, title: st.title }),
          ),
        );
        table.append(head, body);
        box.append(el('h3', {}, `${t.template} v${t.version}: per step`), table);
        return box;
      }),
    );
    const who = [filters.user && `user ${filters.user}`, filters.project && `project ${filters.project}`].filter(Boolean).join(', ');
    $('jr-active-summary').textContent = `(${active.length}${who ? ` of ${who}` : ', every user'}; user/project filters above apply)`;
    $('jr-active').tBodies[0].replaceChildren(
      ...active.map((j) =>
        row([j.id, j.user_id, j.project_id, `${j.template} v${j.template_version}`, rateCell(j.progress_pct / 100), usd(j.cost.total.micros), j.last_activity_at.slice(0, 19).replace('T', ' ')], { 'data-journey': j.id }),
      ),
    );
  }

  // ---- external usage ----
  const rateOf = (m) => (m === undefined ? '-' : usd(m));

  /**
   * Today's spend on metered external APIs (service "external" in the ledger) by operation, beside
   * each operation's rates in force. The user/project filters apply (one of them: the summary
   * takes either).
   */
  async function refreshExternal() {
    const filters = analyticsFilters();
    const qs = (group) => {
      const q = new URLSearchParams({ period: 'day', group_by: group });
      if (filters.user) q.set('user_id', filters.user);
      else if (filters.project) q.set('project_id', filters.project);
      return q;
    };
    const [byService, byOperation, ops, prices] = await Promise.all([
      api(`/v1/costs/summary?${qs('service')}`),
      api(`/v1/costs/summary?${qs('operation')}`),
      api('/v1/usage/operations'),
      api('/v1/prices'),
    ]);
    const total = byService.groups.find((g) => g.key === 'external')?.micros ?? 0;
    const rates = new Map(ops.operations.map((o) => [o.operation, o]));
    // External operations are named provider/name; the built-in services' operations (chat, rag, vision) never are.
    const spent = new Map(byOperation.groups.filter((g) => rates.has(g.key) || g.key.includes('/')).map((g) => [g.key, g.micros]));
    const names = [...new Set([...spent.keys(), ...rates.keys()])].sort((a, b) => (spent.get(b) ?? 0) - (spent.get(a) ?? 0) || a.localeCompare(b));
    const rows = names.map((operation) => ({ operation, micros: spent.get(operation) ?? 0, rates: rates.get(operation) ?? null }));
    state.external = { period_key: byService.period_key, total_micros: total, all_micros: byService.total.micros, price_version: ops.price_version, rows };
    state.externalRefreshes = (state.externalRefreshes ?? 0) + 1;

    const scope = filters.user ? ` for user ${filters.user}` : filters.project ? ` for project ${filters.project}` : '';
    $('ex-summary').textContent = `(today, ${byService.period_key} UTC${scope}: ${usd(total)} of ${usd(byService.total.micros)} total spend)`;
    $('ex-operations').tBodies[0].replaceChildren(
      ...rows.map((r) =>
        row([r.operation, rateOf(r.rates?.per_call_micros), rateOf(r.rates?.per_unit_micros), rateOf(r.rates?.per_1k_units_micros), usd(r.micros), total ? `${((r.micros / total) * 100).toFixed(1)}%` : '-'], {
          'data-operation': r.operation,
          ...(r.rates === null && { title: 'No longer priced in the version in force' }),
        }),
      ),
    );
    const versions = prices.versions.map((v) => `${v.version}${v.version === prices.in_force ? ' (in force)' : Date.parse(v.effective_from) > Date.now() ? ` (from ${v.effective_from.slice(0, 16).replace('T', ' ')})` : ''}`);
    $('ex-prices').textContent = `Rates from price version ${ops.price_version}. Versions: ${versions.join(', ')}.`;
  }

  // ---- alerts, events, status ----
  function addAlert(alert) {
    state.alerts.unshift(alert);
    state.alerts.length = Math.min(state.alerts.length, 200);
    const li = el('li', { class: alert.state ?? 'firing' });
    const what = alert.threshold_pct !== undefined
      ? `${alert.scope === 'global' ? 'global' : `${alert.scope} ${alert.scope_id}`}: ${alert.period} ${alert.threshold_pct}% - ${usd(alert.spent_micros ?? 0)} of ${usd(alert.limit_micros ?? 0)}`
      : alert.summary ?? alert.kind ?? JSON.stringify(alert).slice(0, 160);
    li.textContent = `${alert.state ?? 'firing'} - ${what}`;
    $('alerts').prepend(li);
  }

  function addEvent(event) {
    state.events.unshift(event);
    state.events.length = Math.min(state.events.length, 200);
    const li = el('li', {}, `${event.occurred_at.slice(11, 19)} ${event.type} ${event.source} ${event.correlation_id}`);
    const list = $('events');
    list.prepend(li);
    while (list.children.length > 200) list.lastChild.remove();
  }

  async function refreshStatus() {
    const s = await api('/v1/ops/status');
    state.status = s;
    const breakers = $('breakers').tBodies[0];
    breakers.replaceChildren(
      ...(s.breakers.length ? s.breakers : [{ breaker: 'all providers', state: 'closed' }]).map((b) => {
        const tr = el('tr');
        tr.append(el('td', {}, b.breaker), el('td', { class: `state-${b.state}` }, b.state));
        return tr;
      }),
    );
    const errors = $('errors').tBodies[0];
    errors.replaceChildren(
      ...s.error_rates.map((e) => {
        const tr = el('tr');
        tr.append(el('td', {}, e.service), el('td', {}, e.category), el('td', {}, String(e.errors)), el('td', {}, `${(e.ratio * 100).toFixed(1)}%`));
        return tr;
      }),
    );
  }

  /** Hit ratio and money saved per kind (chat answers, RAG context, vision), for every project. */
  async function refreshCache() {
    const c = await api('/v1/cache/stats');
    state.cache = c;
    const ratio = (r) => (r === null ? '-' : `${(r * 100).toFixed(1)}%`);
    $('cache-summary').textContent = `(hit ratio ${ratio(c.hit_ratio)}, saved ${usd(c.saved.micros)})`;
    $('cache').tBodies[0].replaceChildren(
      ...c.kinds.map((k) => {
        const tr = el('tr');
        tr.append(el('td', {}, k.kind), el('td', {}, String(k.hits)), el('td', {}, String(k.misses)), el('td', {}, ratio(k.hit_ratio)), el('td', {}, usd(k.saved_micros)));
        return tr;
      }),
    );
  }

  // ---- feature flags ----
  const rollout = (f) =>
    f.strategies.length === 0
      ? 'everyone'
      : f.strategies.map((s) => (s.name === 'flexibleRollout' ? `${s.parameters.rollout ?? '?'}%` : s.name)).join(', ') +
        (f.variants.length ? ` / ${f.variants.map((v) => `${v.name} ${v.weight / 10}%`).join(', ')}` : '');

  async function refreshFlags() {
    const [{ flags, stale_count: stale }, { changes }] = await Promise.all([api('/v1/flags'), api('/v1/flags/history?limit=20')]);
    state.flags = flags;
    state.flagChanges = changes;
    $('flags-summary').textContent = `(${flags.length}${stale ? `, ${stale} stale` : ''})`;
    $('flags').tBodies[0].replaceChildren(
      ...flags.map((f) => {
        const tr = el('tr', { 'data-flag': f.name });
        const button = el('button', { type: 'button' }, f.enabled ? 'Turn off' : 'Turn on');
        button.addEventListener('click', async () => {
          button.disabled = true;
          await api(`/v1/flags/${encodeURIComponent(f.name)}/${f.enabled ? 'disable' : 'enable'}`, 'POST').catch(() => undefined);
          await refreshFlags().catch(() => undefined);
        });
        const td = el('td');
        td.append(button);
        tr.append(
          el('td', {}, f.name),
          el('td', {}, f.type + (f.stale ? ' (stale)' : '')),
          el('td', { class: f.enabled ? 'state-closed' : 'state-open' }, f.enabled ? 'on' : 'off'),
          el('td', {}, rollout(f)),
          td,
        );
        return tr;
      }),
    );
    const state_ = (v) => (v === null ? '-' : v.enabled === undefined ? 'segment' : v.enabled ? 'on' : 'off');
    $('flag-changes').replaceChildren(
      ...changes.map((c) => el('li', {}, `${c.at.slice(0, 19).replace('T', ' ')} ${c.name} ${c.action} ${state_(c.before)} -> ${state_(c.after)} by ${c.actor}`)),
    );
  }

  // ---- wiring ----
  /** The panels behind the user/project filters, every 10 s and on Apply. */
  function refreshRollups() {
    for (const refresh of [refreshAnalytics, refreshJourneys, refreshExternal]) void refresh().catch(() => undefined);
  }

  let live;
  let eventsLive;
  function followEvents() {
    eventsLive?.abort();
    eventsLive = new AbortController();
    $('events').replaceChildren();
    const types = encodeURIComponent($('event-filter').value.trim() || '*');
    void follow(`/v1/events/stream?types=${types}`, (ev) => addEvent(JSON.parse(ev.data)), eventsLive.signal);
  }

  let gaugeTimer;
  async function connect() {
    live?.abort();
    live = new AbortController();
    const signal = live.signal;
    $('login').hidden = true;
    $('app').hidden = false;
    $('status').textContent = 'connected';
    await Promise.all([refreshGauges(), refreshStatus(), refreshCache(), refreshFlags()].map((p) => p.catch(() => undefined)));
    try {
      const { alerts } = await api('/v1/alerts');
      for (const a of [...alerts].reverse()) addAlert(a);
    } catch {
      // history is a courtesy; the live feed follows
    }
    renderChart();
    void follow('/v1/alerts/stream', (ev) => {
      if (ev.event === 'alert') addAlert(JSON.parse(ev.data));
      void refreshGauges().catch(() => undefined);
    }, signal);
    void follow('/v1/events/stream?types=cost.recorded', (ev) => {
      addCost(JSON.parse(ev.data));
      renderChart();
      clearTimeout(gaugeTimer);
      gaugeTimer = setTimeout(() => void refreshGauges().catch(() => undefined), 250);
    }, signal);
    followEvents();
    const poll = setInterval(() => {
      void refreshStatus().catch(() => undefined);
      void refreshCache().catch(() => undefined);
      void refreshFlags().catch(() => undefined);
    }, 3_000);
    refreshRollups();
    const anPoll = setInterval(refreshRollups, 10_000);
    signal.addEventListener('abort', () => {
      clearInterval(poll);
      clearInterval(anPoll);
    });
  }

  function logout(message) {
    live?.abort();
    eventsLive?.abort();
    sessionStorage.removeItem('tollgate-key');
    state.key = null;
    $('app').hidden = true;
    $('login').hidden = false;
    $('status').textContent = message ?? 'not connected';
  }

  $('login').addEventListener('submit', (e) => {
    e.preventDefault();
    state.key = $('key').value.trim();
    sessionStorage.setItem('tollgate-key', state.key);
    void connect();
  });
  $('event-apply').addEventListener('click', followEvents);
  $('an-apply').addEventListener('click', refreshRollups);
  $('an-range').addEventListener('change', () => void refreshAnalytics().catch(() => undefined));
  for (const radio of document.querySelectorAll('input[name="chart-by"]')) {
    radio.addEventListener('change', () => {
      state.chartBy = radio.value;
      renderChart();
    });
  }

  if (state.key) void connect();
  else logout();
})();

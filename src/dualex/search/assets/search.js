"use strict";
(function () {
  const payload = JSON.parse(document.getElementById("data").textContent);
  const STOPS = payload.stops;
  const live = document.body.dataset.live === "1";
  let page = payload.page;
  let selected = null; // index of the selected query word (a row), or null: every word
  const $ = (id) => document.getElementById(id);

  function decode(q) {
    if (!q) return null;
    const bin = atob(q.data);
    const buf = new ArrayBuffer(bin.length);
    const u8 = new Uint8Array(buf);
    for (let i = 0; i < bin.length; i++) u8[i] = bin.charCodeAt(i);
    const dv = new DataView(buf);
    const n = bin.length / 2;
    const out = new Float64Array(n);
    for (let i = 0; i < n; i++) out[i] = dv.getInt16(2 * i, true) * q.scale;
    return { shape: q.shape, v: out };
  }

  function color(t) { // t in [-1, 1] -> [r, g, b]
    const x = (Math.max(-1, Math.min(1, t)) + 1) / 2 * (STOPS.length - 1);
    const i = Math.min(STOPS.length - 2, Math.floor(x));
    const f = x - i;
    return STOPS[i].map((c, j) => Math.round(c + f * (STOPS[i + 1][j] - c)));
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function fmt(v) { return (v >= 0 ? "+" : "") + v.toFixed(4); }

  // the hit's map over its patches for the current selection: one word's row, or every
  // non-special word plus the query image part
  function hitMap(h) {
    const n = h.grid[0] * h.grid[1];
    const out = new Float64Array(n);
    const rows = h._rows;
    const special = page.query.special;
    if (rows) {
      for (let r = 0; r < rows.shape[0]; r++) {
        if (selected !== null ? r !== selected : special[r]) continue;
        for (let j = 0; j < n; j++) out[j] += rows.v[r * n + j];
      }
    }
    if (h._img && selected === null) for (let j = 0; j < n; j++) out[j] += h._img.v[j];
    return out;
  }

  function drawMap(canvas, rec, values, vmax, onto) {
    const img = new Image();
    const W = 300;
    const [w0, h0] = rec.size;
    const k = W / w0;
    canvas.width = W; canvas.height = Math.round(h0 * k);
    const ctx = canvas.getContext("2d");
    const [rows, cols] = rec.grid;
    const small = document.createElement("canvas");
    small.width = cols; small.height = rows;
    const sctx = small.getContext("2d");
    const data = sctx.createImageData(cols, rows);
    for (let i = 0; i < rows * cols; i++) {
      const c = color(vmax > 0 ? values[i] / vmax : 0);
      data.data.set([c[0], c[1], c[2], 255], 4 * i);
    }
    sctx.putImageData(data, 0, 0);
    const paint = () => {
      ctx.clearRect(0, 0, canvas.width, canvas.height);
      if (onto && rec.image) ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
      ctx.globalAlpha = onto && rec.image ? 0.6 : 1.0;
      ctx.imageSmoothingEnabled = false;
      const [x0, y0, x1, y1] = rec.window;
      ctx.drawImage(small, x0 * k, y0 * k, (x1 - x0) * k, (y1 - y0) * k);
      ctx.globalAlpha = 1.0;
      canvas.dataset.drawn = String(Number(canvas.dataset.drawn || 0) + 1);
    };
    if (onto && rec.image) { img.onload = paint; img.src = rec.image; } else paint();
  }

  function vmaxOf(arrays) {
    let m = 0;
    for (const a of arrays) for (const v of a) m = Math.max(m, Math.abs(v));
    return m;
  }

  function renderQuery() {
    const q = $("query");
    q.textContent = "";
    if (!page) return;
    const line = el("div");
    line.append(el("b", "", "Query words: "));
    page.query.tokens.forEach((t, i) => {
      const w = el("span", "word" + (page.query.special[i] ? " special" : ""), t);
      w.dataset.index = String(i);
      if (selected === i) w.classList.add("selected");
      w.addEventListener("click", () => { selected = selected === i ? null : i; render(); });
      line.append(w);
    });
    if (!page.query.tokens.length) line.append(el("span", "note", "(image query)"));
    q.append(line);
    const note = el("div", "note", selected === null
      ? "Maps: every query word" + (page.query.image ? " and the query image" : "") + ". Click a word to see where it matched in every hit; drag a box on a hit for its per-word scores."
      : "Maps: where “" + page.query.tokens[selected] + "” matched in every hit (one colour scale for all hits).");
    q.append(note);
    if (page.weights === "random") q.append(el("div", "random", page.random_note));
  }

  function renderHits() {
    const box = $("hits");
    box.textContent = "";
    if (!page) return;
    const imageHits = page.hits.filter((h) => h.kind === "image");
    const maps = imageHits.map(hitMap);
    const vmax = vmaxOf(maps);
    page.hits.forEach((h) => {
      const card = el("div", "hit");
      card.dataset.rank = String(h.rank);
      card.append(el("h3", "", "#" + h.rank + "  " + (h.name || h.caption || ("id " + h.id))));
      card.append(el("div", "score", "score " + h.score.toFixed(4) + "  (id " + h.id + ")"));
      const canvas = el("canvas", "heatmap");
      if (h.kind === "image") {
        drawMap(canvas, h, hitMap(h), vmax, true);
        addBoxDrag(canvas, h, card);
        card.append(canvas);
      } else {
        const cap = el("div", "caption");
        const vm = vmaxOf([h.caption_values]);
        h.caption_tokens.forEach((t, i) => {
          if (h.caption_special[i]) return;
          const s = el("span", "tok", t);
          const c = color(vm > 0 ? h.caption_values[i] / vm : 0);
          s.style.background = "rgb(" + c.join(",") + ")";
          s.title = fmt(h.caption_values[i]);
          cap.append(s, document.createTextNode(" "));
        });
        card.append(cap);
        if (page.query.image) {
          const qrec = page.query.image;
          const m = decode(h.qmap).v;
          drawMap(canvas, qrec, m, vmaxOf([m]), true);
          card.append(canvas);
        }
      }
      if (h.words && h.words.length) {
        card.append(el("div", "words", "top words: " + h.words.map((w) =>
          w.word + " " + fmt(w.score) + " @(" + w.box.map((v) => Math.round(v)).join(",") + ")").join("; ")));
      }
      card.append(el("div", "boxwords"));
      box.append(card);
    });
  }

  function addBoxDrag(canvas, h, card) {
    let start = null;
    const pos = (ev) => {
      const r = canvas.getBoundingClientRect();
      const k = h.size[0] / r.width;
      return [(ev.clientX - r.left) * k, (ev.clientY - r.top) * k];
    };
    canvas.addEventListener("mousedown", (ev) => { start = pos(ev); ev.preventDefault(); });
    canvas.addEventListener("mouseup", (ev) => {
      if (!start) return;
      const end = pos(ev);
      const b = [Math.min(start[0], end[0]), Math.min(start[1], end[1]), Math.max(start[0], end[0]), Math.max(start[1], end[1])];
      start = null;
      boxWords(h, b, card.querySelector(".boxwords"));
    });
  }

  function boxWords(h, b, out) {
    // per-word scores of the patches whose centre lies in the box (original pixels)
    const [rows, cols] = h.grid;
    const [x0, y0, x1, y1] = h.window;
    const pw = (x1 - x0) / cols, ph = (y1 - y0) / rows;
    const inside = [];
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) {
      const cx = x0 + (c + 0.5) * pw, cy = y0 + (r + 0.5) * ph;
      if (cx >= b[0] && cx <= b[2] && cy >= b[1] && cy <= b[3]) inside.push(r * cols + c);
    }
    out.textContent = "";
    if (!inside.length || !h._rows) { out.textContent = "box: no patch"; return; }
    const n = rows * cols;
    const parts = [];
    page.query.tokens.forEach((t, i) => {
      if (page.query.special[i]) return;
      let s = 0;
      for (const j of inside) s += h._rows.v[i * n + j];
      parts.push(t + " " + fmt(s));
    });
    out.textContent = "box (" + inside.length + " patches): " + parts.join("; ");
  }

  function renderWhy() {
    const sec = $("why");
    const a = $("why-a"), b = $("why-b");
    if (!page || page.hits.length < 2) { sec.hidden = true; return; }
    sec.hidden = false;
    if (a.options.length !== page.hits.length) {
      a.textContent = ""; b.textContent = "";
      page.hits.forEach((h, i) => {
        const label = "#" + h.rank + " " + (h.name || h.caption || h.id);
        a.append(new Option(label, String(i)));
        b.append(new Option(label, String(i)));
      });
      a.value = "0"; b.value = "1";
    }
    const A = page.hits[Number(a.value)], B = page.hits[Number(b.value)];
    const body = $("why-body");
    body.textContent = "";
    body.append(el("div", "", "score " + A.score.toFixed(4) + " − " + B.score.toFixed(4) + " = " + fmt(A.score - B.score)));
    if (A.kind === "image" && B.kind === "image" && A.grid.join() === B.grid.join()) {
      const ma = hitMap(A), mb = hitMap(B);
      const d = ma.map((v, i) => v - mb[i]);
      const wrap = el("div", "diffmap");
      wrap.append(el("div", "note", "map of A − map of B" + (selected === null ? "" : " for “" + page.query.tokens[selected] + "”")));
      const c = el("canvas", "diff");
      c.id = "why-map";
      drawMap(c, { size: A.size, window: A.window, grid: A.grid, image: null }, d, vmaxOf([d]), false);
      c.style.width = "200px";
      wrap.append(c);
      body.append(wrap);
    }
    const table = el("table");
    table.id = "why-table";
    const head = el("tr");
    ["part", "A", "B", "A − B"].forEach((t) => head.append(el("th", "", t)));
    table.append(head);
    const rows = [];
    if (A.row_totals && B.row_totals) {
      page.query.tokens.forEach((t, i) => {
        if (!page.query.special[i]) rows.push([t, A.row_totals[i], B.row_totals[i]]);
      });
      let sa = 0, sb = 0;
      page.query.tokens.forEach((t, i) => { if (page.query.special[i]) { sa += A.row_totals[i]; sb += B.row_totals[i]; } });
      rows.push(["(special tokens)", sa, sb]);
    }
    if (page.query.image) rows.push(["(query image)", A.image_total, B.image_total]);
    rows.push(["(reference terms)", A.refs, B.refs]);
    const dmax = Math.max(1e-12, ...rows.map((r) => Math.abs(r[1] - r[2])));
    for (const [name, va, vb] of rows) {
      const tr = el("tr");
      tr.append(el("td", "", name), el("td", "", va.toFixed(4)), el("td", "", vb.toFixed(4)));
      const td = el("td", "", fmt(va - vb) + " ");
      const bar = el("span", "bar");
      const c = color((va - vb) / dmax);
      bar.style.width = Math.round(60 * Math.abs(va - vb) / dmax) + "px";
      bar.style.background = "rgb(" + c.join(",") + ")";
      td.append(bar);
      tr.append(td);
      table.append(tr);
    }
    body.append(table);
  }

  function prepare() {
    if (!page) return;
    for (const h of page.hits) {
      h._rows = decode(h.rows);
      h._img = h.image_part ? decode(h.image_part) : null;
    }
  }

  function render() {
    renderQuery();
    renderHits();
    renderWhy();
    document.body.dataset.ready = String(page ? page.hits.length : 0);
  }

  function showError(msg) {
    const e = $("error");
    e.textContent = msg;
    e.hidden = !msg;
  }

  async function search(ev) {
    ev.preventDefault();
    showError("");
    const q = $("q").value;
    const file = $("qimage").files[0];
    const k = $("k").value;
    const url = "/api/search?q=" + encodeURIComponent(q) + "&k=" + encodeURIComponent(k);
    document.body.dataset.busy = "1";
    try {
      const res = await fetch(url, {
        method: "POST",
        body: file || null,
        headers: file ? { "Content-Type": file.type || "application/octet-stream" } : {},
      });
      const out = await res.json();
      if (!res.ok) { showError(out.error || ("request failed: " + res.status)); return; }
      page = out;
      selected = null;
      $("why-a").textContent = ""; $("why-b").textContent = "";
      prepare();
      render();
    } catch (err) {
      showError("the server did not answer: " + err);
    } finally {
      document.body.dataset.busy = "0";
    }
  }

  $("why-a").addEventListener("change", renderWhy);
  $("why-b").addEventListener("change", renderWhy);
  if (live) {
    $("search-form").hidden = false;
    $("search-form").addEventListener("submit", search);
  }
  prepare();
  render();
})();

// dualex concept panel: per-concept token strips and heatmaps from the embedded split.
// User text (concept names, tokens) is only ever inserted with textContent.
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("dualex-data").textContent);
  var CDATA = JSON.parse(document.getElementById("dualex-concepts").textContent);
  var $ = function (id) { return document.getElementById(id); };
  var state = { pair: -1, concept: 0, img: null, drag: null };

  // the report's colour map, number format and decoder (report.js runs first)
  var U = window.dualexReport.util;
  var colour = U.colour, css = U.css, fmt = U.fmt, decode = U.decode;
  function pair() { return DATA.pairs[state.pair]; }
  function rec() { return CDATA.pairs[state.pair]; }
  function mats(c) {
    if (!c._m) c._m = decode(c.matrices);
    return c._m;
  }
  function dims(c) { return c.matrices.shape; }  // [K', S_text, S_other]
  function content(special) {
    var out = [];
    for (var i = 0; i < special.length; i++) if (!special[i]) out.push(i);
    return out.length ? out : special.map(function (_, i) { return i; });
  }
  function otherColumns(p, c) {
    var S = dims(c)[2], out = [];
    if (p.kind === "text") return content(p.special_b);
    for (var j = c.prefix; j < c.prefix + c.patch_boxes.length && j < S; j++) out.push(j);
    return out;
  }
  // sum of concept k's matrix over rows x columns
  function block(c, k, rows, cols) {
    var d = dims(c), M = mats(c), base = k * d[1] * d[2], s = 0;
    rows.forEach(function (r) { cols.forEach(function (t) { s += M[base + r * d[2] + t]; }); });
    return s;
  }

  function build() {
    var c = rec(), p = pair(), list = $("concept-list");
    list.textContent = "";
    $("concept-carry").textContent = "";
    if (!c) { $("concept-summary").textContent = "no concept split for this pair"; return; }
    var vmax = 1e-30;
    c.concepts.forEach(function (e) { vmax = Math.max(vmax, Math.abs(e[2])); });
    c.concepts.forEach(function (e, k) {
      var li = document.createElement("li"), b = document.createElement("button");
      b.type = "button";
      b.setAttribute("data-concept", String(k));
      b.textContent = "#" + e[0] + " " + e[1];
      var share = document.createElement("span");
      share.className = "share";
      share.textContent = fmt(e[2]);
      b.appendChild(share);
      var bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = (100 * Math.abs(e[2]) / vmax) + "%";
      bar.style.background = css(colour(e[2] >= 0 ? 0.8 : -0.8));
      b.appendChild(bar);
      b.addEventListener("click", function () { select(k); });
      li.appendChild(b);
      list.appendChild(li);
    });
    $("concept-summary").textContent =
      "residual " + fmt(c.residual) + " (share of |M|: " + (100 * c.residual_share).toFixed(1) +
      " %), other concepts " + fmt(c.others);
    var img = p.kind === "image";
    $("concept-stage").hidden = !img;
    $("concept-tokens-b").hidden = img;
    state.img = null;
    if (img && p.image) {
      var im = new Image();
      im.onload = function () { state.img = im; render(); };
      im.src = p.image;
    }
    select(0);
  }

  function strip(el, pieces, special, values, vmax, clickable) {
    el.textContent = "";
    pieces.forEach(function (piece) {
      if (piece[1] === null) { el.appendChild(document.createTextNode(piece[0])); return; }
      if (special[piece[1]]) return;
      var s = document.createElement("span"), v = values[piece[1]] / vmax;
      s.className = "ctok";
      s.setAttribute("data-index", String(piece[1]));
      s.setAttribute("data-value", String(values[piece[1]]));
      s.style.background = css(colour(v));
      s.style.color = Math.abs(v) > 0.6 ? "#fff" : "#000";
      s.textContent = piece[0];
      if (clickable) s.addEventListener("click", function () { carryToken(piece[1], s); });
      el.appendChild(s);
    });
  }

  function select(k) {
    state.concept = k;
    var buttons = $("concept-list").querySelectorAll("button");
    for (var i = 0; i < buttons.length; i++) buttons[i].classList.toggle("active", i === k);
    render();
  }

  function render() {
    var c = rec(), p = pair();
    if (!c || !c.concepts.length) return;
    var k = state.concept, d = dims(c), M = mats(c), base = k * d[1] * d[2];
    var rows = content(p.special), cols = otherColumns(p, c);
    var tv = new Float64Array(d[1]), ov = new Float64Array(d[2]), vmax = 1e-30;
    rows.forEach(function (r) {
      cols.forEach(function (t) {
        var v = M[base + r * d[2] + t];
        tv[r] += v;
        ov[t] += v;
      });
    });
    // each side on its own range: a token sums many patches, a patch many tokens
    var omax = 1e-30;
    rows.forEach(function (r) { vmax = Math.max(vmax, Math.abs(tv[r])); });
    cols.forEach(function (t) { omax = Math.max(omax, Math.abs(ov[t])); });
    strip($("concept-tokens"), p.pieces, p.special, tv, vmax, true);
    if (p.kind === "text") {
      strip($("concept-tokens-b"), p.pieces_b, p.special_b, ov, omax, false);
    } else {
      heat(c, p, ov, omax);
    }
    var e = c.concepts[k];
    document.body.setAttribute("data-concept", String(e[0]));
    $("concept-info").textContent = "#" + e[0] + " " + e[1] + ": share " + fmt(e[2]);
  }

  function heat(c, p, ov, vmax) {
    var cv = $("concept-heatmap"), ctx = cv.getContext("2d");
    var W = p.geometry.original_size[0], H = p.geometry.original_size[1];
    var s = 256 / Math.max(W, H);
    cv.width = Math.round(W * s);
    cv.height = Math.round(H * s);
    ctx.fillStyle = "#888";
    ctx.fillRect(0, 0, cv.width, cv.height);
    if (state.img) ctx.drawImage(state.img, 0, 0, cv.width, cv.height);
    ctx.globalAlpha = 0.65;
    c.patch_boxes.forEach(function (b, i) {
      ctx.fillStyle = css(colour(ov[c.prefix + i] / vmax));
      ctx.fillRect(b[0] * s, b[1] * s, (b[2] - b[0]) * s, (b[3] - b[1]) * s);
    });
    ctx.globalAlpha = 1;
    state.scale = s;
  }

  function showCarry(title, values) {
    var c = rec(), list = $("concept-carry");
    list.textContent = "";
    var order = values.map(function (v, k) { return k; });
    order.sort(function (a, b) { return Math.abs(values[b]) - Math.abs(values[a]); });
    $("concept-info").textContent = title;
    order.slice(0, 5).forEach(function (k) {
      var li = document.createElement("li");
      li.textContent = "#" + c.concepts[k][0] + " " + c.concepts[k][1] + ": " + fmt(values[k]);
      list.appendChild(li);
    });
  }

  function carryToken(r, el) {
    var c = rec(), p = pair(), cols = otherColumns(p, c), vals = [];
    var picked = $("concept-tokens").querySelectorAll(".picked");
    for (var i = 0; i < picked.length; i++) picked[i].classList.remove("picked");
    el.classList.add("picked");
    for (var k = 0; k < c.concepts.length; k++) vals.push(block(c, k, [r], cols));
    showCarry("concepts carrying \u201c" + el.textContent + "\u201d:", vals);
  }

  function carryBox(x0, y0, x1, y1) {
    var c = rec(), p = pair(), s = state.scale, cols = [], vals = [];
    c.patch_boxes.forEach(function (b, i) {
      var cx = (b[0] + b[2]) / 2 * s, cy = (b[1] + b[3]) / 2 * s;
      if (cx >= x0 && cx <= x1 && cy >= y0 && cy <= y1) cols.push(c.prefix + i);
    });
    if (!cols.length) return;
    for (var k = 0; k < c.concepts.length; k++) vals.push(block(c, k, content(p.special), cols));
    showCarry("concepts carrying the box (" + cols.length + " patches):", vals);
  }

  var cv = $("concept-heatmap");
  function pos(ev) {
    var r = cv.getBoundingClientRect();
    return [ev.clientX - r.left, ev.clientY - r.top];
  }
  cv.addEventListener("mousedown", function (ev) { state.drag = pos(ev); ev.preventDefault(); });
  window.addEventListener("mousemove", function (ev) {
    if (!state.drag) return;
    var q = pos(ev), b = $("concept-box");
    b.hidden = false;
    b.style.left = Math.min(q[0], state.drag[0]) + "px";
    b.style.top = Math.min(q[1], state.drag[1]) + "px";
    b.style.width = Math.abs(q[0] - state.drag[0]) + "px";
    b.style.height = Math.abs(q[1] - state.drag[1]) + "px";
  });
  window.addEventListener("mouseup", function (ev) {
    if (!state.drag) return;
    var q = pos(ev), d = state.drag;
    state.drag = null;
    carryBox(Math.min(q[0], d[0]), Math.min(q[1], d[1]), Math.max(q[0], d[0]), Math.max(q[1], d[1]));
  });

  function sync() {
    var ready = document.body.getAttribute("data-ready");
    if (ready === null) return;
    var i = parseInt(ready, 10);
    if (i !== state.pair && i >= 0 && i < DATA.pairs.length) {
      state.pair = i;
      build();
      document.body.setAttribute("data-concepts-ready", String(i));
    }
  }
  new MutationObserver(sync).observe(document.body, { attributes: true });
  sync();
})();

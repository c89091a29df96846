// dualex report: recomputes image maps (span -> patches) and token scores (box -> tokens)
// from the embedded interaction matrix. User text is only ever inserted with textContent.
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("dualex-data").textContent);
  var STOPS = DATA.stops;
  var ALPHA = 0.7;         // heatmap opacity (the opacity slider)
  var OUTSIDE_DIM = 0.45;
  var MIN_CANVAS = 384;
  var $ = function (id) { return document.getElementById(id); };

  // ---- colour: the same piecewise-linear map as dualex.viz.colors ----------------------------
  function colour(t) {
    if (!(t === t)) t = 0;
    t = Math.max(-1, Math.min(1, t));
    var n = STOPS.length, x = (t + 1) / 2 * (n - 1);
    var i = Math.min(Math.max(Math.floor(x), 0), n - 2), f = x - i;
    var a = STOPS[i], b = STOPS[i + 1];
    return [a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, a[2] + (b[2] - a[2]) * f];
  }
  function css(rgb) {
    return "rgb(" + Math.round(rgb[0]) + "," + Math.round(rgb[1]) + "," + Math.round(rgb[2]) + ")";
  }
  function ink(rgb) {
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 140 ? "#000" : "#fff";
  }
  function fmt(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v !== "number") return String(v);
    if (v === 0) return "0";
    var a = Math.abs(v);
    return a >= 1e-3 && a < 1e4 ? v.toPrecision(4) : v.toExponential(2);
  }

  // ---- data ----------------------------------------------------------------------------------
  function decode(m) {
    var bin = atob(m.data), n = bin.length >> 1, out = new Float64Array(n);
    for (var k = 0; k < n; k++) {
      var v = bin.charCodeAt(2 * k) | (bin.charCodeAt(2 * k + 1) << 8);
      if (v >= 32768) v -= 65536;
      out[k] = v * m.scale;
    }
    return out;
  }
  function matrix(p) {
    if (!p._m) p._m = decode(p.matrix);
    return p._m;
  }
  function contentOf(special) {
    var out = [];
    for (var i = 0; i < special.length; i++) if (!special[i]) out.push(i);
    if (!out.length) for (var j = 0; j < special.length; j++) out.push(j);
    return out;
  }
  function contentTokens(p) { return contentOf(p.special); }
  function isText(p) { return p.kind === "text"; }
  // Tokens unknown to the model's vocabulary: grey, never coloured by a score, never ranked.
  function unknownSet(list) { return new Set(list || []); }
  var UNKNOWN_TITLE = "unknown to the model's vocabulary: read as one generic 'unknown' token";
  function npatch(p) { return p.grid[0] * p.grid[1]; }

  // Sum of the selected rows at every patch: Explanation.image_map(span), flattened row-major.
  function patchValues(p, sel) {
    var M = matrix(p), S = p.matrix.shape[1], n = npatch(p), v = new Float64Array(n);
    sel.forEach(function (r) {
      var base = r * S + p.prefix;
      for (var k = 0; k < n; k++) v[k] += M[base + k];
    });
    return v;
  }

  // Patch boxes in original pixels, as ImagePositions.patch_boxes().
  function patchBoxes(p) {
    var g = p.geometry, rows = p.grid[0], cols = p.grid[1];
    var pw = g.input_size[0] / cols, ph = g.input_size[1] / rows, out = [];
    for (var r = 0; r < rows; r++) for (var c = 0; c < cols; c++) {
      out.push([(c * pw + g.offset[0]) / g.scale[0], (r * ph + g.offset[1]) / g.scale[1],
        ((c + 1) * pw + g.offset[0]) / g.scale[0], ((r + 1) * ph + g.offset[1]) / g.scale[1]]);
    }
    return out;
  }

  // Matrix columns of the patches under a box, as ImagePositions.box_patches(box, 0.5).
  function boxPatches(p, box) {
    var W = p.geometry.original_size[0], H = p.geometry.original_size[1];
    var x0 = box[0], y0 = box[1], x1 = box[2], y1 = box[3];
    if (!(x1 > x0 && y1 > y0) || x1 <= 0 || y1 <= 0 || x0 >= W || y0 >= H) return [];
    var cx = (x0 + x1) / 2, cy = (y0 + y1) / 2, out = [], best = -1, bestArea = -1;
    patchBoxes(p).forEach(function (b, i) {
      var area = Math.max(Math.min(b[2], W) - Math.max(b[0], 0), 0) *
        Math.max(Math.min(b[3], H) - Math.max(b[1], 0), 0);
      var inter = Math.max(Math.min(b[2], x1) - Math.max(b[0], x0), 0) *
        Math.max(Math.min(b[3], y1) - Math.max(b[1], y0), 0);
      if (area > 0 && inter / area >= 0.5) out.push(p.prefix + i);
      if (b[0] <= cx && cx < b[2] && b[1] <= cy && cy < b[3] && inter > bestArea) {
        best = i; bestArea = inter;
      }
    });
    if (!out.length && best >= 0) out.push(p.prefix + best);
    return out;
  }

  // Per-token sum over the given matrix columns: Explanation.text_scores(box).
  function tokenScores(p, cols) {
    var M = matrix(p), S = p.matrix.shape[1], T = p.matrix.shape[0], s = new Float64Array(T);
    for (var r = 0; r < T; r++) {
      var acc = 0, base = r * S;
      for (var k = 0; k < cols.length; k++) acc += M[base + cols[k]];
      s[r] = acc;
    }
    return s;
  }
  function allPatchColumns(p) {
    var out = [];
    for (var k = 0; k < npatch(p); k++) out.push(p.prefix + k);
    return out;
  }

  // ---- state ---------------------------------------------------------------------------------
  var cur = null;          // {i, p, sel: Set, anchor, box, base, lut}
  var dragTokens = null;   // token index where a token drag started
  var dragBox = null;      // {x, y} original-pixel start of a box drag
  var positiveOnly = false;
  var showSpecial = false;
  var greyscale = false;
  var showBoxes = true;
  var matrixView = false;
  var dragTokensB = null;  // text-text: token index where a drag on text B started

  function show(i) {
    var n = DATA.pairs.length;
    i = Math.max(0, Math.min(n - 1, i | 0));
    var p = DATA.pairs[i];
    document.body.removeAttribute("data-ready");
    cur = { i: i, p: p, sel: new Set(contentTokens(p)), anchor: null, box: null, base: null,
      selB: null, anchorB: null };
    var text = isText(p);
    document.body.classList.toggle("text-pair", text);
    $("stage").hidden = text;
    $("tokens-b").hidden = !text;
    $("help-image").hidden = text;
    $("help-text").hidden = !text;
    $("clear-box").textContent = text ? "whole text B" : "whole image";
    $("whole-caption").textContent = text ? "whole text A" : "whole caption";
    $("boxes-control").hidden = text || !(p.boxes && p.boxes.length);
    $("label-a").hidden = !text;
    $("label-b").hidden = !text;
    $("crop-note").hidden = text || !p.crop_note;
    $("crop-note").textContent = text ? "" : (p.crop_note || "");
    $("unknown-note").hidden = !p.unknown_note;
    $("unknown-note").textContent = p.unknown_note ? "Struck-through grey: " + p.unknown_note + "." : "";
    var banner = $("weights-banner");
    banner.hidden = p.weights !== "random";
    banner.textContent = p.weights === "random" ? DATA.random_note + " (" + p.model + "): the " +
      "maps show what an untrained network computes, not what a model learnt" : "";
    $("counter").textContent = (i + 1) + " / " + n;
    $("prev").disabled = i === 0;
    $("next").disabled = i === n - 1;
    $("pair-name").textContent = p.name;
    var buttons = $("pair-list").children;
    for (var k = 0; k < buttons.length; k++) buttons[k].classList.toggle("current", k === i);
    if (history.replaceState) history.replaceState(null, "", "#pair-" + (i + 1));
    buildTokens(p);
    if (text) buildTokensB(p);
    buildCompleteness(p);
    buildStrongest(p);
    $("box").hidden = true;
    $("message").textContent = "";
    if (text) {
      renderAll();
      document.body.setAttribute("data-ready", String(i));
      return;
    }
    prepareCanvas(p, function () {
      if (cur.p !== p) return;
      renderAll();
      document.body.setAttribute("data-ready", String(i));
    });
  }

  function canvasSize(p) {
    var W = p.geometry.original_size[0], H = p.geometry.original_size[1];
    var k = Math.min(640 / Math.max(W, H), Math.max(1, MIN_CANVAS / Math.max(W, H)));
    return [Math.max(1, Math.round(W * k)), Math.max(1, Math.round(H * k))];
  }

  function prepareCanvas(p, done) {
    function finish() {
      if (cur.p !== p) return;
      var size = canvasSize(p), cw = size[0], ch = size[1], canvas = $("heatmap");
      canvas.width = cw; canvas.height = ch;
      var off = document.createElement("canvas");
      off.width = cw; off.height = ch;
      var ctx = off.getContext("2d");
      if (p._img) {
        ctx.imageSmoothingEnabled = true;
        ctx.imageSmoothingQuality = "high";
        ctx.drawImage(p._img, 0, 0, cw, ch);
      } else {
        ctx.fillStyle = "#808080"; ctx.fillRect(0, 0, cw, ch);
      }
      cur.base = ctx.getImageData(0, 0, cw, ch).data;
      var grey = new Uint8ClampedArray(cur.base.length);
      for (var q = 0; q < grey.length; q += 4) {
        var lum = 0.299 * cur.base[q] + 0.587 * cur.base[q + 1] + 0.114 * cur.base[q + 2];
        grey[q] = grey[q + 1] = grey[q + 2] = lum; grey[q + 3] = 255;
      }
      cur.baseGrey = grey;
      cur.lut = lookup(p, cw, ch);
      done();
    }
    if (!p.image || p._img) { finish(); return; }
    var img = new Image();
    img.onload = function () { p._img = img; finish(); };
    img.onerror = function () { p.image = null; finish(); };
    img.src = p.image;
  }

  // Bilinear interpolation between patch centres through the processor geometry
  // (as dualex.viz.heatmap.upsample): per canvas column/row, the neighbours and weights.
  function lookup(p, cw, ch) {
    var g = p.geometry;
    function axis(n, out, orig, scale, offset, inN) {
      var i0 = new Int32Array(out), w = new Float64Array(out), inside = new Uint8Array(out);
      for (var k = 0; k < out; k++) {
        var u = (k + 0.5) * (orig / out) * scale - offset;
        inside[k] = u >= 0 && u < inN ? 1 : 0;
        var f = Math.max(0, Math.min(n - 1, u / (inN / n) - 0.5));
        var i = Math.min(Math.floor(f), Math.max(n - 2, 0));
        i0[k] = i; w[k] = f - i;
      }
      return { i0: i0, w: w, inside: inside };
    }
    return {
      x: axis(p.grid[1], cw, g.original_size[0], g.scale[0], g.offset[0], g.input_size[0]),
      y: axis(p.grid[0], ch, g.original_size[1], g.scale[1], g.offset[1], g.input_size[1]),
    };
  }

  // Text-text: text B's tokens coloured by the selected span of text A (row sums).
  function renderTokensB() {
    var p = cur.p, M = matrix(p), S = p.matrix.shape[1], v = new Float64Array(S), vmax = 0;
    var unk = unknownSet(p.unknown_b);
    cur.sel.forEach(function (r) { for (var k = 0; k < S; k++) v[k] += M[r * S + k]; });
    for (var k = 0; k < S; k++) {
      if (positiveOnly && v[k] < 0) v[k] = 0;
      if ((showSpecial || !p.special_b[k]) && !unk.has(k)) vmax = Math.max(vmax, Math.abs(v[k]));
    }
    vmax = Math.max(vmax, 1e-12);
    var spans = $("tokens-b").querySelectorAll(".tokb");
    for (var q = 0; q < spans.length; q++) {
      var el = spans[q], i = +el.getAttribute("data-index"), rgb = colour(v[i] / vmax);
      el.setAttribute("data-score", String(v[i]));
      if (unk.has(i)) { el.style.background = ""; el.style.color = ""; el.title = UNKNOWN_TITLE; }
      else { el.style.background = css(rgb); el.style.color = ink(rgb); el.title = fmt(v[i]); }
      el.classList.toggle("sel", !!(cur.selB && cur.selB.has(i)));
    }
    cur.patchValues = v;
    setColorbar($("image-colorbar"), vmax);
    $("span-label").textContent = "span A: " + spanLabel(p.pieces, p.special, cur.sel, "whole text A");
  }

  function drawBoxes(ctx, p, cw, ch) {
    if (!showBoxes || !p.boxes || !p.boxes.length) return;
    var kx = cw / p.geometry.original_size[0], ky = ch / p.geometry.original_size[1];
    ctx.save();
    ctx.font = "bold 12px system-ui, sans-serif";
    ctx.textBaseline = "top";
    p.boxes.forEach(function (entry) {
      var label = entry[0], b = entry[1];
      var x = b[0] * kx, y = b[1] * ky, w = (b[2] - b[0]) * kx, h = (b[3] - b[1]) * ky;
      ctx.lineWidth = 4; ctx.strokeStyle = "rgba(0,0,0,0.75)"; ctx.strokeRect(x, y, w, h);
      ctx.lineWidth = 2; ctx.strokeStyle = "#00e5ff"; ctx.strokeRect(x, y, w, h);
      if (label) {
        var tw = ctx.measureText(label).width + 6, ty = y >= 16 ? y - 16 : y + 2;
        ctx.fillStyle = "rgba(0,0,0,0.75)"; ctx.fillRect(x, ty, tw, 15);
        ctx.fillStyle = "#00e5ff"; ctx.fillText(label, x + 3, ty + 1);
      }
    });
    ctx.restore();
  }

  function renderImage() {
    if (isText(cur.p)) { renderTokensB(); return; }
    var p = cur.p, canvas = $("heatmap"), cw = canvas.width, ch = canvas.height;
    var rows = p.grid[0], cols = p.grid[1];
    var v = patchValues(p, cur.sel), vmax = 0;
    for (var k = 0; k < v.length; k++) {
      if (positiveOnly && v[k] < 0) v[k] = 0;
      vmax = Math.max(vmax, Math.abs(v[k]));
    }
    vmax = Math.max(vmax, 1e-12);
    var lut = [], L = 512;
    for (var q = 0; q <= L; q++) lut.push(colour(q / L * 2 - 1));
    var ctx = canvas.getContext("2d"), out = ctx.createImageData(cw, ch), o = out.data;
    var base = greyscale ? cur.baseGrey : cur.base, X = cur.lut.x, Y = cur.lut.y;
    for (var y = 0; y < ch; y++) {
      var r0 = Y.i0[y], r1 = Math.min(r0 + 1, rows - 1), wr = Y.w[y], iy = Y.inside[y];
      for (var x = 0; x < cw; x++) {
        var idx = (y * cw + x) * 4;
        if (!(iy && X.inside[x])) {
          o[idx] = base[idx] * OUTSIDE_DIM; o[idx + 1] = base[idx + 1] * OUTSIDE_DIM;
          o[idx + 2] = base[idx + 2] * OUTSIDE_DIM; o[idx + 3] = 255;
          continue;
        }
        var c0 = X.i0[x], c1 = Math.min(c0 + 1, cols - 1), wc = X.w[x];
        var top = v[r0 * cols + c0] * (1 - wc) + v[r0 * cols + c1] * wc;
        var bot = v[r1 * cols + c0] * (1 - wc) + v[r1 * cols + c1] * wc;
        var t = Math.max(-1, Math.min(1, (top * (1 - wr) + bot * wr) / vmax));
        var col = lut[Math.round((t + 1) / 2 * L)];
        var a = ALPHA * (0.25 + 0.75 * Math.abs(t));
        o[idx] = base[idx] * (1 - a) + col[0] * a;
        o[idx + 1] = base[idx + 1] * (1 - a) + col[1] * a;
        o[idx + 2] = base[idx + 2] * (1 - a) + col[2] * a;
        o[idx + 3] = 255;
      }
    }
    ctx.putImageData(out, 0, 0);
    drawBoxes(ctx, p, cw, ch);
    cur.patchValues = v;
    setColorbar($("image-colorbar"), vmax);
    $("span-label").textContent = "span: " + spanLabel(p.pieces, p.special, cur.sel, "whole caption");
  }

  function spanLabel(pieces, special, sel, whole) {
    var content = contentOf(special);
    if (sel.size === content.length && content.every(function (i) { return sel.has(i); })) {
      return whole;
    }
    var parts = [];
    pieces.forEach(function (piece) {
      if (piece[1] !== null && sel.has(piece[1])) parts.push(piece[0]);
    });
    return "\u201c" + parts.join(" ") + "\u201d";
  }

  function renderTokens() {
    var p = cur.p, cols, msg = "";
    if (isText(p)) {
      cols = cur.selB ? Array.from(cur.selB) : contentOf(p.special_b);
    } else if (cur.box) {
      cols = boxPatches(p, cur.box);
      if (!cols.length) {
        msg = "This box covers no patch the model saw; showing the whole image.";
        cols = allPatchColumns(p);
      }
    } else {
      cols = allPatchColumns(p);
    }
    var s = tokenScores(p, cols), vmax = 0, unk = unknownSet(p.unknown);
    for (var r = 0; r < s.length; r++) {
      if (positiveOnly && s[r] < 0) s[r] = 0;
      if ((showSpecial || !p.special[r]) && !unk.has(r)) vmax = Math.max(vmax, Math.abs(s[r]));
    }
    vmax = Math.max(vmax, 1e-12);
    var spans = $("tokens").querySelectorAll(".tok");
    for (var k = 0; k < spans.length; k++) {
      var el = spans[k], i = +el.getAttribute("data-index"), rgb = colour(s[i] / vmax);
      el.setAttribute("data-score", String(s[i]));
      if (unk.has(i)) { el.style.background = ""; el.style.color = ""; el.title = UNKNOWN_TITLE; }
      else { el.style.background = css(rgb); el.style.color = ink(rgb); el.title = fmt(s[i]); }
      el.classList.toggle("sel", cur.sel.has(i));
    }
    cur.tokenScores = s;
    cur.boxColumns = cols;
    setColorbar($("token-colorbar"), vmax);
    $("box-label").textContent = isText(p)
      ? "span B: " + (cur.selB ? spanLabel(p.pieces_b, p.special_b, cur.selB, "whole text B")
        : "whole text B")
      : cur.box
        ? "box: (" + cur.box.map(function (v) { return Math.round(v); }).join(", ") + ") px, " +
          cols.length + " patches"
        : "box: whole image";
    $("message").textContent = msg;
  }

  function renderAll() { renderImage(); renderTokens(); renderMatrix(); }

  // ---- matrix view: rows = tokens (text A), columns = patches or tokens of text B ------------
  function matrixAxes(p) {
    var rows = [], cols = [], k;
    for (k = 0; k < p.special.length; k++) if (showSpecial || !p.special[k]) rows.push(k);
    if (isText(p)) {
      for (k = 0; k < p.special_b.length; k++) if (showSpecial || !p.special_b[k]) cols.push(k);
    } else {
      for (k = 0; k < npatch(p); k++) cols.push(p.prefix + k);
    }
    return { rows: rows, cols: cols };
  }
  function labelsOf(pieces, n) {
    var out = new Array(n).fill("");
    pieces.forEach(function (piece) { if (piece[1] !== null) out[piece[1]] = piece[0]; });
    return out;
  }
  function renderMatrix() {
    if (!matrixView) return;
    var p = cur.p, ax = matrixAxes(p), M = matrix(p), S = p.matrix.shape[1];
    var canvas = $("matrix"), ctx = canvas.getContext("2d");
    var nr = ax.rows.length, nc = ax.cols.length;
    var cell = Math.max(3, Math.min(22, Math.floor(720 / Math.max(nc, 1))));
    var rowH = Math.max(cell, 16);
    var la = labelsOf(p.pieces, p.special.length);
    var lb = isText(p) ? labelsOf(p.pieces_b, p.special_b.length) : null;
    ctx.font = "12px system-ui, sans-serif";
    var left = 8, top = 8;
    ax.rows.forEach(function (r) { left = Math.max(left, ctx.measureText(la[r]).width + 12); });
    if (lb) ax.cols.forEach(function (c) { top = Math.max(top, ctx.measureText(lb[c]).width + 12); });
    left = Math.min(left, 180); top = Math.min(top, 140);
    canvas.width = left + nc * cell + 4; canvas.height = top + nr * rowH + 4;
    ctx.font = "12px system-ui, sans-serif";
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, canvas.height);
    var vmax = 1e-12;
    ax.rows.forEach(function (r) {
      ax.cols.forEach(function (c) { vmax = Math.max(vmax, Math.abs(M[r * S + c])); });
    });
    ax.rows.forEach(function (r, i) {
      ax.cols.forEach(function (c, j) {
        var v = M[r * S + c];
        if (positiveOnly && v < 0) v = 0;
        ctx.fillStyle = css(colour(v / vmax));
        ctx.fillRect(left + j * cell, top + i * rowH, cell, rowH);
      });
      ctx.fillStyle = cur.sel.has(r) ? "#000" : "#555";
      ctx.textBaseline = "middle"; ctx.textAlign = "right";
      ctx.fillText(la[r], left - 6, top + i * rowH + rowH / 2, left - 8);
      if (cur.sel.has(r)) {
        ctx.strokeStyle = "#111"; ctx.lineWidth = 1.5;
        ctx.strokeRect(left + 0.5, top + i * rowH + 0.5, nc * cell - 1, rowH - 1);
      }
    });
    if (lb) {
      ax.cols.forEach(function (c, j) {
        ctx.save();
        ctx.translate(left + j * cell + cell / 2, top - 6);
        ctx.rotate(-Math.PI / 2);
        ctx.fillStyle = cur.selB && cur.selB.has(c) ? "#000" : "#555";
        ctx.textBaseline = "middle"; ctx.textAlign = "left";
        ctx.fillText(lb[c], 0, 0, top - 8);
        ctx.restore();
      });
    }
    cur.matrixLayout = { left: left, top: top, cell: cell, rowH: rowH, ax: ax, vmax: vmax };
  }
  function matrixCell(ev) {
    var L = cur.matrixLayout, canvas = $("matrix"), rect = canvas.getBoundingClientRect();
    if (!L) return null;
    var x = (ev.clientX - rect.left) * canvas.width / rect.width - L.left;
    var y = (ev.clientY - rect.top) * canvas.height / rect.height - L.top;
    var j = Math.floor(x / L.cell), i = Math.floor(y / L.rowH);
    if (i < 0 || j < 0 || i >= L.ax.rows.length || j >= L.ax.cols.length) return null;
    return [L.ax.rows[i], L.ax.cols[j]];
  }
  function describeCell(p, r, c) {
    var M = matrix(p), S = p.matrix.shape[1], la = labelsOf(p.pieces, p.special.length);
    var what;
    if (isText(p)) {
      what = "token B \u201c" + labelsOf(p.pieces_b, p.special_b.length)[c] + "\u201d";
    } else {
      var k = c - p.prefix, b = patchBoxes(p)[k], cols = p.grid[1];
      what = "patch r" + Math.floor(k / cols) + "c" + (k % cols) + " [x " + Math.round(b[0]) +
        "\u2013" + Math.round(b[2]) + ", y " + Math.round(b[1]) + "\u2013" + Math.round(b[3]) + "]";
    }
    return (isText(p) ? "token A" : "token") + " \u201c" + la[r] + "\u201d \u00d7 " + what +
      " = " + (M[r * S + c] >= 0 ? "+" : "") + fmt(M[r * S + c]);
  }

  function setColorbar(el, vmax) {
    el.classList.toggle("positive", positiveOnly);
    el.querySelector(".lo").textContent = positiveOnly ? "0" : fmt(-vmax);
    el.querySelector(".mid").textContent = "0";
    el.querySelector(".hi").textContent = fmt(vmax);
  }

  // ---- building the DOM (textContent only) -----------------------------------------------------
  function buildTokens(p) {
    var box = $("tokens");
    box.textContent = "";
    box.classList.toggle("with-special", showSpecial);
    p.pieces.forEach(function (piece) {
      if (piece[1] === null) { box.appendChild(document.createTextNode(piece[0])); return; }
      var el = document.createElement("span");
      el.className = "tok" + (p.special[piece[1]] ? " special" : "") +
        ((p.unknown || []).indexOf(piece[1]) >= 0 ? " unk" : "");
      el.setAttribute("data-index", String(piece[1]));
      el.setAttribute("tabindex", "0");
      el.textContent = piece[0];
      box.appendChild(el);
    });
  }

  function buildTokensB(p) {
    var box = $("tokens-b");
    box.textContent = "";
    box.classList.toggle("with-special", showSpecial);
    p.pieces_b.forEach(function (piece) {
      if (piece[1] === null) { box.appendChild(document.createTextNode(piece[0])); return; }
      var el = document.createElement("span");
      el.className = "tokb" + (p.special_b[piece[1]] ? " special" : "") +
        ((p.unknown_b || []).indexOf(piece[1]) >= 0 ? " unk" : "");
      el.setAttribute("data-index", String(piece[1]));
      el.setAttribute("tabindex", "0");
      el.textContent = piece[0];
      box.appendChild(el);
    });
  }

  function buildStrongest(p) {
    var table = $("strongest"), head = table.tHead.rows[0], body = table.tBodies[0];
    head.textContent = ""; body.textContent = "";
    p.columns.concat(["value"]).forEach(function (name) {
      var th = document.createElement("th"); th.textContent = name; head.appendChild(th);
    });
    p.top.forEach(function (row) {
      var tr = document.createElement("tr");
      [row[0], row[1], (row[2] >= 0 ? "+" : "") + fmt(row[2])].forEach(function (v) {
        var td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
      });
      body.appendChild(tr);
    });
  }

  function buildCompleteness(p) {
    var c = p.completeness, rt = c.reference_terms, table = $("completeness"),
      body = table.tBodies[0];
    body.textContent = "";
    var banzhaf = p.method_rows && p.method_rows.length > 0;
    table.caption.textContent = banzhaf ? "method, sampling error and kept terms" : "completeness";
    var rows = banzhaf ? [["score", fmt(c.score)]].concat(p.method_rows) : [
      ["score", fmt(c.score)],
      ["\u03a3 interactions", fmt(c.attribution_sum)],
      ["reference " + p.reference_names[0], fmt(rt[0])],
      ["reference " + p.reference_names[1], fmt(rt[1])],
      ["reference " + p.reference_names[2], fmt(rt[2])],
      ["\u03a3 + reference terms", fmt(c.attribution_sum + rt[0] + rt[1] + rt[2])],
      ["absolute error", fmt(c.absolute_error)],
      ["relative error", fmt(c.relative_error)],
      ["tower errors", c.tower_errors.map(fmt).join("  ")],
      ["steps", c.steps.join(", ") + " (" + c.rule + ")"],
      ["layers", p.layers.join(", ")],
      ["method", "dualex: second-order integrated-Jacobian interactions (Moeller et al. 2025)"],
    ];
    rows = rows.concat([
      ["model", p.model],
      ["weights", p.weights === "random" ? "random (not a trained model)" : p.weights],
      ["tokens dropped", (p.dropped || [0, 0]).some(function (d) { return d > 0; })
        ? (p.dropped || [0, 0]).join(", ") + " (past the model's context; not explained)" : "none"],
      ["unknown words", p.unknown_note ? String((p.unknown || []).length +
        (p.unknown_b || []).length) + " (struck through; not ranked)" : "none"],
      ["matrix", p.matrix.shape.join(" \u00d7 ") +
        (isText(p) ? "  (tokens A \u00d7 tokens B)" : "  (grid " + p.grid.join("\u00d7") + ")")],
    ]);
    rows.forEach(function (row) {
      var tr = document.createElement("tr"), th = document.createElement("th"),
        td = document.createElement("td");
      th.textContent = row[0]; td.textContent = row[1];
      tr.appendChild(th); tr.appendChild(td); body.appendChild(tr);
    });
  }

  function buildNav() {
    var nav = $("pair-list");
    DATA.pairs.forEach(function (p, i) {
      var b = document.createElement("button");
      b.type = "button";
      b.textContent = p.name;
      var small = document.createElement("small");
      small.textContent = "score " + fmt(p.completeness.score);
      b.appendChild(small);
      b.title = p.name;
      if (p.weights === "random") b.classList.add("random");
      b.addEventListener("click", function () { show(i); });
      nav.appendChild(b);
    });
  }

  // ---- interaction -----------------------------------------------------------------------------
  function tokenIndex(ev) {
    var el = ev.target.closest && ev.target.closest(".tok");
    return el ? +el.getAttribute("data-index") : null;
  }
  function selectRange(a, b) {
    var lo = Math.min(a, b), hi = Math.max(a, b), sel = new Set();
    for (var i = lo; i <= hi; i++) if (showSpecial || !cur.p.special[i]) sel.add(i);
    if (!sel.size) sel.add(a);
    cur.sel = sel;
  }

  function wireTokens() {
    var box = $("tokens");
    box.addEventListener("pointerdown", function (ev) {
      var i = tokenIndex(ev);
      if (i === null || !cur) return;
      ev.preventDefault();
      if (ev.shiftKey && cur.anchor !== null) {
        selectRange(cur.anchor, i);
      } else if (ev.ctrlKey || ev.metaKey) {
        var sel = new Set(cur.sel);
        if (sel.has(i) && sel.size > 1) sel.delete(i); else sel.add(i);
        cur.sel = sel; cur.anchor = i;
      } else {
        cur.sel = new Set([i]); cur.anchor = i; dragTokens = i;
      }
      renderAll();
    });
    box.addEventListener("pointerover", function (ev) {
      if (dragTokens === null) return;
      var i = tokenIndex(ev);
      if (i === null) return;
      selectRange(dragTokens, i);
      renderAll();
    });
    box.addEventListener("keydown", function (ev) {
      var i = tokenIndex(ev);
      if (i === null || (ev.key !== "Enter" && ev.key !== " ")) return;
      ev.preventDefault();
      if (ev.shiftKey && cur.anchor !== null) selectRange(cur.anchor, i);
      else { cur.sel = new Set([i]); cur.anchor = i; }
      renderAll();
    });
    window.addEventListener("pointerup", function () { dragTokens = null; });
  }

  function wireTokensB() {
    var box = $("tokens-b");
    function indexB(ev) {
      var el = ev.target.closest && ev.target.closest(".tokb");
      return el ? +el.getAttribute("data-index") : null;
    }
    function rangeB(a, b) {
      var lo = Math.min(a, b), hi = Math.max(a, b), sel = new Set();
      for (var i = lo; i <= hi; i++) if (showSpecial || !cur.p.special_b[i]) sel.add(i);
      if (!sel.size) sel.add(a);
      cur.selB = sel;
    }
    box.addEventListener("pointerdown", function (ev) {
      var i = indexB(ev);
      if (i === null || !cur) return;
      ev.preventDefault();
      if (ev.shiftKey && cur.anchorB !== null) rangeB(cur.anchorB, i);
      else { cur.selB = new Set([i]); cur.anchorB = i; dragTokensB = i; }
      renderAll();
    });
    box.addEventListener("pointerover", function (ev) {
      if (dragTokensB === null) return;
      var i = indexB(ev);
      if (i === null) return;
      rangeB(dragTokensB, i);
      renderAll();
    });
    box.addEventListener("keydown", function (ev) {
      var i = indexB(ev);
      if (i === null || (ev.key !== "Enter" && ev.key !== " ")) return;
      ev.preventDefault();
      if (ev.shiftKey && cur.anchorB !== null) rangeB(cur.anchorB, i);
      else { cur.selB = new Set([i]); cur.anchorB = i; }
      renderAll();
    });
    window.addEventListener("pointerup", function () { dragTokensB = null; });
  }

  function wireMatrix() {
    var canvas = $("matrix");
    canvas.addEventListener("mousemove", function (ev) {
      var rc = matrixCell(ev);
      $("matrix-info").textContent = rc ? describeCell(cur.p, rc[0], rc[1]) :
        "hover a cell: its token, its " + (isText(cur.p) ? "token of text B" : "patch (pixel box)") +
        " and the interaction; click it to select both";
    });
    canvas.addEventListener("click", function (ev) {
      var rc = matrixCell(ev), p = cur.p;
      if (!rc) return;
      cur.sel = new Set([rc[0]]); cur.anchor = rc[0];
      if (isText(p)) {
        cur.selB = new Set([rc[1]]); cur.anchorB = rc[1];
      } else {
        cur.box = patchBoxes(p)[rc[1] - p.prefix].slice(); drawBox(cur.box);
      }
      renderAll();
      $("matrix-info").textContent = describeCell(p, rc[0], rc[1]);
    });
  }

  function toOriginal(ev) {
    var canvas = $("heatmap"), rect = canvas.getBoundingClientRect(), g = cur.p.geometry;
    var x = (ev.clientX - rect.left - canvas.clientLeft) / canvas.clientWidth * g.original_size[0];
    var y = (ev.clientY - rect.top - canvas.clientTop) / canvas.clientHeight * g.original_size[1];
    return [Math.max(0, Math.min(g.original_size[0], x)), Math.max(0, Math.min(g.original_size[1], y))];
  }
  function drawBox(b) {
    var el = $("box");
    if (!b) { el.hidden = true; return; }
    var canvas = $("heatmap"), g = cur.p.geometry;
    var kx = canvas.clientWidth / g.original_size[0], ky = canvas.clientHeight / g.original_size[1];
    el.hidden = false;
    el.style.left = (canvas.offsetLeft + canvas.clientLeft + b[0] * kx) + "px";
    el.style.top = (canvas.offsetTop + canvas.clientTop + b[1] * ky) + "px";
    el.style.width = Math.max(1, (b[2] - b[0]) * kx) + "px";
    el.style.height = Math.max(1, (b[3] - b[1]) * ky) + "px";
  }
  function normBox(a, b) {
    return [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
  }

  function wireStage() {
    var stage = $("stage");
    stage.addEventListener("pointerdown", function (ev) {
      if (!cur || !cur.base) return;
      ev.preventDefault();
      if (stage.setPointerCapture) { try { stage.setPointerCapture(ev.pointerId); } catch (e) { /* synthetic */ } }
      dragBox = toOriginal(ev);
      drawBox(null);
    });
    stage.addEventListener("pointermove", function (ev) {
      if (!dragBox) return;
      drawBox(normBox(dragBox, toOriginal(ev)));
    });
    function end(ev) {
      if (!dragBox) return;
      var b = normBox(dragBox, toOriginal(ev)), canvas = $("heatmap");
      dragBox = null;
      var k = canvas.clientWidth / cur.p.geometry.original_size[0];
      if ((b[2] - b[0]) * k < 4 || (b[3] - b[1]) * k < 4) {
        cur.box = null;   // a click: back to the whole image
      } else {
        cur.box = b;
      }
      drawBox(cur.box);
      renderTokens();
    }
    stage.addEventListener("pointerup", end);
    stage.addEventListener("pointercancel", function () { dragBox = null; drawBox(cur.box); });
    window.addEventListener("resize", function () { if (cur) drawBox(cur.box); });
  }

  function wireControls() {
    $("prev").addEventListener("click", function () { show(cur.i - 1); });
    $("next").addEventListener("click", function () { show(cur.i + 1); });
    $("positive-only").addEventListener("change", function (ev) {
      positiveOnly = ev.target.checked; renderAll();
    });
    $("show-special").addEventListener("change", function (ev) {
      showSpecial = ev.target.checked;
      $("tokens").classList.toggle("with-special", showSpecial);
      $("tokens-b").classList.toggle("with-special", showSpecial);
      renderAll();
    });
    $("opacity").addEventListener("input", function (ev) {
      setOpacity(+ev.target.value / 100);
    });
    $("greyscale").addEventListener("change", function (ev) {
      greyscale = ev.target.checked; renderImage();
    });
    $("show-boxes").addEventListener("change", function (ev) {
      showBoxes = ev.target.checked; renderImage();
    });
    $("matrix-view").addEventListener("change", function (ev) { setMatrixView(ev.target.checked); });
    $("whole-caption").addEventListener("click", function () {
      cur.sel = new Set(contentTokens(cur.p)); cur.anchor = null; renderAll();
    });
    $("clear-box").addEventListener("click", function () {
      cur.box = null; cur.selB = null; drawBox(null); renderAll();
    });
    document.addEventListener("keydown", function (ev) {
      if (ev.target && /^(INPUT|TEXTAREA|SELECT)$/.test(ev.target.tagName)) return;
      if (ev.key === "ArrowLeft") show(cur.i - 1);
      else if (ev.key === "ArrowRight") show(cur.i + 1);
      else if (ev.key === "Escape") { cur.box = null; cur.selB = null; drawBox(null); renderAll(); }
    });
  }
  function setOpacity(a) {
    ALPHA = Math.max(0, Math.min(1, a));
    $("opacity").value = String(Math.round(ALPHA * 100));
    $("opacity-value").textContent = Math.round(ALPHA * 100) + " %";
    if (cur && !isText(cur.p)) renderImage();
  }
  function setMatrixView(on) {
    matrixView = !!on;
    $("matrix-view").checked = matrixView;
    $("matrix-panel").hidden = !matrixView;
    if (matrixView) renderMatrix();
  }

  // ---- a small API for tests and the console ---------------------------------------------------
  window.dualexReport = {
    // the page's one colour map, number format and matrix decoder, for its add-on panels
    util: { colour: colour, css: css, fmt: fmt, decode: decode },
    count: function () { return DATA.pairs.length; },
    show: show,
    current: function () { return cur ? cur.i : -1; },
    selectTokens: function (idx) { cur.sel = new Set(idx); cur.anchor = idx[0]; renderAll(); },
    setBox: function (b) { cur.box = b; drawBox(b); renderTokens(); },
    setPositiveOnly: function (on) { $("positive-only").checked = !!on; positiveOnly = !!on; renderAll(); },
    patchValues: function () { return Array.from(cur.patchValues); },
    tokenScores: function () { return Array.from(cur.tokenScores); },
    boxColumns: function () { return cur.boxColumns.slice(); },
    selection: function () { return Array.from(cur.sel).sort(function (a, b) { return a - b; }); },
    kind: function () { return cur.p.kind; },
    selectTokensB: function (idx) { cur.selB = new Set(idx); cur.anchorB = idx[0]; renderAll(); },
    bannerText: function () { return $("weights-banner").hidden ? "" : $("weights-banner").textContent; },
    setOpacity: setOpacity,
    setGreyscale: function (on) { $("greyscale").checked = !!on; greyscale = !!on; renderImage(); },
    setMatrixView: setMatrixView,
    pixel: function (x, y) {
      return Array.from($("heatmap").getContext("2d").getImageData(x, y, 1, 1).data);
    },
    matrixSize: function () { return [$("matrix").width, $("matrix").height]; },
  };

  buildNav();
  wireTokens();
  wireTokensB();
  wireMatrix();
  wireStage();
  wireControls();
  var m = /^#pair-(\d+)$/.exec(location.hash);
  show(m ? +m[1] - 1 : 0);
})();

/* qdeck load report: draws the charts the page's JSON (script#qdeck-data) describes, with uPlot.
   Every text it shows goes through uPlot's textContent (never innerHTML); the data was sanitised by qdeck. */
(function () {
  "use strict";
  var HEIGHT = 280;
  var state = {charts: 0, drawn: 0, failed: []};
  window.qdeckReport = state;
  var doc = JSON.parse(document.getElementById("qdeck-data").textContent);
  var plots = [];

  // The x of a spectrum point is 1/(1-q): 10 is the 90th percentile, 1000 the 99.9th.
  function pctLabel(x, extra) {
    if (x == null) return "--";
    if (x <= 1) return "0%";
    var digits = Math.min(8, Math.max(0, Math.ceil(Math.log10(x) - 1e-9) - 2) + extra);
    return (100 * (1 - 1 / x)).toFixed(digits) + "%";
  }

  function decades(u, axisIdx, min, max) {
    var out = [];
    for (var v = 1; v <= max * 1.0001; v *= 10) {
      if (v >= min * 0.9999) out.push(v);
    }
    return out;
  }

  function num(v, unit) {
    if (v == null) return "--";
    return String(+(+v).toPrecision(5)) + (unit ? " " + unit : "");
  }

  function linear(u, min, max) {
    return [0, max != null && max > 0 ? max * 1.08 : 1];
  }

  function options(spec, width) {
    var x = spec.x, y = spec.y;
    var scales = {x: {time: false}};
    var axes = [{label: x.label}, {label: y.label, size: 64}];
    var xseries = {label: x.label};
    if (x.kind === "pct") {
      scales.x.distr = 3;
      scales.x.log = 10;
      scales.x.range = function (u, min, max) {
        return [1, Math.pow(10, Math.max(1, Math.ceil(Math.log10(max || 10) - 1e-9)))];
      };
      axes[0].splits = decades;
      axes[0].values = function (u, splits) { return splits.map(function (v) { return pctLabel(v, 0); }); };
      xseries.value = function (u, v) { return pctLabel(v, 2); };
    } else if (x.kind === "cat") {
      scales.x.range = function () { return [-0.5, x.cats.length - 0.5]; };
      axes[0].splits = function () { return x.cats.map(function (c, i) { return i; }); };
      axes[0].values = function (u, splits) {
        return splits.map(function (i) { return x.cats[i] === undefined ? "" : x.cats[i]; });
      };
      xseries.value = function (u, v) { return v == null || x.cats[v] === undefined ? "--" : x.cats[v]; };
    } else {
      xseries.value = function (u, v) { return num(v, x.unit); };
    }
    if (y.log) scales.y = {distr: 3, log: 10};
    else if (y.min != null && y.max != null) scales.y = {range: function () { return [y.min, y.max]; }};
    else scales.y = {range: linear};
    if (spec.y2) {
      scales.y2 = {range: linear};
      axes.push({scale: "y2", side: 1, label: spec.y2.label, size: 56, grid: {show: false}});
    }
    var series = [xseries];
    var bars = spec.series.filter(function (s) { return !s.line; }).length;
    spec.series.forEach(function (s) {
      var o = {label: s.label, stroke: s.color, width: s.dash ? 1.5 : 2, scale: s.scale || "y",
               spanGaps: !!spec.span_gaps, value: function (u, v) { return num(v, s.unit); }};
      if (s.dash) o.dash = [7, 4];
      if (s.guide) o.points = {show: false};  // a line drawn for reference (achieved = offered): no markers
      if (s.level != null) {  // a level (an SLO, 0): its values set the range, the overlay draws it edge to edge
        o.paths = function () { return null; };
        o.points = {show: false};
      }
      if (s.points) {  // points only: one marker per value, no line
        o.paths = function () { return null; };
        o.points = {show: true, size: 10, width: 1.5, stroke: s.color, fill: s.color + "99"};
      }
      if (spec.kind === "bars" && !s.line) {
        o.paths = uPlot.paths.bars({size: [bars > 1 ? 0.4 : 0.7, 90], align: s.align || 0});
        o.fill = s.color + (s.dash ? "66" : "cc");
        o.points = {show: false};
      }
      series.push(o);
    });
    var opts = {width: width, height: HEIGHT, scales: scales, axes: axes, series: series, legend: {live: true},
                cursor: {drag: {x: true, y: false}}};
    var levels = spec.series.some(function (s) { return s.level != null; });
    if (levels || (spec.marks && spec.marks.length) || (spec.whiskers && spec.whiskers.length)) {
      opts.hooks = {draw: [overlay(spec)]};
    }
    return opts;
  }

  // Drawn over the plot after each redraw: each level (a dashed horizontal line across the plot, while its series is
  // shown), each whisker (a series' confidence interval at each x: low to high, in its colour, while the series is
  // shown) and each mark (a dashed vertical line at x with its label, on the canvas).
  function overlay(spec) {
    return function (u) {
      var ctx = u.ctx, px = uPlot.pxRatio, box = u.bbox, xs = u.data[0], shown = 0;
      ctx.save();
      ctx.beginPath();
      ctx.rect(box.left, box.top, box.width, box.height);
      ctx.clip();
      ctx.lineWidth = 1.5 * px;
      spec.series.forEach(function (s, i) {
        if (s.level == null || !u.series[i + 1].show) return;
        var y = u.valToPos(s.level, "y", true);
        ctx.strokeStyle = s.color;
        ctx.setLineDash([7 * px, 4 * px]);
        ctx.beginPath();
        ctx.moveTo(box.left, y); ctx.lineTo(box.left + box.width, y);
        ctx.stroke();
      });
      ctx.setLineDash([]);
      (spec.whiskers || []).forEach(function (w) {
        if (!u.series[w.series] || !u.series[w.series].show) return;
        ctx.strokeStyle = spec.series[w.series - 1].color;
        ctx.beginPath();
        for (var i = 0; i < xs.length; i++) {
          if (w.low[i] == null || w.high[i] == null) continue;
          var x = u.valToPos(xs[i], "x", true), lo = u.valToPos(w.low[i], "y", true);
          var hi = u.valToPos(w.high[i], "y", true), cap = 5 * px;
          ctx.moveTo(x, lo); ctx.lineTo(x, hi);
          ctx.moveTo(x - cap, lo); ctx.lineTo(x + cap, lo);
          ctx.moveTo(x - cap, hi); ctx.lineTo(x + cap, hi);
        }
        ctx.stroke();
      });
      ctx.font = (12 * px) + "px system-ui, sans-serif";
      (spec.marks || []).forEach(function (m, k) {
        var x = u.valToPos(m.x, "x", true);
        if (!(x >= box.left && x <= box.left + box.width)) return;  // zoomed out of view
        shown += 1;
        ctx.strokeStyle = ctx.fillStyle = m.color;
        ctx.setLineDash([5 * px, 4 * px]);
        ctx.beginPath();
        ctx.moveTo(x, box.top); ctx.lineTo(x, box.top + box.height);
        ctx.stroke();
        ctx.setLineDash([]);
        ctx.textAlign = m.side === "left" ? "right" : "left";
        ctx.fillText(m.label, x + (m.side === "left" ? -5 : 5) * px, box.top + (14 + 16 * k) * px);
      });
      ctx.restore();
      u.root.parentNode.setAttribute("data-marks", String(shown));
    };
  }

  function widthOf(el) {
    return Math.max(320, Math.floor(el.clientWidth || 800));
  }

  function draw(spec) {
    var el = document.getElementById("chart-" + spec.id);
    state.charts += 1;
    try {
      if (!el) throw new Error("no container for the chart");
      var plot = new uPlot(options(spec, widthOf(el)), spec.data, el);
      plots.push({plot: plot, el: el});
      state.drawn += 1;
    } catch (err) {
      state.failed.push(spec.id + ": " + err);
      if (el) {
        var p = document.createElement("p");
        p.className = "empty";
        p.textContent = "this chart could not be drawn: " + err;
        el.appendChild(p);
      }
      console.error("qdeck report: chart " + spec.id + ": " + err);
    }
  }

  doc.charts.forEach(draw);
  window.addEventListener("resize", function () {
    plots.forEach(function (p) { p.plot.setSize({width: widthOf(p.el), height: HEIGHT}); });
  });
  document.documentElement.setAttribute("data-charts-drawn", String(state.drawn));
})();

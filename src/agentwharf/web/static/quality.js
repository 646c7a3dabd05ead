// The quality panel's charts: one per scorer (or feedback), a line per served version, redrawn
// from quality.json every 10 seconds. Minutes without results leave a gap, not a zero.
(function () {
  var section = document.getElementById("quality");
  if (!section || !section.querySelector("svg[data-name]")) return;
  var NS = "http://www.w3.org/2000/svg";
  var CLASSES = ["", "second", "third"];
  function valueOf(point, svg) {
    var group = point[svg.dataset.kind === "scorer" ? "scorers" : "feedback"] || {};
    var counts = group[svg.dataset.name];
    return counts ? counts[svg.dataset.figure] : null;
  }
  function segments(points, svg, max) {
    var runs = [], run = [];
    points.forEach(function (p, n) {
      var v = valueOf(p, svg);
      if (v === null || v === undefined) { if (run.length) runs.push(run); run = []; return; }
      var x = points.length > 1 ? (n / (points.length - 1)) * 300 : 0;
      run.push(x.toFixed(1) + "," + (95 - (v / max) * 90).toFixed(1));
    });
    if (run.length) runs.push(run);
    return runs;
  }
  function draw(svg, versions) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var max = svg.dataset.figure === "pass_rate" ? 1 : 0;
    versions.forEach(function (v) { v.points.forEach(function (p) { var x = valueOf(p, svg); if (x > max) max = x; }); });
    if (max === 0) max = 1;
    var latest = [];
    versions.forEach(function (v, i) {
      var cls = CLASSES[i % CLASSES.length];
      segments(v.points, svg, max).forEach(function (run) {
        var line = document.createElementNS(NS, "polyline");
        line.setAttribute("points", run.join(" "));
        if (cls) line.setAttribute("class", cls);
        svg.appendChild(line);
        // A dot per minute, so a lone minute (the first results) shows too.
        run.forEach(function (xy) {
          var dot = document.createElementNS(NS, "circle");
          dot.setAttribute("cx", xy.split(",")[0]); dot.setAttribute("cy", xy.split(",")[1]); dot.setAttribute("r", "2.5");
          if (cls) dot.setAttribute("class", cls);
          svg.appendChild(dot);
        });
      });
      var last = v.points.map(function (p) { return valueOf(p, svg); }).filter(function (x) { return x !== null && x !== undefined; }).pop();
      if (last !== undefined) latest.push((v.served_entity || "(no version)") + " " + fmt(last, svg.dataset.figure));
    });
    var label = document.createElementNS(NS, "text");
    label.setAttribute("x", "4"); label.setAttribute("y", "12"); label.setAttribute("font-size", "10");
    label.textContent = "max " + fmt(max, svg.dataset.figure);
    svg.appendChild(label);
    var caption = document.getElementById(svg.getAttribute("aria-labelledby").split(" ")[1]);
    if (caption) caption.textContent = latest.length ? "Latest: " + latest.join(", ") + "." : "No result in the last hour.";
  }
  function fmt(v, figure) {
    return figure === "pass_rate" ? (v * 100).toFixed(1) + "%" : (Math.round(v * 100) / 100).toString();
  }
  function refresh() {
    fetch(section.dataset.source, {credentials: "same-origin"}).then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data) return;
        section.querySelectorAll("svg[data-name]").forEach(function (svg) { draw(svg, data.versions); });
      }).catch(function () {});
  }
  refresh();
  setInterval(refresh, 10000);
})();

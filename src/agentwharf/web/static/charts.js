// The endpoint page's four charts, redrawn from metrics.json every 5 seconds (SVG polylines).
(function () {
  var section = document.getElementById("charts");
  if (!section) return;
  var NS = "http://www.w3.org/2000/svg";
  function fmt(v, key) {
    if (v === null || v === undefined) return "no requests";
    if (key === "error_rate") return (v * 100).toFixed(1) + "%";
    return (Math.round(v * 100) / 100).toString();
  }
  function draw(svg, points, keys) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var max = 0;
    keys.forEach(function (k) { points.forEach(function (p) { if (p[k] !== null && p[k] > max) max = p[k]; }); });
    if (max === 0) max = 1;
    keys.forEach(function (k, i) {
      var line = document.createElementNS(NS, "polyline");
      var coords = points.map(function (p, n) {
        var x = points.length > 1 ? (n / (points.length - 1)) * 300 : 0;
        var y = 95 - ((p[k] || 0) / max) * 90;
        return x.toFixed(1) + "," + y.toFixed(1);
      });
      line.setAttribute("points", coords.join(" "));
      if (i > 0) line.setAttribute("class", "second");
      svg.appendChild(line);
    });
    var label = document.createElementNS(NS, "text");
    label.setAttribute("x", "4"); label.setAttribute("y", "12"); label.setAttribute("font-size", "10");
    label.textContent = "max " + fmt(max, keys[0]);
    svg.appendChild(label);
  }
  function summary(points, keys) {
    var last = points[points.length - 1] || {};
    var total = points.reduce(function (s, p) { return s + p.requests; }, 0);
    return "Now: " + keys.map(function (k) { return k.replace("_ms", "") + " " + fmt(last[k], k); }).join(", ") +
      ". Requests in the last hour: " + total + ".";
  }
  function refresh() {
    fetch(section.dataset.source, {credentials: "same-origin"}).then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data) return;
        section.querySelectorAll("svg[data-series]").forEach(function (svg) {
          var keys = svg.dataset.series.split(",");
          draw(svg, data.points, keys);
          var caption = document.getElementById(svg.getAttribute("aria-labelledby").split(" ")[1]);
          if (caption) caption.textContent = summary(data.points, keys);
        });
        document.getElementById("in-flight-now").textContent = "(" + data.in_flight_now + " in flight now)";
      }).catch(function () {});
  }
  refresh();
  setInterval(refresh, 5000);
})();

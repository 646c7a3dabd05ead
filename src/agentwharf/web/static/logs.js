// Keep the worker log tail current while the page is open.
(function () {
  var pre = document.getElementById("log");
  if (!pre) return;
  function refresh() {
    fetch(pre.dataset.source, {credentials: "same-origin"}).then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        if (text === null) return;
        var atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.textContent = text;
        if (atEnd) pre.scrollTop = pre.scrollHeight;
      }).catch(function () {});
  }
  pre.scrollTop = pre.scrollHeight;
  setInterval(refresh, 3000);
})();

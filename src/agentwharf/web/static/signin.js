// Return to the very page that asked for sign-in, its #fragment included (MLflow's UI routes
// live there and are never sent to the server).
(function () {
  var next = document.getElementById("next");
  if (next && window.location.pathname !== "/signin") {
    next.value = window.location.pathname + window.location.search + window.location.hash;
  }
})();

// The progress page's counts kept current while an edition is sent, without reloading the page (a reload would
// move a screen reader back to the top).  Optional: without it the page's Refresh link shows the latest counts.
(function () {
  "use strict";
  var region = document.querySelector("[data-progress-url]");
  if (!region) { return; }
  var state = document.getElementById("state");
  var refresh = document.getElementById("refresh");
  var every = 1000;
  if (refresh) { refresh.hidden = true; }
  function show(data) {
    Object.keys(data.counts).forEach(function (name) {
      var cell = region.querySelector('td[data-status="' + name + '"]');
      if (cell && cell.textContent !== String(data.counts[name])) { cell.textContent = String(data.counts[name]); }
    });
    if (state.textContent !== data.message) { state.textContent = data.message; }  // announced: role="status"
  }
  function poll() {
    fetch(region.dataset.progressUrl, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();  // a session that ended answers with the sign-in page: not JSON, so we stop
      })
      .then(function (data) {
        show(data);
        if (data.running) { setTimeout(poll, every); } else if (refresh) { refresh.remove(); }
      })
      .catch(function () { if (refresh) { refresh.hidden = false; } });
  }
  setTimeout(poll, every);
})();

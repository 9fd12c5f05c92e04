// marker-ls-plugin: a run page shows the run's state as the API gives it: read at load, polled while it is active.
(function () {
  "use strict";
  var ACTIVE = ["queued", "running"];
  // FineTuneRun.Status labels, as the server renders them (the API sends the raw values).
  var STATUS_LABELS = { queued: "Queued", running: "Running", succeeded: "Succeeded", failed: "Failed",
                        cancelled: "Cancelled" };

  function update(root, run) {
    root.querySelectorAll("[data-field]").forEach(function (el) {
      var value = run[el.dataset.field];
      if (value === undefined || value === null) return;
      if (el.tagName === "PROGRESS") el.value = value;
      else if (el.dataset.field === "status") {
        el.textContent = STATUS_LABELS[value] || value;
        el.className = el.className.replace(/\bmls-status-\S+/, "mls-status-" + value);
      }
      else el.textContent = el.dataset.field === "epoch" ? Number(value).toFixed(2) : value;
    });
  }

  // rendered: the status the server rendered. A run that ended since then reloads once, for its final page
  // (result, error, traceback); until the reload shows, its Cancel form is gone.
  function poll(root, rendered) {
    fetch(root.dataset.runApi, { credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);  // no run state in an error: try again later
        return response.json();
      })
      .then(function (run) {
        update(root, run);
        if (ACTIVE.indexOf(run.status) >= 0) return setTimeout(function () { poll(root, rendered); }, 2000);
        root.querySelectorAll('form[action$="/cancel/"]').forEach(function (form) { form.hidden = true; });
        if (run.status !== rendered) window.location.reload();
      })
      .catch(function () { setTimeout(function () { poll(root, rendered); }, 5000); });
  }

  function start() {
    // Label Studio's SPA copies the page content in after load; wait for it.
    var root = document.querySelector(".app-wrapper .mls-run");
    if (!root) return setTimeout(start, 200);
    var status = root.querySelector("[data-field=status]").className.match(/\bmls-status-(\S+)/);
    poll(root, status && status[1]);
  }

  var template = document.querySelector("template#main-content");
  if (template && template.content.querySelector(".mls-run")) start();
})();

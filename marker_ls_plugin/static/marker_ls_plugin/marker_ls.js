// marker-ls-plugin: live refresh of a run page while the run is queued or running.
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

  function poll(root) {
    fetch(root.dataset.runApi, { credentials: "same-origin" })
      .then(function (response) { return response.json(); })
      .then(function (run) {
        update(root, run);
        if (ACTIVE.indexOf(run.status) >= 0) setTimeout(function () { poll(root); }, 2000);
        else window.location.reload();
      })
      .catch(function () { setTimeout(function () { poll(root); }, 5000); });
  }

  function start() {
    // Label Studio's SPA copies the page content in after load; wait for it.
    var root = document.querySelector(".app-wrapper .mls-run");
    if (!root) return setTimeout(start, 200);
    var status = root.querySelector("[data-field=status]").textContent.trim().toLowerCase();
    if (ACTIVE.indexOf(status) >= 0) setTimeout(function () { poll(root); }, 2000);
  }

  var template = document.querySelector("template#main-content");
  if (template && template.content.querySelector(".mls-run")) start();
})();

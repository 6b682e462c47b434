// swiftgate console: a little progressive enhancement. Every page works
// without it; with it, parts of pages refresh themselves, dangerous
// actions ask first, and jobs show their progress.
//
//   data-live="URL" data-interval="5000"   innerHTML <- GET URL, repeatedly
//   data-confirm="text"                    on a form, submit button or link
//   data-job="ID" [data-done-reload]       polls /api/v1/jobs/ID
"use strict";
(function () {
  // ---- live areas ---------------------------------------------------------

  var MIN_INTERVAL = 1000;

  function fetchOk(url, accept) {
    // "manual": an expired session redirects to the login page, which must
    // not be pasted into the dashboard; it counts as a failure instead.
    return fetch(url, {
      credentials: "same-origin",
      redirect: "manual",
      cache: "no-store",
      headers: { Accept: accept, "X-Requested-With": "fetch" },
    }).then(function (r) {
      if (!r.ok) throw new Error(url + ": " + (r.status || "redirected"));
      return r;
    });
  }

  function refresh(el) {
    if (el._busy) return;
    el._busy = true;
    fetchOk(el.getAttribute("data-live"), "text/html")
      .then(function (r) { return r.text(); })
      .then(function (html) {
        el.innerHTML = html;
        el.classList.remove("stale");
        el.removeAttribute("title");
        scanJobs(el);
      })
      .catch(function (e) {
        // Keep what is shown, say it is old.
        el.classList.add("stale");
        el.setAttribute("title", String(e.message || e));
      })
      .then(function () { el._busy = false; });
  }

  var live = [];

  function startLive(el) {
    if (el._live) return;
    el._live = true;
    var every = parseInt(el.getAttribute("data-interval"), 10);
    if (!(every >= MIN_INTERVAL)) every = 5000;
    live.push(el);
    el._timer = setInterval(function () {
      if (!document.hidden) refresh(el);
    }, every);
  }

  document.addEventListener("visibilitychange", function () {
    // Back on the tab: bring everything up to date at once.
    if (!document.hidden) live.forEach(refresh);
  });

  // ---- confirmations ------------------------------------------------------

  document.addEventListener("submit", function (e) {
    var f = e.target;
    var s = e.submitter;
    var text = (s && s.getAttribute("data-confirm")) || f.getAttribute("data-confirm");
    if (text && !window.confirm(text)) {
      e.preventDefault();
      e.stopImmediatePropagation();
    }
  }, true);

  document.addEventListener("click", function (e) {
    var el = e.target.closest ? e.target.closest("[data-confirm]") : null;
    if (!el || el.tagName === "FORM") return;
    // Submit buttons are asked in the submit handler (once, also for Enter).
    if (el.form && el.type === "submit") return;
    if (!window.confirm(el.getAttribute("data-confirm"))) {
      e.preventDefault();
      e.stopImmediatePropagation();
    }
  }, true);

  // ---- job progress -------------------------------------------------------

  function jobText(j) {
    var parts = [];
    if (j.phase) parts.push(j.phase);
    if (j.total > 0) {
      parts.push(Math.floor((100 * j.done) / j.total) + " % (" + j.done + " / " + j.total + ")");
    } else if (j.done > 0) {
      parts.push(String(j.done));
    }
    if (j.state !== "running" && j.message) parts.push(j.message);
    return parts.join(" · ");
  }

  function showJob(el, j) {
    var bar = el.querySelector(".progress");
    var fill = bar && bar.querySelector("span");
    var text = el.querySelector(".job-text");
    el.setAttribute("data-state", j.state);
    if (bar && fill) {
      bar.classList.toggle("indeterminate", j.state === "running" && !(j.total > 0));
      bar.classList.toggle("done", j.state === "succeeded");
      bar.classList.toggle("failed", j.state === "failed");
      var pct = j.total > 0 ? Math.min(100, (100 * j.done) / j.total) : 0;
      if (j.state !== "running") pct = 100;
      fill.style.width = pct.toFixed(1) + "%";
      bar.setAttribute("role", "progressbar");
      bar.setAttribute("aria-valuenow", String(Math.round(pct)));
    }
    if (text) text.textContent = jobText(j);
  }

  function pollJob(el) {
    if (el._job) return;
    el._job = true;
    var id = el.getAttribute("data-job");
    var url = "/api/v1/jobs/" + encodeURIComponent(id);
    var tick = function () {
      if (!el.isConnected) return; // replaced by a live refresh
      if (document.hidden) { setTimeout(tick, 1500); return; }
      fetchOk(url, "application/json")
        .then(function (r) { return r.json(); })
        .then(function (body) {
          var j = body && body.job ? body.job : body;
          el.classList.remove("stale");
          showJob(el, j);
          if (j.state === "running") {
            setTimeout(tick, 1000);
          } else if (el.hasAttribute("data-done-reload")) {
            setTimeout(function () { window.location.reload(); }, 800);
          }
        })
        .catch(function () {
          el.classList.add("stale");
          setTimeout(tick, 3000);
        });
    };
    tick();
  }

  function scanJobs(root) {
    root.querySelectorAll("[data-job]").forEach(pollJob);
  }

  function init() {
    document.querySelectorAll("[data-live]").forEach(startLive);
    scanJobs(document);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();

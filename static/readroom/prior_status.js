/* The reading screen's priors line (docs/priors.md): when the live channel says the retrieval of
   this study's priors moved on ("study.priors", re-dispatched by live.js as "readroom:event"), and
   whenever the socket (re)opens, the line (and the priors' reports) is asked for again through its fragment — the event
   itself carries no text, so what is shown always passed the page's own permission check. */
(function () {
  "use strict";

  function node() {
    return document.getElementById("prior-status");
  }

  function refresh() {
    const current = node();
    if (!current) return;
    fetch(current.dataset.url, {
      credentials: "same-origin",
      headers: { Accept: "text/html", "X-ReadRoom-Poll": "1" }, // not the user's activity
    })
      .then((response) => (response.ok ? response.text() : null))
      .then((html) => {
        if (!html) return;
        const page = new DOMParser().parseFromString(html, "text/html");
        // the line, and the priors' own reports from the PACS (shown once a prior is complete)
        for (const id of ["prior-status", "prior-documents"]) {
          const fresh = page.getElementById(id);
          const shown = document.getElementById(id);
          if (fresh && shown) shown.replaceWith(fresh);
        }
      })
      .catch(() => {});
  }

  document.addEventListener("readroom:event", (event) => {
    const current = node();
    const detail = event.detail || {};
    if (!current || detail.type !== "study.priors" || !detail.study) return;
    if (String(detail.study.id) === current.dataset.studyId) refresh();
  });
  document.addEventListener("readroom:socket-open", refresh);
  document.addEventListener("readroom:unlocked", refresh); // the lock held its events back
})();

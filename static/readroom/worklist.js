/* The live worklist (templates/worklist/): the socket, the ticking SLA countdowns, the code-stroke
   alert and the keyboard (DESIGN.md §8).

   Push, not pull (docs/worklist-fanout.md): each study event on the socket carries the change to
   *this user's* list — the row as the server renders it for them, or its removal — and whether the
   study was on the list before, so the page inserts it in reading order, tests it against its own
   filters and keeps its counts without asking the server. The server only ever sends a user rows
   of studies they may read now. The page re-fetches its rows partial only to resync: when the
   socket (re)opens, periodically (data-resync-seconds: soon after a shift boundary, else every few
   minutes), and when its table empties (the empty state explains why). */
(function () {
  "use strict";

  const root = document.querySelector('[data-testid="worklist"]');
  if (!root) return;
  const alertsOn = root.dataset.alerts === "on";
  const statusNode = document.getElementById("live-status");
  const alertsNode = document.getElementById("stroke-alerts");
  const help = document.getElementById("worklist-help");
  const csrfToken = JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || "";

  // --- rows: apply pushed changes; re-fetch the partial only to resync ------------------------------

  const REFRESH_DEBOUNCE_MS = 150;
  let refreshTimer = null;
  let resyncTimer = null;
  let selectedId = null;
  let socketLive = false;

  function live() {
    return document.getElementById("worklist-live");
  }

  function rows() {
    return Array.from(document.querySelectorAll("#worklist-live .wl-row"));
  }

  function refresh() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refreshNow, REFRESH_DEBOUNCE_MS);
  }

  let fetching = false;
  let missed = false; // an event came while a fetch was on its way: the answer may predate it

  function refreshNow() {
    if (fetching) {
      missed = true;
      return Promise.resolve();
    }
    fetching = true;
    missed = false;
    const url = live().dataset.rowsUrl;
    // "X-ReadRoom-Poll": a refresh the socket asked for is not the user's activity (idle sign-out)
    return fetch(url, { credentials: "same-origin", headers: { "HX-Request": "true", "X-ReadRoom-Poll": "1" } })
      .then((response) => {
        if (response.redirected || response.status === 401 || response.status === 403) {
          setStatus("offline", "Signed out — reload the page to sign in again");
          return null;
        }
        return response.ok ? response.text() : null;
      })
      .then((html) => {
        if (html === null) return;
        const focusInRows = live().contains(document.activeElement);
        const typed = typedFields();
        live().outerHTML = html;
        typedFieldsRestore(typed);
        afterRowsChanged(focusInRows && !typed.focused);
        scheduleResync();
      })
      .catch(() => {}) // offline: the reconnect will resync
      .finally(() => {
        fetching = false;
        if (missed) refreshNow();
      });
  }

  // What the user is typing in the live region (a manual match's reason) survives a resync: the
  // socket's first open replaces the region, often while operations are already typing.
  function fieldKey(field) {
    return (field.form ? field.form.getAttribute("action") : "") + "|" + field.name;
  }

  function typedFields() {
    const values = new Map();
    let focused = null;
    live()
      .querySelectorAll("form input[type=text], form textarea")
      .forEach((field) => {
        if (field.value) values.set(fieldKey(field), field.value);
        if (field === document.activeElement) {
          focused = { key: fieldKey(field), start: field.selectionStart, end: field.selectionEnd };
        }
      });
    return { values, focused };
  }

  function typedFieldsRestore(typed) {
    live()
      .querySelectorAll("form input[type=text], form textarea")
      .forEach((field) => {
        const key = fieldKey(field);
        if (!field.value && typed.values.has(key)) field.value = typed.values.get(key);
        if (typed.focused && typed.focused.key === key) {
          field.focus();
          field.setSelectionRange(typed.focused.start, typed.focused.end);
        }
      });
  }

  function scheduleResync() {
    // What no event announces — a shift ending, a licence lapsing at midnight — the page learns by
    // resyncing: at the next boundary the server knows of, else every few minutes, with jitter so
    // the readers' pages do not all ask at once.
    clearTimeout(resyncTimer);
    const seconds = Number(live().dataset.resyncSeconds || 300);
    resyncTimer = setTimeout(refreshNow, (seconds + Math.random() * Math.min(30, seconds / 5)) * 1000);
  }

  function matches(facts) {
    // the page's own filters, as worklist.selectors._filtered applies them on the server
    const f = live().dataset;
    if (!facts) return false;
    if (f.filterFacility && facts.facility !== f.filterFacility) return false;
    if (f.filterModality && !(facts.modalities || "").includes(f.filterModality.toUpperCase())) return false;
    if (f.filterSubspecialty && facts.subspecialty !== f.filterSubspecialty) return false;
    if (f.filterPriority && facts.priority !== f.filterPriority.toUpperCase()) return false;
    return true;
  }

  // Whether the transaction an event announces had committed when the page's last resync counted
  // its list: the partial's data-snapshot is PostgreSQL's snapshot of that count ("xmin:xmax:xip,…",
  // radiology/visibility.py), and a transaction is seen by it if it is below xmin, or below xmax and
  // not listed as in progress. Without both (SQLite, an empty list) nothing is taken as seen.
  function seenByResync(xid) {
    const snapshot = live().dataset.snapshot;
    if (!snapshot || typeof xid !== "string" || !/^\d+$/.test(xid)) return false;
    const [xmin, xmax, inProgress] = snapshot.split(":");
    const id = BigInt(xid);
    if (id < BigInt(xmin)) return true;
    if (id >= BigInt(xmax)) return false;
    return !(inProgress || "").split(",").filter(Boolean).some((x) => BigInt(x) === id);
  }

  function countAdd(priority, delta) {
    const node = live().querySelector('.prio-count[data-priority="' + CSS.escape(priority) + '"] b');
    if (node) node.textContent = String(Math.max(0, Number(node.textContent) + delta));
  }

  function rowPlace(change) {
    const holder = document.createElement("tbody");
    holder.innerHTML = change.html.trim();
    const row = holder.firstElementChild;
    const list = rows();
    const size = Number(live().dataset.pageSize || 100);
    const page = Number(live().dataset.page || 1);
    // the rows are in reading order; data-sort is that order as one comparable string
    if (page > 1 && list.length && change.sort < list[0].dataset.sort) return; // an earlier page's
    const next = list.find((r) => r.dataset.sort > change.sort);
    if (!next && list.length >= size) return; // after this page's last row: a later page's
    const table = live().querySelector(".wl-table");
    table.querySelector("tbody").insertBefore(row, next || null);
    table.hidden = false;
    live()
      .querySelectorAll(".wl-empty")
      .forEach((node) => node.remove());
    const all = rows();
    if (all.length > size) all[all.length - 1].remove(); // the last row moves on to the next page
  }

  function applyRow(event) {
    const change = event.row;
    const was = event.was || {};
    const id = String(event.study.id);
    const listed = change.op === "upsert" && matches(change.facts);
    const existing = rows().find((r) => r.dataset.studyId === id);
    // A row this page shows is in its counts under the priority it shows. The page may already hold
    // this very change: a resync answered between the change's commit and its event. So the count
    // follows the row shown. A study this page does not show (on a later page, or gone) is counted
    // by the event's "was", unless the resync's counts were read after this change's commit
    // (its snapshot sees the event's transaction): they hold it already.
    const settled = !existing && seenByResync(event.xid);
    if (existing) countAdd(existing.dataset.priority, -1);
    else if (!settled && was.listed && matches(was.facts)) countAdd(was.facts.priority, -1);
    if (listed && !settled) countAdd(change.facts.priority, 1);
    const hadRows = rows().length > 0;
    if (existing) existing.remove();
    if (listed) rowPlace(change);
    root.dataset.applied = String(Number(root.dataset.applied || 0) + 1); // for tests and benchmarks
    if (hadRows && !rows().length) {
      refreshNow(); // the page emptied: let the server say why (and bring the next page's rows)
      return;
    }
    afterRowsChanged(false);
  }

  function afterRowsChanged(refocus) {
    tick();
    const list = rows();
    const again = list.find((row) => row.dataset.studyId === selectedId) || list[0];
    select(again, refocus);
    if (alertsOn) {
      // the server's record of the strokes this reader acknowledged (on the lock, in another window):
      // they raise no banner here, and one already raised goes
      (live().dataset.acknowledgedStrokes || "").split(" ").filter(Boolean).forEach(acknowledgedElsewhere);
      list.forEach(alertFromRow);
    }
  }

  // --- selection and keyboard -------------------------------------------------------------------

  function select(row, focus) {
    rows().forEach((r) => r.setAttribute("aria-current", "false"));
    if (!row) {
      selectedId = null;
      return;
    }
    row.setAttribute("aria-current", "true");
    selectedId = row.dataset.studyId;
    if (focus) row.scrollIntoView({ block: "nearest" });
  }

  function selected() {
    return rows().find((row) => row.dataset.studyId === selectedId) || null;
  }

  function move(delta) {
    const list = rows();
    if (!list.length) return;
    const index = list.indexOf(selected());
    select(list[Math.max(0, Math.min(list.length - 1, index + delta))], true);
  }

  function rowMessage(row, text) {
    const node = row && row.querySelector('[data-testid="row-message"]');
    if (node) node.textContent = text;
    // and above the list: the row itself may leave with the next refresh (e.g. the shift ended)
    const notice = document.getElementById("worklist-notice");
    const accession = row && row.dataset.accession ? row.dataset.accession + ": " : "";
    if (notice) notice.textContent = text ? accession + text : "";
  }

  // Claim and release through the REST API, which checks eligibility and answers 403/409 with why.
  function act(row, action) {
    if (!row || !row.dataset[action + "Url"]) return Promise.resolve();
    rowMessage(row, "");
    return fetch(row.dataset[action + "Url"], {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrfToken, Accept: "application/json" },
    })
      .then((response) =>
        response
          .json()
          .catch(() => ({}))
          .then((body) => ({ ok: response.ok, status: response.status, body }))
      )
      .then(({ ok, status, body }) => {
        if (ok) {
          // the change comes back on the socket like everyone else's; without it, ask
          if (!socketLive) refreshNow();
          return;
        }
        const reasons = (body.reasons || []).join("; ");
        const why = reasons ? " " + reasons.charAt(0).toUpperCase() + reasons.slice(1) + "." : "";
        const text = (body.detail || "The server refused (" + status + ").") + why;
        rowMessage(row, text);
      })
      .catch(() => rowMessage(row, "No connection: try again when the worklist shows Live."));
  }

  function open(row) {
    if (row) window.location.assign(row.dataset.viewerUrl);
  }

  function openHelp() {
    help.hidden = false;
    document.getElementById("worklist-help-close").focus();
  }

  function closeHelp() {
    help.hidden = true;
  }

  document.addEventListener("keydown", (event) => {
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    resumeAudio(); // a key press is the gesture the browser wants before it plays sound
    if (event.target.closest && event.target.closest("input, textarea, select, [contenteditable]")) {
      if (event.key === "Escape") event.target.blur();
      return;
    }
    if (!help.hidden) {
      if (event.key === "Escape" || event.key === "?") {
        closeHelp();
        event.preventDefault();
      }
      return;
    }
    switch (event.key) {
      case "j":
      case "ArrowDown":
        move(1);
        break;
      case "k":
      case "ArrowUp":
        move(-1);
        break;
      case "Enter":
        if (event.target.closest && event.target.closest("a, button")) return; // the focused control's own Enter
        open(selected());
        break;
      case "c":
        act(selected(), "claim");
        break;
      case "r":
        act(selected(), "release");
        break;
      case "f":
        document.querySelector(".wl-filters select, .wl-filters input").focus();
        break;
      case "a":
        acknowledgeFirst();
        break;
      case "?":
        openHelp();
        break;
      default:
        return;
    }
    event.preventDefault();
  });

  document.addEventListener("click", (event) => {
    resumeAudio();
    const button = event.target.closest("button[data-action]");
    const row = event.target.closest(".wl-row");
    if (row && !event.target.closest("a")) select(row, false);
    if (button && row) act(row, button.dataset.action);
  });
  document.getElementById("worklist-help-open").addEventListener("click", openHelp);
  document.getElementById("worklist-help-close").addEventListener("click", closeHelp);
  help.addEventListener("click", (event) => {
    if (event.target === help) closeHelp();
  });

  // --- SLA countdowns -----------------------------------------------------------------------------

  function pad(n) {
    return String(n).padStart(2, "0");
  }

  function countdown(deadline, start, now) {
    const left = Math.floor((deadline - now) / 1000);
    if (left <= 0) return { text: "BREACHED", state: "breached" };
    const used = start && deadline > start ? 1 - (deadline - now) / (deadline - start) : 0;
    // the thresholds come from the server (worklist.clock), so page and escalation agree
    const shares = live() ? live().dataset : {};
    const critical = Number(shares.slaCritical);
    const warning = Number(shares.slaWarning);
    const state = used >= critical ? "critical" : used >= warning ? "warning" : "ok";
    const hours = Math.floor(left / 3600);
    const minutes = Math.floor((left % 3600) / 60);
    const text = (hours ? hours + ":" + pad(minutes) : pad(minutes)) + ":" + pad(left % 60);
    return { text, state };
  }

  function tick() {
    const now = Date.now();
    document.querySelectorAll(".countdown[data-deadline]").forEach((node) => {
      const start = node.dataset.clockStart ? Date.parse(node.dataset.clockStart) : null;
      const { text, state } = countdown(Date.parse(node.dataset.deadline), start, now);
      node.textContent = text;
      node.className = "countdown sla-" + state;
      const row = node.closest(".wl-row");
      if (row) row.classList.toggle("breached", state === "breached");
    });
  }

  // --- code-stroke alert: visible and audible until acknowledged ------------------------------------

  const ACK_KEY = "readroom.worklist.acknowledged";
  const acknowledged = new Set(JSON.parse(sessionStorage.getItem(ACK_KEY) || "[]"));
  const BEEP_EVERY_MS = 3000;
  let audio = null;
  let beeper = null;

  function resumeAudio() {
    if (audio && audio.state === "suspended") audio.resume().then(updateAudioNotes, () => {});
  }

  function ensureAudio() {
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!audio && Context) audio = new Context();
    resumeAudio();
    return audio;
  }

  function beep() {
    const ctx = ensureAudio();
    if (!ctx || ctx.state !== "running") return;
    root.dataset.beeps = String(Number(root.dataset.beeps || 0) + 1); // what was actually played
    // two short tones, 880 Hz then 660 Hz: distinct from a phone ring
    [0, 0.25].forEach((offset, i) => {
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.type = "square";
      osc.frequency.value = i ? 660 : 880;
      gain.gain.setValueAtTime(0.15, ctx.currentTime + offset);
      gain.gain.exponentialRampToValueAtTime(0.001, ctx.currentTime + offset + 0.2);
      osc.connect(gain).connect(ctx.destination);
      osc.start(ctx.currentTime + offset);
      osc.stop(ctx.currentTime + offset + 0.22);
    });
  }

  function sounding() {
    return Array.from(alertsNode.querySelectorAll('.stroke-alert[data-sounding="true"]'));
  }

  function updateSound() {
    const needed = sounding().length > 0;
    if (needed && !beeper) {
      beep();
      beeper = setInterval(beep, BEEP_EVERY_MS);
    } else if (!needed && beeper) {
      clearInterval(beeper);
      beeper = null;
    }
    updateAudioNotes();
  }

  function updateAudioNotes() {
    const blocked = !audio || audio.state !== "running";
    alertsNode.querySelectorAll(".alert-note").forEach((note) => {
      note.hidden = !blocked;
    });
  }

  function alertNode(id) {
    return alertsNode.querySelector('.stroke-alert[data-study-id="' + CSS.escape(String(id)) + '"]');
  }

  function raiseAlert(study) {
    const id = String(study.id);
    if (acknowledged.has(id) || alertNode(id)) return;
    const node = document.createElement("div");
    node.className = "stroke-alert";
    node.setAttribute("role", "alert");
    node.dataset.studyId = id;
    node.dataset.sounding = "true";
    node.dataset.testid = "stroke-alert";
    node.setAttribute("data-testid", "stroke-alert");
    const parts = [
      ["strong", "CODE STROKE", "code"],
      ["span", study.facility_name || study.facility || "", "facility"],
      ["span", study.procedure || "", "procedure"],
      // the facility's local time comes with the row (the event carries no time zone)
      ["span", study.due_local ? "due " + study.due_local : "", "deadline"],
    ];
    parts.forEach(([tag, text, cls]) => {
      const el = document.createElement(tag);
      el.className = cls;
      el.textContent = text;
      node.appendChild(el);
    });
    if (study.sla_deadline) {
      const cd = document.createElement("span");
      cd.className = "countdown";
      cd.dataset.deadline = study.sla_deadline;
      node.appendChild(cd);
    }
    const status = document.createElement("span");
    status.className = "alert-status";
    node.appendChild(status);
    const claim = document.createElement("button");
    claim.type = "button";
    claim.textContent = "Claim";
    claim.dataset.alertAction = "claim";
    node.appendChild(claim);
    const ack = document.createElement("button");
    ack.type = "button";
    ack.className = "secondary";
    ack.innerHTML = "Acknowledge <kbd>a</kbd>";
    ack.dataset.alertAction = "acknowledge";
    node.appendChild(ack);
    const note = document.createElement("span");
    note.className = "alert-note";
    note.textContent = "Sound is blocked by the browser until you click or press a key on this page.";
    node.appendChild(note);
    alertsNode.prepend(node);
    ensureAudio();
    updateSound();
    tick();
  }

  function settleAlert(study, text) {
    // claimed (by anyone) or cancelled: nothing left to call for, so the sound stops; the banner
    // stays until acknowledged, so a reader who looked away still sees what happened
    const node = alertNode(study.id);
    if (!node) return;
    node.dataset.sounding = "false";
    node.querySelector(".alert-status").textContent = text;
    const claim = node.querySelector('[data-alert-action="claim"]');
    if (claim) claim.remove();
    updateSound();
  }

  function acknowledge(id) {
    acknowledgedElsewhere(id);
    // recorded on the server (who, when), so every page of this reader agrees: the live channel's
    // banner, the lock, another window, a reload (docs/alerts.md)
    const channel = document.querySelector('[data-testid="live-channel"]');
    if (!channel || !channel.dataset.ackUrl) return;
    fetch(channel.dataset.ackUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrfToken, Accept: "application/json", "Content-Type": "application/json" },
      body: JSON.stringify({ study: Number(id), step: "stroke" }),
    }).catch(() => {}); // offline: this tab still remembers it
  }

  function acknowledgedElsewhere(id) {
    id = String(id);
    acknowledged.add(id);
    sessionStorage.setItem(ACK_KEY, JSON.stringify(Array.from(acknowledged).slice(-200)));
    const node = alertNode(id);
    if (node) node.remove();
    updateSound();
  }

  function acknowledgeFirst() {
    const node = alertsNode.querySelector(".stroke-alert");
    if (node) acknowledge(node.dataset.studyId);
  }

  function alertFromRow(row) {
    const existing = alertNode(row.dataset.studyId);
    const due = existing && existing.querySelector(".deadline");
    if (due && !due.textContent && row.dataset.dueLocal) due.textContent = "due " + row.dataset.dueLocal;
    // a banner raised behind the lock had only the lock's fields: the row completes it
    const procedure = existing && existing.querySelector(".procedure");
    if (procedure && !procedure.textContent && row.dataset.procedure) procedure.textContent = row.dataset.procedure;
    // a page (re)loaded or resynced while an unclaimed stroke waits alerts too
    if (row.dataset.stroke === "1" && row.dataset.claimed === "0") {
      raiseAlert({
        id: row.dataset.studyId,
        facility_name: row.dataset.facilityName,
        procedure: row.dataset.procedure,
        sla_deadline: row.dataset.deadline,
        due_local: row.dataset.dueLocal,
      });
    }
  }

  alertsNode &&
    alertsNode.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-alert-action]");
      if (!button) return;
      const id = button.closest(".stroke-alert").dataset.studyId;
      if (button.dataset.alertAction === "acknowledge") {
        acknowledge(id);
        return;
      }
      const row = rows().find((r) => r.dataset.studyId === id);
      if (row) {
        select(row, true);
        act(row, "claim");
      } else {
        // the row is not fetched yet: claim by id through the same API
        const url = root.dataset.claimTemplate.replace("/0/", "/" + encodeURIComponent(id) + "/");
        act({ dataset: { claimUrl: url }, querySelector: () => null }, "claim");
      }
    });

  const ALERT_EVENTS = new Set(["study.added", "study.updated", "study.escalated"]);

  function onEvent(event) {
    // the page's live channel (live.js) shows what this page does not: operations' and the director's steps
    document.dispatchEvent(new CustomEvent("readroom:live", { detail: event }));
    if (!event || typeof event.type !== "string") return;
    if (event.type === "alert") {
      // the code stroke's alert, ahead of its row (worklist.broadcast): banner now, the row follows
      const alerted = event.study || {};
      if (alertsOn && alerted.id !== undefined && alerted.is_stroke && alerted.claimed_by === null) raiseAlert(alerted);
      return;
    }
    if (!event.type.startsWith("study.")) return;
    const study = event.study || {};
    if (alertsOn && study.id !== undefined) {
      if (ALERT_EVENTS.has(event.type) && study.is_stroke && study.claimed_by === null) raiseAlert(study);
      if (event.type === "study.claimed") settleAlert(study, "claimed by " + (study.claimed_by_name || "a reader"));
      if (event.type === "study.cancelled" || event.type === "study.finalized") settleAlert(study, event.type.slice(6));
    }
    // behind the lock the socket sends no rows and the server serves none: the unlock resyncs
    if (document.documentElement.classList.contains("readroom-locked")) return;
    // a worklist event carries this user's row; anything else (e.g. the director's steps) resyncs
    if (fetching) missed = true;
    if (event.row && study.id !== undefined) applyRow(event);
    else refresh();
  }

  // --- the socket ---------------------------------------------------------------------------------

  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = 10000;
  let attempts = 0;

  function setStatus(state, text) {
    statusNode.dataset.state = state;
    statusNode.textContent = text;
  }

  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(scheme + "//" + window.location.host + "/ws/worklist/");
    socket.addEventListener("open", () => {
      attempts = 0;
      socketLive = true;
      // a reconnect behind the screen lock is no "Live" (live.js says Locked; it unlocks to Live)
      if (document.documentElement.classList.contains("readroom-locked")) setStatus("locked", "Locked");
      else setStatus("live", "Live");
      document.dispatchEvent(new CustomEvent("readroom:live-open"));
      // resync: whatever changed while we were away — or between the page's render and this
      // first open — is in the rows
      refreshNow();
    });
    socket.addEventListener("message", (message) => {
      try {
        onEvent(JSON.parse(message.data));
      } catch (error) {
        // a malformed message must not stop the live list
      }
    });
    socket.addEventListener("close", (event) => {
      socketLive = false;
      if (event.code === 4401 || event.code === 4403) {
        setStatus("offline", "Signed out — reload the page to sign in again");
        return;
      }
      const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempts);
      attempts += 1;
      setStatus("offline", "Offline — reconnecting in " + Math.round(delay / 1000) + " s");
      setTimeout(connect, delay);
    });
  }

  // acknowledged on the page's live channel (the screen lock's copy of this banner, live.js): the
  // same stroke's banner here goes too, and stays gone
  document.addEventListener("readroom:acknowledged", (event) => {
    const id = event.detail && event.detail.study;
    if (id !== undefined && id !== null) acknowledgedElsewhere(id); // live.js recorded it
  });
  document.addEventListener("readroom:unlocked", () => {
    setStatus(socketLive ? "live" : "offline", socketLive ? "Live" : "Offline — reconnecting");
    refreshNow();
  });
  afterRowsChanged(false);
  scheduleResync();
  setInterval(tick, 1000);
  connect();
})();

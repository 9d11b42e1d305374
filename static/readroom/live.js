/* The live channel of every page (templates/live/_banner.html, docs/alerts.md): the user's events —
   a code stroke and its escalation steps, a study pushed to them, a notice — shown the same way on
   every page, OHIF's included: a banner with Claim and Acknowledge that stays until acknowledged, a
   tone (after a one-time "click to enable sound": browsers block audio until a gesture), a desktop
   Notification where allowed, and a flashing tab title.

   The events come on /ws/worklist/ (the same groups, so the same audiences: a reader hears only of
   studies they are eligible for now). On the worklist page, worklist.js owns that socket and its
   own stroke banner; this script then only listens to the events worklist.js re-dispatches
   ("readroom:live") and shows what the worklist does not (operations' and the director's steps).
   When the socket (re)opens the page asks /live/pending/ for what is still waiting: the resync. */
(function () {
  "use strict";

  const root = document.getElementById("live-channel");
  if (!root) return;
  // In the report editor's images pane (docs/viewer.md "One reading screen") the viewer is a frame
  // of a page that carries this channel itself: one banner, one tone, one socket per screen. The
  // frame keeps only the shared activity and lock (below), so scrolling images keeps the screen
  // unlocked and a lock hides the pane too.
  const framed = (() => {
    try {
      return window.self !== window.top && !!window.top.document.getElementById("live-channel");
    } catch (error) {
      return false; // another origin's frame: ReadRoom's pages refuse that (frame-ancestors 'self')
    }
  })();
  if (framed) {
    root.hidden = true;
    document.documentElement.classList.add("readroom-framed");
  }
  const alertsNode = root.querySelector(".live-alerts");
  const soundBar = root.querySelector(".live-sound");
  const steps = new Set((root.dataset.steps || "").split(" ").filter(Boolean));
  const worklist = document.querySelector('[data-testid="worklist"]');
  // the reader's worklist banners its own strokes (worklist.js); the desk's list has no banner
  const worklistBanners = worklist && worklist.dataset.alerts === "on";
  const READER_STEPS = new Set(["stroke_alert", "stroke_readers"]);
  const LABELS = {
    stroke_alert: "Code stroke",
    stroke_readers: "Code stroke unclaimed 2 min",
    stroke_director: "Code stroke unclaimed 5 min",
  };
  const handled = new Set(); // "id:step" acknowledged on this page (the server records it too)

  function shown(step) {
    if (!steps.has(step)) return false;
    // worklist.js has that banner already — but the lock hides it with the rest of the page
    return !(worklistBanners && READER_STEPS.has(step) && !locked);
  }

  // --- HTTP: claim, acknowledge, resync -----------------------------------------------------------

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRFToken": root.dataset.csrf, Accept: "application/json", "Content-Type": "application/json" },
      body: body ? JSON.stringify(body) : undefined,
    }).then((response) =>
      response
        .json()
        .catch(() => ({}))
        .then((data) => ({ ok: response.ok, status: response.status, data }))
    );
  }

  function resync() {
    // X-ReadRoom-Poll: asking is not the user's activity (the idle timeout must still come)
    return fetch(root.dataset.pendingUrl, {
      credentials: "same-origin",
      headers: { Accept: "application/json", "X-ReadRoom-Poll": "1" },
    })
      .then((response) => (response.ok ? response.json() : { alerts: [] }))
      .then((body) => {
        (body.alerts || []).forEach((alert) => raise(alert.study, alert.step, alert.at));
        (body.notices || []).forEach(raiseUserNotice);
      })
      .catch(() => {});
  }

  // --- banners ------------------------------------------------------------------------------------

  function banner(id) {
    return alertsNode.querySelector('.live-alert[data-study-id="' + CSS.escape(String(id)) + '"]');
  }

  function part(node, tag, cls, text) {
    const el = document.createElement(tag);
    el.className = cls;
    el.textContent = text;
    node.appendChild(el);
    return el;
  }

  function button(node, action, text, secondary) {
    const el = document.createElement("button");
    el.type = "button";
    el.dataset.liveAction = action;
    el.textContent = text;
    if (secondary) el.className = "secondary";
    node.appendChild(el);
    return el;
  }

  function raise(study, step, since) {
    if (!study || study.id === undefined || !shown(step)) return;
    const id = String(study.id);
    if (handled.has(id + ":" + step)) return;
    // Locked, the page keeps the lock's fields only, whatever the socket sent: the page locks at
    // once, and an alert routed before the server has heard of the lock still has the full study
    if (locked) study = lockedStudy(study);
    let node = banner(id);
    // a lock's copy (no procedure) gets it back when the unlocked page's resync raises it again
    if (node && study.procedure) node.querySelector(".procedure").textContent = study.procedure;
    if (node && node.dataset.step === step) return;
    if (!node) {
      node = document.createElement("div");
      node.className = "live-alert";
      node.setAttribute("role", "alert");
      node.setAttribute("data-testid", "live-alert");
      node.dataset.studyId = id;
      node.dataset.since = since || new Date().toISOString();
      part(node, "strong", "code", "");
      part(node, "span", "facility", study.facility_name || study.facility || "");
      part(node, "span", "priority", study.priority || "STROKE");
      part(node, "span", "procedure", study.procedure || "");
      part(node, "span", "minutes", "");
      part(node, "span", "status", "");
      if (READER_STEPS.has(step) && steps.has("stroke_alert")) button(node, "claim", "Claim");
      button(node, "acknowledge", "Acknowledge", true);
      alertsNode.prepend(node);
    }
    node.dataset.step = step;
    node.dataset.sounding = "true";
    node.querySelector(".code").textContent = (LABELS[step] || "Alert").toUpperCase();
    minutesTick();
    notify(node, study);
    update();
  }

  function lockedStudy(study) {
    // the fields worklist.live.locked_study keeps (the server's list, data-locked-fields): facility,
    // priority class, never the exam
    const kept = {};
    (root.dataset.lockedFields || "id").split(" ").forEach((key) => {
      if (key in study) kept[key] = study[key];
    });
    return kept;
  }

  function settle(study, text) {
    // claimed (by anyone), cancelled or read: nothing left to call for, so the sound stops; the
    // banner stays until acknowledged, so whoever looked away still sees what happened
    const node = banner(study.id);
    if (!node) return;
    node.dataset.sounding = "false";
    node.querySelector(".status").textContent = text;
    const claim = node.querySelector('[data-live-action="claim"]');
    if (claim) claim.remove();
    update();
  }

  function raiseNotice(key, title, facility, text, url) {
    // a notice (no study to claim): same banner, its own key, acknowledged by key — an operations
    // notice, or one addressed to this user alone (worklist.notices: "notice:<id>")
    if (handled.has(key) || alertsNode.querySelector('.live-alert[data-notice="' + CSS.escape(key) + '"]')) return;
    if (locked) text = ""; // the lock's fields only (worklist.live.locked_notice), as for a study
    const node = document.createElement("div");
    node.className = "live-alert";
    node.setAttribute("role", "alert");
    node.setAttribute("data-testid", "live-alert");
    node.dataset.notice = key;
    node.dataset.since = new Date().toISOString();
    node.dataset.sounding = "true";
    part(node, "strong", "code", (title || "Notice").toUpperCase());
    part(node, "span", "facility", facility || "");
    part(node, "span", "procedure", text || "");
    part(node, "span", "minutes", "");
    part(node, "span", "status", "");
    if (url && url.startsWith("/")) {
      const open = document.createElement("a");
      open.className = "open button";
      open.href = url;
      open.textContent = "Open";
      open.setAttribute("data-testid", "live-open");
      node.appendChild(open);
    }
    button(node, "acknowledge", "Acknowledge", true);
    alertsNode.prepend(node);
    minutesTick();
    notify(node, { id: key, facility_name: facility, procedure: text });
    update();
  }

  function raiseUserNotice(notice) {
    if (notice && typeof notice.key === "string") {
      raiseNotice(notice.key, notice.title, notice.facility, notice.text, notice.url);
    }
  }

  function claimed(node) {
    const id = node.dataset.studyId;
    settle({ id }, "Yours");
    if (!node.querySelector(".open")) {
      const open = document.createElement("a");
      open.className = "open button";
      open.href = root.dataset.openUrl.replace("{id}", encodeURIComponent(id));
      open.textContent = "Open";
      open.setAttribute("data-testid", "live-open");
      node.insertBefore(open, node.querySelector('[data-live-action="acknowledge"]'));
    }
  }

  function act(node, action) {
    const id = node.dataset.studyId;
    const status = node.querySelector(".status");
    if (action === "claim") {
      status.textContent = "Claiming…";
      post(root.dataset.claimUrl.replace("{id}", encodeURIComponent(id))).then(({ ok, status: code, data }) => {
        if (ok) return claimed(node);
        const reasons = (data.reasons || []).join("; ");
        status.textContent = (data.detail || "The server refused (" + code + ").") + (reasons ? " " + reasons : "");
      }, () => (status.textContent = "No connection: try again."));
      return;
    }
    const step = node.dataset.step;
    const notice = node.dataset.notice;
    const body = notice ? { notice } : { study: Number(id), step };
    post(root.dataset.ackUrl, body).then(({ ok, data }) => {
      if (!ok) {
        status.textContent = data.detail || "Could not record the acknowledgement.";
        if (!data.detail) return;
      }
      handled.add(notice || id + ":" + step);
      node.remove();
      update();
      if (!notice && READER_STEPS.has(step)) strokeAcknowledged(id);
    }, () => (status.textContent = "No connection: the acknowledgement was not recorded."));
  }

  // A reader's stroke acknowledged here (on the lock, or on a page without the worklist's banner) is
  // acknowledged for the worklist's own banner too: the worklist page (worklist.js) takes it from the
  // event, and a worklist opened later in this tab from the tab's set of acknowledged strokes — else
  // the banner hidden behind the lock would come back ringing at the unlock.
  const WORKLIST_ACK_KEY = "readroom.worklist.acknowledged";

  function strokeAcknowledged(id) {
    if (worklistBanners) {
      document.dispatchEvent(new CustomEvent("readroom:acknowledged", { detail: { study: id } }));
      return;
    }
    try {
      const ids = new Set(JSON.parse(sessionStorage.getItem(WORKLIST_ACK_KEY) || "[]"));
      ids.add(String(id));
      sessionStorage.setItem(WORKLIST_ACK_KEY, JSON.stringify(Array.from(ids).slice(-200)));
    } catch (error) {
      // a malformed set: the worklist's banner may show once more, nothing worse
    }
  }

  function minutesTick() {
    const now = Date.now();
    alertsNode.querySelectorAll(".live-alert").forEach((node) => {
      const minutes = Math.max(0, Math.floor((now - Date.parse(node.dataset.since)) / 60000));
      node.querySelector(".minutes").textContent = minutes + " min";
    });
  }

  // --- sound, notification, title -----------------------------------------------------------------

  const SOUND_KEY = "readroom.live.sound";
  const BEEP_EVERY_MS = 3000;
  let audio = null;
  let beeper = null;
  let flasher = null;
  const title = document.title;

  function resumeAudio() {
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!audio && Context) audio = new Context();
    if (audio && audio.state === "suspended") audio.resume().then(update, () => {});
  }

  function beep() {
    if (!audio || audio.state !== "running") return;
    root.dataset.beeps = String(Number(root.dataset.beeps || 0) + 1); // what was actually played
    [0, 0.25].forEach((offset, i) => {
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.type = "square";
      osc.frequency.value = i ? 660 : 880; // the worklist's two tones: one sound for a stroke
      gain.gain.setValueAtTime(0.15, audio.currentTime + offset);
      gain.gain.exponentialRampToValueAtTime(0.001, audio.currentTime + offset + 0.2);
      osc.connect(gain).connect(audio.destination);
      osc.start(audio.currentTime + offset);
      osc.stop(audio.currentTime + offset + 0.22);
    });
  }

  function notify(node, study) {
    if (!("Notification" in window) || Notification.permission !== "granted") return;
    try {
      const text = [study.facility_name || study.facility, study.procedure].filter(Boolean).join(" · ");
      new Notification(node.querySelector(".code").textContent, { body: text, tag: "readroom-" + study.id });
    } catch (error) {
      // some browsers allow notifications only from a service worker: the banner is enough
    }
  }

  function update() {
    const sounding = alertsNode.querySelectorAll('.live-alert[data-sounding="true"]').length > 0;
    root.dataset.sounding = String(sounding);
    if (sounding && !beeper) {
      resumeAudio();
      beep();
      beeper = setInterval(beep, BEEP_EVERY_MS);
    } else if (!sounding && beeper) {
      clearInterval(beeper);
      beeper = null;
    }
    if (sounding && !flasher) {
      flasher = setInterval(() => {
        const first = alertsNode.querySelector('.live-alert[data-sounding="true"] .code');
        const text = first && first.textContent ? first.textContent : "ALERT";
        document.title = document.title === title ? "⚠ " + text + " · ReadRoom" : title;
      }, 1000);
    } else if (!sounding && flasher) {
      clearInterval(flasher);
      flasher = null;
      document.title = title;
    }
    const blocked = !audio || audio.state !== "running";
    // the prompt once per session, and again whenever an alert sounds into a blocked page
    soundBar.hidden = !(blocked && (sounding || sessionStorage.getItem(SOUND_KEY) !== "on"));
    const ask = root.querySelector('[data-live-action="notify"]');
    ask.hidden = !("Notification" in window) || Notification.permission !== "default";
  }

  function gesture() {
    resumeAudio();
    if (audio && audio.state !== "suspended") sessionStorage.setItem(SOUND_KEY, "on");
    update();
  }

  document.addEventListener("click", gesture, true);
  document.addEventListener("keydown", gesture, true);
  root.addEventListener("click", (event) => {
    const control = event.target.closest("button[data-live-action]");
    if (!control) return;
    const action = control.dataset.liveAction;
    if (action === "sound") {
      sessionStorage.setItem(SOUND_KEY, "on");
      resumeAudio();
    } else if (action === "notify") {
      Notification.requestPermission().then(update, update);
    } else {
      act(control.closest(".live-alert"), action);
    }
  });


  // --- the screen lock (docs/alerts.md) -------------------------------------------------------------
  // At the idle time the page hides everything but this channel (no PHI on screen) and locks its
  // session (ScreenLockMiddleware refuses everything else until unlocked); the socket stays open, so
  // a waiting code stroke still shows — facility, priority class, minutes — and still rings.

  const lockNode = root.querySelector(".live-lock");
  const lockForm = root.querySelector(".live-unlock");
  const lockMessage = root.querySelector(".live-unlock-message");
  // the user's effective lock time, from the server (the strictest of their role's default and their
  // facilities' contracts, never past the session's idle limit; docs/alerts.md "Per facility, per role")
  let lockAfterMs = Number(root.dataset.lockAfter || 0) * 1000;
  let lastActivity = Date.now();
  let locked = false;
  let socketState = "connecting";

  function setState(state) {
    // the channel's and the worklist's status say Locked while locked, never Live (issue 14)
    socketState = state;
    root.dataset.state = locked ? "locked" : state;
    const worklistStatus = document.getElementById("live-status");
    if (locked && worklistStatus) {
      worklistStatus.dataset.state = "locked";
      worklistStatus.textContent = "Locked";
    }
  }

  function lock(alreadyLocked) {
    if (locked) return;
    locked = true;
    document.documentElement.classList.add("readroom-locked");
    lockNode.hidden = false;
    setState(socketState);
    root.querySelector("#live-unlock-secret").focus();
    // on the worklist page its own stroke banner is hidden with the page: show the waiting ones here
    // (asked once the session is locked, so the answer has only the lock's fields)
    const waiting = () => worklistBanners && resync();
    if (alreadyLocked) return waiting();
    post(root.dataset.lockUrl).then(({ ok, status }) => {
      if (!ok && status === 401) lockMessage.textContent = "Signed out: reload the page to sign in again.";
      waiting();
    }, () => {});
  }

  function unlocked() {
    if (!locked) return;
    locked = false;
    lastActivity = Date.now();
    document.documentElement.classList.remove("readroom-locked");
    lockNode.hidden = true;
    lockForm.reset();
    lockMessage.textContent = "";
    if (root.dataset.locked === "true") {
      window.location.reload(); // the server showed the lock page instead of the one asked for
      return;
    }
    setState(socketState);
    const status = document.getElementById("live-status");
    if (status && status.dataset.state === "locked") {
      status.dataset.state = "live";
      status.textContent = "Live";
    }
    if (worklistBanners) {
      // the worklist's own banners are back in view: the lock's copies of them go
      alertsNode.querySelectorAll(".live-alert[data-step]").forEach((node) => {
        if (READER_STEPS.has(node.dataset.step)) node.remove();
      });
      update();
    }
    // the socket held back all but the lock's fields meanwhile: the page fetches what it shows again
    document.dispatchEvent(new CustomEvent("readroom:unlocked"));
    // land on the claim: the waiting stroke's Claim button (the worklist's own banner there)
    const claim =
      alertsNode.querySelector('.live-alert[data-sounding="true"] [data-live-action="claim"]') ||
      document.querySelector('.stroke-alert[data-sounding="true"] [data-alert-action="claim"]');
    if (claim) claim.focus();
    resync();
  }

  lockForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const secret = lockForm.elements.secret.value;
    post(root.dataset.unlockUrl, { secret }).then(({ ok, data }) => {
      if (ok) {
        if (Number(data.lock_after) > 0) lockAfterMs = Number(data.lock_after) * 1000;
        localStorage.setItem(LOCK_KEY, "unlocked " + Date.now());
        return unlocked();
      }
      lockMessage.textContent = data.detail || "Could not unlock.";
      lockForm.elements.secret.select();
    }, () => (lockMessage.textContent = "No connection: try again."));
  });

  // The reader's windows (viewer on one monitor, editor on the other) share one session: activity in
  // any of them keeps all unlocked, and a lock or unlock in one is every window's (localStorage).
  const ACTIVITY_KEY = "readroom.live.activity";
  const LOCK_KEY = "readroom.live.lock";
  let shared = 0;

  // The server locks an idle session itself (ScreenLockMiddleware) by its own record of activity,
  // so work that makes no request (typing a report, scrolling loaded images) is told to it: at most
  // every 30 s while someone works in this window. Its answer carries the lock time (a contract
  // changed meanwhile) or says the server locked the session already.
  const BEAT_EVERY_MS = 30000;
  let beaten = Date.now(); // the page's own load was activity the server saw

  function beat() {
    beaten = Date.now();
    post(root.dataset.activeUrl).then(({ ok, data }) => {
      if (!ok) return;
      if (data.state === "locked") return lock(true);
      if (Number(data.lock_after) > 0) lockAfterMs = Number(data.lock_after) * 1000;
    }, () => {});
  }

  function active() {
    if (locked) return;
    lastActivity = Date.now();
    if (lastActivity - shared > 5000) {
      shared = lastActivity;
      localStorage.setItem(ACTIVITY_KEY, String(lastActivity));
    }
    if (root.dataset.activeUrl && lastActivity - beaten >= BEAT_EVERY_MS) beat();
  }

  ["keydown", "pointerdown", "pointermove", "wheel", "touchstart"].forEach((name) =>
    document.addEventListener(name, active, { capture: true, passive: true })
  );
  window.addEventListener("storage", (event) => {
    if (event.key === LOCK_KEY && event.newValue) {
      if (event.newValue.startsWith("locked")) lock(true);
      else unlocked();
    }
  });
  setInterval(() => {
    const elsewhere = Number(localStorage.getItem(ACTIVITY_KEY) || 0);
    if (!locked && lockAfterMs > 0 && Date.now() - Math.max(lastActivity, elsewhere) >= lockAfterMs) {
      lock(false);
      localStorage.setItem(LOCK_KEY, "locked " + Date.now());
    }
  }, 1000);

  // --- events -------------------------------------------------------------------------------------

  function onEvent(event) {
    if (!event || typeof event.type !== "string") return;
    // the server's word on this session's lock (worklist.consumers): locked here, in another window
    // of this browser, or unlocked there; while locked the socket sends only the lock's fields
    if (event.type === "session.state") {
      if (event.state === "locked") lock(true);
      else if (event.state === "live") unlocked();
      return;
    }
    // operations only (reports.services.critical_results_escalate): the reader is told by a notice
    if (event.type === "report.critical_overdue") {
      const text = (event.accession || "") + " — not communicated by " + (event.deadline || "").slice(11, 16) + " UTC";
      raiseNotice("critical_overdue:" + event.report, "CRITICAL RESULT OVERDUE", event.facility, text);
      return;
    }
    // addressed to this user alone (worklist.notices): pushed, taken over, peer review, feedback, critical
    if (event.type === "notice") return raiseUserNotice(event.notice);
    // a code stroke's alert, sent to the whole audience before the worklist rows (worklist.broadcast)
    if (event.type === "alert") return raise(event.study, event.step, event.at);
    const study = event.study || {};
    if (event.type === "study.claimed") {
      // the claim's own answer may come after its event: "Yours" either way
      const node = banner(study.id);
      if (node && String(study.claimed_by) === root.dataset.userId) return claimed(node);
      return settle(study, "claimed by " + (study.claimed_by_name || "a reader"));
    }
    if (event.type === "study.cancelled" || event.type === "study.finalized") return settle(study, event.type.slice(6));
    if (!study.is_stroke || study.claimed_by !== null) return;
    if (event.type === "study.added" || event.type === "study.updated") raise(study, "stroke_alert");
    if (event.type === "study.escalated" && event.escalation) raise(study, event.escalation.step, event.escalation.at);
  }

  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = 10000;
  let attempts = 0;

  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(scheme + "//" + window.location.host + "/ws/worklist/");
    socket.addEventListener("open", () => {
      attempts = 0;
      setState("live");
      resync(); // whatever was sent while this page had no socket
      document.dispatchEvent(new CustomEvent("readroom:socket-open")); // the page's own resync
    });
    socket.addEventListener("message", (message) => {
      try {
        const event = JSON.parse(message.data);
        onEvent(event);
        // the page's own listeners (e.g. the reading screen's priors line, prior_status.js)
        document.dispatchEvent(new CustomEvent("readroom:event", { detail: event }));
      } catch (error) {
        // a malformed message must not stop the channel
      }
    });
    socket.addEventListener("close", (event) => {
      if (event.code === 4401 || event.code === 4403) {
        setState("signed-out");
        return;
      }
      setState("offline");
      const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempts);
      attempts += 1;
      setTimeout(connect, delay);
    });
  }

  // --- two windows in step (docs/alerts.md): the viewer on one monitor follows the editor -----------
  // "Open images" opens the study in the window named "readroom-viewer" (OHIF, or the built-in
  // viewer); using it is the reader's choice of two windows, remembered (localStorage). From then on,
  // each report editor that opens tells that window (BroadcastChannel, same origin, same browser),
  // and the viewer window — only the one so named — goes to the editor's study if it shows another.
  const READING_KEY = "readroom.reading.windows";
  const reading = "BroadcastChannel" in window ? new BroadcastChannel("readroom-reading") : null;
  const viewerLink = document.querySelector('[data-testid="viewer-link"][data-study-uid]');
  if (reading && viewerLink) {
    // which of the editor's two links the reader used: OHIF ("Open images") or the basic viewer
    const links = { open: viewerLink, basic: document.querySelector('[data-testid="basic-viewer-link"]') };
    Object.entries(links).forEach(([choice, link]) => {
      if (link) link.addEventListener("click", () => localStorage.setItem(READING_KEY, choice));
    });
    const chosen = links[localStorage.getItem(READING_KEY)];
    if (chosen) reading.postMessage({ uid: viewerLink.dataset.studyUid, open: chosen.getAttribute("href") });
  }
  if (reading && window.name === "readroom-viewer") {
    reading.addEventListener("message", (message) => {
      const wanted = message.data || {};
      if (typeof wanted.uid !== "string" || typeof wanted.open !== "string" || !wanted.open.startsWith("/")) return;
      const config = document.getElementById("viewer-config"); // the built-in viewer's
      const shown = config
        ? JSON.parse(config.textContent).studyUid
        : (new URLSearchParams(window.location.search).get("StudyInstanceUIDs") || "").split(",")[0]; // OHIF
      if (shown !== wanted.uid) window.location.assign(wanted.open);
    });
  }

  if (framed) return; // the page around the frame alerts, rings and holds the socket
  setInterval(minutesTick, 15000);
  update();
  if (root.dataset.locked === "true") lock(true);
  if (worklist) {
    // worklist.js owns the socket on its page and hands each event on
    document.addEventListener("readroom:live", (event) => onEvent(event.detail));
    document.addEventListener("readroom:live-open", resync);
    setState("guest");
    resync();
  } else {
    connect();
  }
})();

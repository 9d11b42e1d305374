// One reading screen (docs/viewer.md): the report editor shows the study's images in a pane beside
// the editor when the reader chose "Side by side". The choice is the reader's one layout choice,
// shared with the two-window mode (live.js) under one localStorage key:
//   "side" / "side-basic"  one screen: the pane shows "Open images" (OHIF when installed, else the
//                          built-in viewer) or the built-in viewer;
//   "open" / "basic"       two windows: the links open the viewer window, which follows the editor.
// The pane loads exactly the links' URLs (the same permission-checked views), and only when shown.
// Sign & next lands on the next study's editor, which reads the same choice: the layout stays and
// the pane shows the next study. Nothing here handles keys the editor uses (report_editor.js).
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const READING_KEY = "readroom.reading.windows"; // live.js's key for the two-window choice
  const SPLIT_KEY = "readroom.reading.split"; // the pane's width, % of the screen
  const SIDE = { side: "open", "side-basic": "basic" };
  const MIN_SPLIT = 25;
  const MAX_SPLIT = 75;
  // Below this width the editor and the images would each be too narrow to work in: the choice is
  // kept but the pane waits for a wider window (the note says so).
  const wide = window.matchMedia("(min-width: 1200px)");

  const page = document.querySelector('[data-testid="report-page"]');
  const screen = $("reading-screen");
  const pane = $("reading-pane");
  const splitter = $("reading-splitter");
  const toggle = $("layout-side");
  const links = {
    open: document.querySelector('[data-testid="viewer-link"]'),
    basic: document.querySelector('[data-testid="basic-viewer-link"]'),
  };
  const note = $("reading-layout-note");
  if (!page || !screen || !pane || !splitter || !toggle || !note || !links.open || !links.basic) return;
  if (!pane.querySelector("iframe") || !pane.querySelector(".reading-pane-refused")) return;
  const frame = pane.querySelector("iframe");
  const refusedNote = pane.querySelector(".reading-pane-refused");

  // A refusal (404 for a study this reader may no longer open, the lock page) keeps
  // "X-Frame-Options: DENY" (docs/viewer.md): the browser draws nothing in the frame and says nothing.
  // Every page the pane may show is this origin's, so a frame whose document this page cannot reach
  // after it loaded is the browser's error page: say so in the pane, with no PHI (the page knows none).
  frame.addEventListener("load", () => {
    const src = frame.getAttribute("src");
    let doc = null;
    try {
      doc = frame.contentDocument;
    } catch (error) {
      doc = null;
    }
    const refused = !!src && src !== "about:blank" && doc === null;
    frame.classList.toggle("refused", refused);
    refusedNote.hidden = !refused;
  });

  function stored(key) {
    try {
      return localStorage.getItem(key);
    } catch (error) {
      return null; // storage disabled: the layout is not remembered, the page still works
    }
  }

  function store(key, value) {
    try {
      if (value === null) localStorage.removeItem(key);
      else localStorage.setItem(key, value);
    } catch (error) {
      // not remembered
    }
  }

  function paneViewer() {
    return SIDE[stored(READING_KEY)] || null;
  }

  function render() {
    const viewer = paneViewer();
    const shown = viewer !== null && wide.matches;
    page.classList.toggle("side-by-side", shown);
    pane.hidden = !shown;
    splitter.hidden = !shown;
    toggle.setAttribute("aria-pressed", String(viewer !== null));
    note.textContent =
      viewer !== null && !wide.matches ? "Side by side needs a window 1200 px wide: widen it, or use Open images." : "";
    pane.querySelectorAll("[data-pane-viewer]").forEach((button) =>
      button.setAttribute("aria-pressed", String(button.dataset.paneViewer === viewer)),
    );
    // Loaded only once shown (a pane never seen opens no study: no audit row, no TAT "viewer
    // opened"); kept while the window is only too narrow for a moment, so the viewer keeps its place.
    const wanted = viewer !== null ? links[viewer].getAttribute("href") : null;
    const kept = wanted !== null && frame.getAttribute("src") === wanted;
    const url = shown || kept ? wanted : "about:blank";
    if (frame.getAttribute("src") !== url) {
      refusedNote.hidden = true; // until the new page has loaded, or been refused
      frame.classList.remove("refused");
      frame.setAttribute("src", url);
    }
  }

  toggle.addEventListener("click", () => {
    store(READING_KEY, paneViewer() ? null : "side");
    render();
  });
  pane.querySelectorAll("[data-pane-viewer]").forEach((button) =>
    button.addEventListener("click", () => {
      store(READING_KEY, button.dataset.paneViewer === "basic" ? "side-basic" : "side");
      render();
    }),
  );
  // a second window chosen (live.js stores "open"/"basic" on the click): the pane closes
  Object.values(links).forEach((link) => link.addEventListener("click", () => setTimeout(render)));
  window.addEventListener("storage", (event) => {
    if (event.key === READING_KEY) render(); // chosen in another editor tab
  });
  wide.addEventListener("change", render);

  // --- the split: drag the bar, or arrow keys on it ------------------------------------------------
  let split = Number(stored(SPLIT_KEY)) || 55;

  function splitSet(value, remember) {
    split = Math.min(MAX_SPLIT, Math.max(MIN_SPLIT, value));
    // a custom property through the CSSOM: the CSP forbids style attributes, not this
    screen.style.setProperty("--pane-width", split.toFixed(1) + "%");
    splitter.setAttribute("aria-valuenow", String(Math.round(split)));
    if (remember) store(SPLIT_KEY, String(Math.round(split)));
  }

  splitter.addEventListener("pointerdown", (event) => {
    splitter.setPointerCapture(event.pointerId); // the frame below must not swallow the drag
    page.classList.add("resizing");
  });
  splitter.addEventListener("pointermove", (event) => {
    if (!splitter.hasPointerCapture(event.pointerId)) return;
    const box = screen.getBoundingClientRect();
    splitSet(((event.clientX - box.left) / box.width) * 100, false);
  });
  const dragEnd = () => {
    page.classList.remove("resizing");
    splitSet(split, true);
  };
  splitter.addEventListener("pointerup", dragEnd);
  splitter.addEventListener("pointercancel", dragEnd);
  splitter.addEventListener("keydown", (event) => {
    const steps = { ArrowLeft: -5, ArrowRight: 5 };
    if (event.key in steps) splitSet(split + steps[event.key], true);
    else if (event.key === "Home") splitSet(MIN_SPLIT, true);
    else if (event.key === "End") splitSet(MAX_SPLIT, true);
    else return;
    event.preventDefault();
  });

  splitSet(split, false);
  render();
})();

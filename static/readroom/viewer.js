/* ReadRoom's built-in viewer (templates/imaging/viewer.html), the fallback to OHIF (docs/viewer.md):
   stack scrolling over every frame of every instance, window/level by drag and by preset (HU
   presets only for CT), zoom, pan, invert, cine, and keyboard shortcuts (DESIGN.md §8).

   Frames are WADO-RS ".../frames/N/rendered?window=c,w" PNGs rendered on the server. They are
   fetched into in-memory blobs (the server marks them no-store: PHI stays out of the disk cache)
   and kept in an LRU.

   Scrolling never skips: a step to a slice not yet fetched fetches it at once (ahead of any
   prefetch) and the display walks through every slice between the one shown and the one asked
   for, each as soon as it has arrived. The series is prefetched outward from the current slice,
   in the direction the reader is scrolling first, a few requests at a time. */
(function () {
  "use strict";

  const configNode = document.getElementById("viewer-config");
  const img = document.getElementById("viewer-frame");
  if (!configNode || !img) return;
  const config = JSON.parse(configNode.textContent);
  if (!config.series.length) return;

  const stage = document.querySelector(".stage");
  const counter = document.querySelector('[data-testid="instance-counter"]');
  const seriesLabel = document.querySelector('[data-testid="series-label"]');
  const windowLabel = document.querySelector('[data-testid="window-label"]');
  const statusNode = document.getElementById("viewer-status");
  const help = document.getElementById("viewer-help");
  const presets = Object.fromEntries(config.presets.map((p) => [p.key, p]));

  const CACHE_SIZE = 400; // rendered frames kept in memory (a 512² CT slice is ~150 kB as PNG)
  const PREFETCH_AHEAD = 400; // the whole series, ahead of the scrolling direction first
  const PREFETCH_BEHIND = 8;
  const PREFETCH_CONCURRENCY = 4; // requests in flight for prefetch; the slice asked for goes first
  const DRAG_RENDER_MS = 120; // at most one window re-render this often while dragging

  const state = {
    series: 0,
    target: 0, // the slice the reader asked for
    shown: -1, // the slice on screen
    direction: 1,
    preset: "0",
    window: null, // [centre, width] set by dragging, or null: the preset's or the image's own
    zoom: 1,
    panX: 0,
    panY: 0,
    invert: false,
  };
  const frames = new Map(); // url -> {promise, done, ok, status, src}, oldest first
  let walking = false;
  let prefetchQueue = [];
  let prefetching = 0;
  let cineTimer = null;
  const shownLog = []; // every slice put on screen (tests check that scrolling skipped none)
  window.readroomViewer = { shownLog };

  // One entry per frame: [sop, instanceNumber, frameNumber]
  const stacks = config.series.map((series) =>
    series.instances.flatMap(([sop, number, count]) =>
      Array.from({ length: count || 1 }, (_, f) => [sop, number, f + 1, count || 1])
    )
  );

  function currentWindowQuery() {
    if (state.window) return state.window[0].toFixed(1) + "," + Math.max(1, state.window[1]).toFixed(1);
    const preset = presets[state.preset];
    return preset ? preset.window : null; // digits, '-', '.' and ',' only
  }

  function frameUrl(seriesIndex, index) {
    const series = config.series[seriesIndex];
    const [sop, , frame] = stacks[seriesIndex][index];
    let url =
      config.seriesBase + encodeURIComponent(series.uid) +
      "/instances/" + encodeURIComponent(sop) + "/frames/" + frame + "/rendered";
    const query = currentWindowQuery();
    if (query) url += "?window=" + query;
    return url;
  }

  function load(url) {
    if (frames.has(url)) {
      const cached = frames.get(url);
      frames.delete(url); // move to the young end of the LRU
      frames.set(url, cached);
      return cached;
    }
    const entry = { done: false };
    entry.promise = fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "image/png" } })
      .then((response) => response.blob().then((blob) => {
        Object.assign(entry, { src: URL.createObjectURL(blob), ok: response.ok, status: response.status, done: true });
        return entry;
      }))
      .catch((error) => {
        frames.delete(url); // a failed fetch is retried next time
        throw error;
      });
    frames.set(url, entry);
    while (frames.size > CACHE_SIZE) {
      const [oldUrl, old] = frames.entries().next().value;
      frames.delete(oldUrl);
      if (old.src) URL.revokeObjectURL(old.src);
    }
    return entry;
  }

  // --- display ---------------------------------------------------------------------------------

  function describeWindow() {
    if (state.window) return "W " + Math.round(state.window[1]) + " L " + Math.round(state.window[0]);
    const preset = presets[state.preset];
    if (!preset) return "Window: image default";
    const [center, width] = preset.window.split(",");
    return "W " + width + " L " + center + " · " + preset.name;
  }

  function labels(index) {
    const series = config.series[state.series];
    const [, instanceNumber, frame, count] = stacks[state.series][index];
    counter.textContent = index + 1 + " / " + stacks[state.series].length;
    counter.dataset.target = String(state.target + 1);
    seriesLabel.textContent =
      series.modality + (series.number !== null ? " #" + series.number : "") + " " + series.description +
      (instanceNumber !== null ? " · Im " + instanceNumber : "") + (count > 1 ? " · frame " + frame + "/" + count : "");
    windowLabel.textContent = describeWindow();
  }

  function paint(index, entry, url) {
    img.src = entry.src;
    img.dataset.loadedSrc = url;
    state.shown = index;
    shownLog.push(index + 1);
    labels(index);
    if (entry.status === 401 || entry.status === 403) {
      statusNode.textContent = "Your session has ended: reload the page to sign in again.";
    } else {
      statusNode.textContent = entry.ok ? "" : "This image cannot be displayed here (the reason is in the image).";
    }
  }

  // Walk from the slice on screen to the target, one slice at a time, each painted once it has
  // arrived (requested at once if it was not). A jump (Home/End, PageUp/Down, a new window)
  // repaints the target directly.
  function walk() {
    if (walking) return;
    walking = true;
    const seriesAtStart = state.series;
    const stepOnce = () => {
      if (state.series !== seriesAtStart) { walking = false; walk(); return; }
      if (state.shown === state.target && img.dataset.loadedSrc === frameUrl(state.series, state.target)) {
        walking = false;
        prefetch();
        return;
      }
      const next = state.shown === state.target || state.shown < 0 || Math.abs(state.target - state.shown) > 1 + 30
        ? state.target
        : state.shown + Math.sign(state.target - state.shown);
      const url = frameUrl(state.series, next);
      const entry = load(url);
      if (!entry.done) statusNode.textContent = "Loading…";
      entry.promise
        .then((loaded) => {
          // another series was chosen while this slice was in flight: stepOnce starts its walk
          // (returning here left `walking` set and the viewer frozen on the old series)
          if (state.series !== seriesAtStart) { stepOnce(); return; }
          // Painted only if still on the way from the slice on screen to the target: a stopped
          // cine or a reversed scroll must not put up the slice that was in flight.
          if (frameUrl(state.series, next) === url && (next - state.shown) * (state.target - next) >= 0) {
            paint(next, loaded, url);
          }
          requestAnimationFrame(stepOnce); // let the browser draw this slice before the next
        })
        .catch(() => {
          walking = false;
          statusNode.textContent = "Could not load the image: check the connection, then press a key to retry.";
        });
    };
    stepOnce();
  }

  function prefetch() {
    const count = stacks[state.series].length;
    const ahead = [];
    const behind = [];
    for (let d = 1; d <= Math.max(PREFETCH_AHEAD, PREFETCH_BEHIND); d += 1) {
      const forward = state.target + d * state.direction;
      const backward = state.target - d * state.direction;
      if (d <= PREFETCH_AHEAD && forward >= 0 && forward < count) ahead.push(forward);
      if (d <= PREFETCH_BEHIND && backward >= 0 && backward < count) behind.push(backward);
    }
    // the next few in the scrolling direction, then a few behind, then the rest ahead
    const order = [...ahead.slice(0, 8), ...behind, ...ahead.slice(8)].slice(0, CACHE_SIZE - 8);
    prefetchQueue = order.map((i) => frameUrl(state.series, i)).filter((url) => !frames.has(url));
    pump();
  }

  function pump() {
    while (prefetching < PREFETCH_CONCURRENCY && prefetchQueue.length) {
      const url = prefetchQueue.shift();
      if (frames.has(url)) continue;
      prefetching += 1;
      load(url).promise.catch(() => {}).finally(() => {
        prefetching -= 1;
        pump();
      });
    }
  }

  function go(index, { jump = false } = {}) {
    const count = stacks[state.series].length;
    const next = Math.max(0, Math.min(count - 1, index));
    if (next !== state.target) state.direction = next > state.target ? 1 : -1;
    state.target = next;
    if (jump) state.shown = -1; // paint the target directly, not every slice on the way
    labels(state.shown >= 0 ? state.shown : next);
    walk();
  }

  function step(delta) {
    go(state.target + delta, { jump: Math.abs(delta) > 1 });
  }

  function rerender() {
    // a new window: every cached frame of the old one is stale; show the current slice again
    prefetchQueue = [];
    state.shown = -1;
    walk();
  }

  function selectSeries(index, at = 0) {
    if (index < 0 || index >= config.series.length) return;
    stopCine();
    state.series = index;
    state.target = Math.max(0, Math.min(stacks[index].length - 1, at));
    state.shown = -1;
    state.window = null;
    const allowed = new Set(config.series[index].presets || []);
    if (!allowed.has(state.preset)) state.preset = "0";
    document.querySelectorAll(".series-button").forEach((button) => {
      button.setAttribute("aria-pressed", String(Number(button.dataset.seriesIndex) === index));
    });
    document.querySelectorAll(".preset[data-preset]").forEach((button) => {
      const key = button.dataset.preset;
      button.hidden = key !== "0" && !allowed.has(key);
      button.setAttribute("aria-pressed", String(key === state.preset));
    });
    walk();
  }

  function setPreset(key) {
    const allowed = new Set(config.series[state.series].presets || []);
    if (key !== "0" && !allowed.has(key)) return; // e.g. an HU preset on an MR
    state.preset = key;
    state.window = null;
    document.querySelectorAll(".preset[data-preset]").forEach((button) => {
      button.setAttribute("aria-pressed", String(button.dataset.preset === key));
    });
    rerender();
  }

  // --- zoom, pan, invert ---------------------------------------------------------------------

  function transform() {
    img.style.transform = `translate(${state.panX}px, ${state.panY}px) scale(${state.zoom})`;
    img.style.filter = state.invert ? "invert(1)" : "";
    img.dataset.zoom = state.zoom.toFixed(2);
    img.dataset.invert = String(state.invert);
    document.getElementById("viewer-invert").setAttribute("aria-pressed", String(state.invert));
  }

  function zoomBy(factor) {
    state.zoom = Math.max(0.25, Math.min(16, state.zoom * factor));
    transform();
  }

  function reset() {
    Object.assign(state, { zoom: 1, panX: 0, panY: 0, invert: false });
    transform();
    if (state.window) {
      state.window = null;
      rerender();
    }
  }

  // Window/level by drag: left/right changes the width, up/down the level, in proportion to the
  // width (the same feel on a CT in HU as on an MR in arbitrary units). Pan with Shift or the
  // middle button.
  let drag = null;
  let dragRender = 0;
  function startingWindow() {
    if (state.window) return state.window.slice();
    const preset = presets[state.preset];
    if (preset) return preset.window.split(",").map(Number);
    const own = config.series[state.series].window;
    if (own) return own.slice();
    return config.series[state.series].modality === "CT" ? [40, 400] : [512, 1024];
  }
  stage.addEventListener("pointerdown", (event) => {
    if (event.button !== 0 && event.button !== 1) return;
    event.preventDefault();
    stage.setPointerCapture(event.pointerId);
    const pan = event.shiftKey || event.button === 1;
    drag = { pan, x: event.clientX, y: event.clientY, panX: state.panX, panY: state.panY, window: pan ? null : startingWindow() };
  });
  stage.addEventListener("pointermove", (event) => {
    if (!drag) return;
    const dx = event.clientX - drag.x;
    const dy = event.clientY - drag.y;
    if (drag.pan) {
      state.panX = drag.panX + dx;
      state.panY = drag.panY + dy;
      transform();
      return;
    }
    const [center, width] = drag.window;
    const scale = Math.max(width, 10) / 250;
    state.window = [center - dy * scale, Math.max(1, width + dx * scale * 2)];
    windowLabel.textContent = describeWindow();
    const now = performance.now();
    if (now - dragRender > DRAG_RENDER_MS) {
      dragRender = now;
      rerender();
    }
  });
  const endDrag = () => {
    if (drag && !drag.pan && state.window) rerender();
    drag = null;
  };
  stage.addEventListener("pointerup", endDrag);
  stage.addEventListener("pointercancel", endDrag);

  // --- cine ------------------------------------------------------------------------------------

  function stopCine() {
    if (cineTimer) clearInterval(cineTimer);
    cineTimer = null;
    if (state.shown >= 0) state.target = state.shown; // stop on the frame on screen, not the one in flight
    document.getElementById("viewer-cine").setAttribute("aria-pressed", "false");
  }

  function toggleCine() {
    if (cineTimer) return stopCine();
    const interval = Math.max(30, Math.min(500, config.series[state.series].frameMs || 66)); // ~15/s
    document.getElementById("viewer-cine").setAttribute("aria-pressed", "true");
    cineTimer = setInterval(() => {
      if (state.shown !== state.target) return; // the last one is not on screen yet: wait for it
      const count = stacks[state.series].length;
      state.direction = 1;
      state.target = (state.target + 1) % count;
      if (state.target === 0) state.shown = -1; // loop back without walking the whole stack
      walk();
    }, interval);
  }

  // --- input -------------------------------------------------------------------------------------

  function openHelp() {
    help.hidden = false;
    document.getElementById("viewer-help-close").focus();
  }

  function closeHelp() {
    help.hidden = true;
    stage.focus();
  }

  document.addEventListener("keydown", (event) => {
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    if (event.target.closest && event.target.closest("input, textarea, select, [contenteditable]")) return;
    if (!help.hidden) {
      if (event.key === "Escape" || event.key === "?") {
        closeHelp();
        event.preventDefault();
      }
      return;
    }
    switch (event.key) {
      case "ArrowDown":
      case "ArrowRight":
        step(1);
        break;
      case "ArrowUp":
      case "ArrowLeft":
        step(-1);
        break;
      case "PageDown":
        step(10);
        break;
      case "PageUp":
        step(-10);
        break;
      case "Home":
        go(0, { jump: true });
        break;
      case "End":
        go(Number.MAX_SAFE_INTEGER, { jump: true });
        break;
      case "]":
        selectSeries(state.series + 1);
        break;
      case "[":
        selectSeries(state.series - 1);
        break;
      case "?":
        openHelp();
        break;
      case "+":
      case "=":
        zoomBy(1.25);
        break;
      case "-":
        zoomBy(0.8);
        break;
      case "i":
      case "I":
        state.invert = !state.invert;
        transform();
        break;
      case "r":
      case "R":
        reset();
        break;
      case "c":
      case "C":
        toggleCine();
        break;
      default:
        if (event.key === "0" || presets[event.key]) {
          setPreset(event.key);
          break;
        }
        return; // not ours: let the browser have it
    }
    event.preventDefault();
  });

  // One image per wheel notch (~100 px of deltaY, or 3 lines); a trackpad's many small deltas add
  // up. Ctrl+wheel zooms.
  const NOTCH = 100;
  let wheel = 0;
  stage.addEventListener(
    "wheel",
    (event) => {
      event.preventDefault();
      if (event.ctrlKey) {
        zoomBy(event.deltaY < 0 ? 1.1 : 1 / 1.1);
        return;
      }
      wheel += event.deltaMode === 1 ? (event.deltaY * NOTCH) / 3 : event.deltaY;
      while (Math.abs(wheel) >= NOTCH) {
        step(Math.sign(wheel));
        wheel -= Math.sign(wheel) * NOTCH;
      }
    },
    { passive: false }
  );

  document.querySelectorAll(".series-button").forEach((button) => {
    button.addEventListener("click", () => selectSeries(Number(button.dataset.seriesIndex)));
  });
  document.querySelectorAll(".preset[data-preset]").forEach((button) => {
    button.addEventListener("click", () => setPreset(button.dataset.preset));
  });
  document.getElementById("viewer-invert").addEventListener("click", () => {
    state.invert = !state.invert;
    transform();
  });
  document.getElementById("viewer-cine").addEventListener("click", toggleCine);
  document.getElementById("viewer-reset").addEventListener("click", reset);
  document.getElementById("viewer-help-open").addEventListener("click", openHelp);
  document.getElementById("viewer-help-close").addEventListener("click", closeHelp);
  help.addEventListener("click", (event) => {
    if (event.target === help) closeHelp();
  });

  transform();
  // A study an AI flagged opens at the finding's first image (docs/ai.md); others at the top.
  const start = config.start || { series: 0, index: 0 };
  selectSeries(start.series, start.index);
  // In the report editor's images pane the keyboard stays with the editor (its Tab, Ctrl+Enter):
  // the viewer takes it when the reader clicks into the pane.
  if (window.self === window.top) stage.focus();
})();

/* ReadRoom image viewer (templates/imaging/viewer.html): stack scrolling, window presets and
   keyboard shortcuts (DESIGN.md §8: the common path needs no mouse).

   Frames are WADO-RS ".../frames/1/rendered?window=c,w" PNGs rendered on the server. They are
   fetched into in-memory blobs (the server marks them no-store: PHI stays out of the disk cache)
   and kept in a small LRU, so the neighbours preloaded around the current image show at once. */
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

  const PRELOAD = 3; // images on each side of the current one
  const CACHE_SIZE = 96; // rendered frames kept in memory
  const state = { series: 0, image: 0, preset: "0" };
  const frames = new Map(); // url -> Promise<{src, ok, status}>, oldest first
  let shown = 0; // the latest show() wins when responses arrive out of order

  function frameUrl(seriesIndex, imageIndex) {
    const series = config.series[seriesIndex];
    const sop = series.instances[imageIndex][0];
    let url =
      config.seriesBase + encodeURIComponent(series.uid) +
      "/instances/" + encodeURIComponent(sop) + "/frames/1/rendered";
    const preset = presets[state.preset];
    if (preset) url += "?window=" + preset.window; // digits, '-', '.' and ',' only
    return url;
  }

  function load(url) {
    if (frames.has(url)) {
      const cached = frames.get(url);
      frames.delete(url); // move to the young end of the LRU
      frames.set(url, cached);
      return cached;
    }
    const promise = fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "image/png" } })
      .then((response) =>
        response.blob().then((blob) => ({ src: URL.createObjectURL(blob), ok: response.ok, status: response.status }))
      );
    frames.set(url, promise);
    promise.catch(() => frames.delete(url)); // a failed fetch is retried next time
    while (frames.size > CACHE_SIZE) {
      const [oldUrl, old] = frames.entries().next().value;
      frames.delete(oldUrl);
      old.then((frame) => URL.revokeObjectURL(frame.src)).catch(() => {});
    }
    return promise;
  }

  function preload() {
    const count = config.series[state.series].instances.length;
    for (let d = 1; d <= PRELOAD; d += 1) {
      for (const i of [state.image + d, state.image - d]) {
        if (i >= 0 && i < count) load(frameUrl(state.series, i)).catch(() => {});
      }
    }
  }

  function describeWindow() {
    const preset = presets[state.preset];
    if (!preset) return "Window: image default";
    const [center, width] = preset.window.split(",");
    return "W " + width + " L " + center + " · " + preset.name;
  }

  function show() {
    const series = config.series[state.series];
    const [, instanceNumber] = series.instances[state.image];
    const url = frameUrl(state.series, state.image);
    const token = ++shown;
    counter.textContent = state.image + 1 + " / " + series.instances.length;
    seriesLabel.textContent =
      series.modality + (series.number !== null ? " #" + series.number : "") + " " + series.description +
      (instanceNumber !== null ? " · Im " + instanceNumber : "");
    windowLabel.textContent = describeWindow();
    img.dataset.src = url;
    statusNode.textContent = "Loading…";
    load(url)
      .then((frame) => {
        if (token !== shown) return;
        img.src = frame.src;
        img.dataset.loadedSrc = url;
        if (frame.status === 401 || frame.status === 403) {
          statusNode.textContent = "Your session has ended: reload the page to sign in again.";
        } else {
          statusNode.textContent = frame.ok ? "" : "This image cannot be displayed here (the reason is in the image).";
        }
      })
      .catch(() => {
        if (token === shown) statusNode.textContent = "Could not load the image: check the connection, then press a key to retry.";
      })
      .finally(() => {
        if (token === shown) preload();
      });
  }

  function go(index) {
    const count = config.series[state.series].instances.length;
    const next = Math.max(0, Math.min(count - 1, index));
    if (next !== state.image || !img.dataset.loadedSrc) {
      state.image = next;
      show();
    }
  }

  function step(delta) {
    go(state.image + delta);
  }

  function selectSeries(index) {
    if (index < 0 || index >= config.series.length) return;
    state.series = index;
    state.image = 0;
    document.querySelectorAll(".series-button").forEach((button) => {
      button.setAttribute("aria-pressed", String(Number(button.dataset.seriesIndex) === index));
    });
    show();
  }

  function setPreset(key) {
    if (key !== "0" && !presets[key]) return;
    state.preset = key;
    document.querySelectorAll(".preset").forEach((button) => {
      button.setAttribute("aria-pressed", String(button.dataset.preset === key));
    });
    show();
  }

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
        go(0);
        break;
      case "End":
        go(Number.MAX_SAFE_INTEGER);
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
      default:
        if (event.key === "0" || presets[event.key]) {
          setPreset(event.key);
          break;
        }
        return; // not ours: let the browser have it
    }
    event.preventDefault();
  });

  // One image per wheel notch (~100 px of deltaY, or 3 lines); a trackpad's many small deltas add up.
  const NOTCH = 100;
  let wheel = 0;
  stage.addEventListener(
    "wheel",
    (event) => {
      event.preventDefault();
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
  document.querySelectorAll(".preset").forEach((button) => {
    button.addEventListener("click", () => setPreset(button.dataset.preset));
  });
  document.getElementById("viewer-help-open").addEventListener("click", openHelp);
  document.getElementById("viewer-help-close").addEventListener("click", closeHelp);
  help.addEventListener("click", (event) => {
    if (event.target === help) closeHelp();
  });

  show();
  stage.focus();
})();

// The report editor's keyboard (DESIGN.md §8): Tab moves between fields (the browser's own order,
// section by section), Ctrl+Enter opens the sign dialog, Alt+M inserts a macro into the text field
// last focused, ? shows the shortcuts, Esc closes. Autosave is HTMX on the form (change / typing).
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const signDialog = $("sign-dialog");
  const macroDialog = $("macro-dialog");
  const help = $("report-help");
  const macros = JSON.parse(($("report-macros") || { textContent: "[]" }).textContent);
  let lastText = document.querySelector("textarea[data-macro-target]");
  let caret = null; // [start, end] in lastText when the macro list opened (closing a dialog moves it)

  document.addEventListener("focusin", (event) => {
    if (event.target.matches && event.target.matches("textarea[data-macro-target]")) lastText = event.target;
  });

  function openSign() {
    if (!signDialog) return;
    if (!signDialog.open) signDialog.showModal();
    $("sign-secret").focus();
  }

  function openMacros() {
    if (!macroDialog || !macros.length) return;
    caret = lastText ? [lastText.selectionStart, lastText.selectionEnd] : null;
    macroDialog.showModal();
    $("macro-select").focus();
  }

  function insertMacro() {
    const index = Number($("macro-select").value);
    const macro = macros[index];
    macroDialog.close();
    if (macro) insertText(macro.text);
  }

  // Macros and the viewer's measurements go in at the caret of the last text field used.
  function insertText(text) {
    if (!lastText) return;
    const [start, end] = caret || [lastText.selectionStart ?? lastText.value.length, lastText.selectionEnd ?? lastText.value.length];
    const before = lastText.value.slice(0, start);
    const spacer = before && !/\s$/.test(before) ? " " : "";
    lastText.value = before + spacer + text + lastText.value.slice(end);
    const after = (before + spacer + text).length;
    caret = null;
    lastText.focus();
    lastText.setSelectionRange(after, after);
    lastText.dispatchEvent(new Event("change", { bubbles: true })); // autosave
  }

  document.querySelectorAll("[data-insert-text]").forEach((button) =>
    button.addEventListener("click", () => insertText(button.dataset.insertText)));

  function toggleHelp(show) {
    if (!help) return;
    help.hidden = show === undefined ? !help.hidden : !show;
    if (!help.hidden) $("report-help-close").focus();
  }

  document.addEventListener("keydown", (event) => {
    const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement?.tagName || "");
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      openSign();
    } else if (event.altKey && (event.key === "m" || event.key === "M" || event.code === "KeyM")) {
      event.preventDefault();
      openMacros();
    } else if (event.key === "?" && !typing) {
      event.preventDefault();
      toggleHelp();
    } else if (event.key === "Escape") {
      toggleHelp(false);
    } else if (event.key === "Enter" && document.activeElement === $("macro-select")) {
      event.preventDefault();
      insertMacro();
    }
  });

  $("sign-open")?.addEventListener("click", openSign);
  $("sign-cancel")?.addEventListener("click", () => signDialog.close());
  $("macro-open")?.addEventListener("click", openMacros);
  $("macro-insert")?.addEventListener("click", insertMacro);
  $("macro-cancel")?.addEventListener("click", () => macroDialog.close());
  $("report-help-open")?.addEventListener("click", () => toggleHelp(true));
  $("report-help-close")?.addEventListener("click", () => toggleHelp(false));
  document.querySelectorAll("[data-autosubmit]").forEach((box) =>
    box.addEventListener("change", () => box.form.submit()),
  );
  if (signDialog && signDialog.dataset.open === "true") openSign();

  // FHIRcast (docs/fhircast.md): leaving the study without signing it closes it for the session's
  // subscribers (ImagingStudy-close); signing publishes its own close, so a submitted form sends none.
  // A beacon, because nothing else survives the page going away; the CSRF token travels in its body.
  const page = document.querySelector('[data-testid="report-page"][data-close-url]');
  const reportForm = $("report-form");
  let submitted = false;
  reportForm?.addEventListener("submit", () => (submitted = true));
  if (page && navigator.sendBeacon) {
    window.addEventListener("pagehide", () => {
      if (submitted) return;
      const body = new FormData();
      const token = document.querySelector("input[name=csrfmiddlewaretoken]");
      if (token) body.append("csrfmiddlewaretoken", token.value);
      navigator.sendBeacon(page.dataset.closeUrl, body);
    });
  }
})();

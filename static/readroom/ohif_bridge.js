// Loaded first in OHIF's page (imaging.views.ohif_viewer): OHIF stores its measurement SRs with
// STOW-RS through XMLHttpRequest on this origin, authenticated by the session cookie. Django's
// CSRF check needs the token in a header on every unsafe same-origin request; OHIF has no hook for
// headers other than Authorization, so add it here. Never on requests to another origin.
(function () {
  "use strict";
  const meta = document.querySelector('meta[name="csrf-token"]');
  const token = meta ? meta.getAttribute("content") : "";
  const unsafe = (method) => !/^(GET|HEAD|OPTIONS|TRACE)$/i.test(method || "GET");
  const sameOrigin = (url) => {
    try { return new URL(url, window.location.href).origin === window.location.origin; } catch (e) { return false; }
  };
  const open = XMLHttpRequest.prototype.open;
  const send = XMLHttpRequest.prototype.send;
  XMLHttpRequest.prototype.open = function (method, url) {
    this._readroomCsrf = token && unsafe(method) && sameOrigin(url);
    return open.apply(this, arguments);
  };
  XMLHttpRequest.prototype.send = function () {
    if (this._readroomCsrf) this.setRequestHeader("X-CSRFToken", token);
    return send.apply(this, arguments);
  };
  const nativeFetch = window.fetch;
  window.fetch = function (input, init) {
    const request = new Request(input, init);
    if (token && unsafe(request.method) && sameOrigin(request.url) && !request.headers.has("X-CSRFToken")) {
      const headers = new Headers(request.headers);
      headers.set("X-CSRFToken", token);
      return nativeFetch.call(this, new Request(request, { headers }));
    }
    return nativeFetch.call(this, input, init);
  };
})();

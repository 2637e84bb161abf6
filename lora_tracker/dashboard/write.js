// The dashboard's writes, for every page the server serves (static/write.js).
//   ltWrite.mode: "off" (read-only server: hide write controls), "on", or "ask" (the server
//                 was started with --token VALUE: the user enters it once per tab)
//   ltWrite.post(path, body) -> Promise of the route's JSON result; rejects with an Error
//                 whose message is the server's one-line refusal (nothing was changed).
// The token travels in a header, never in a cookie, so another site cannot send it.
"use strict";
(function () {
  const meta = (name) => {
    const node = document.querySelector(`meta[name="${name}"]`);
    return node ? node.content : "";
  };
  const mode = meta("lt-writes") || "off";
  const KEY = "lora-tracker-write-token";
  function token() {
    if (mode === "on") return meta("lt-token");
    let value = sessionStorage.getItem(KEY);
    if (!value) {
      value = (window.prompt("Write token of this dashboard (the value given to --token):") || "").trim();
      if (value) sessionStorage.setItem(KEY, value);
    }
    return value || "";
  }
  async function post(path, body) {
    if (mode === "off") throw new Error("this dashboard is read-only (--read-only)");
    const response = await fetch(path, {
      method: "POST", cache: "no-store", credentials: "omit",
      headers: { "Content-Type": "application/json", "X-LT-Token": token() },
      body: JSON.stringify(body === undefined ? {} : body),
    });
    let payload;
    try { payload = await response.json(); } catch (e) { payload = {}; }
    if (!response.ok) {
      if (response.status === 403 && mode === "ask") sessionStorage.removeItem(KEY);
      throw new Error(payload.error || `${response.status} ${response.statusText}`);
    }
    return payload;
  }
  window.ltWrite = Object.freeze({ mode, post, forget: () => sessionStorage.removeItem(KEY) });
  document.documentElement.classList.add("lt-writes-" + mode);
})();

// Reader page: profile, then one image at a time, then thanks. All state lives on the server,
// so a reload (or a new tab with the same link) resumes at the current image.
"use strict";
(function () {
  const token = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
  const api = (p) => "/api/reader/" + encodeURIComponent(token) + p;
  const $ = (id) => document.getElementById(id);
  const img = $("study-image"), btnReal = $("btn-real"), btnSyn = $("btn-synthetic");
  let current = null;   // image id on screen
  let shownAt = null;   // performance.now() when it finished loading
  let busy = false;     // an answer is in flight: ignore further clicks and keys
  let scale = 0;        // 0 = fit to window, else multiple of the natural size

  function show(section) {
    for (const id of ["loading", "profile", "study", "thanks"]) $(id).hidden = id !== section;
  }
  function error(msg) { $("error").textContent = msg; $("error").hidden = !msg; }

  // Resolves to {ok, status, data}; a network failure gives status 0 instead of throwing.
  async function call(path, body) {
    const opt = body === undefined ? {} : {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
    let r;
    try { r = await fetch(api(path), Object.assign({cache: "no-store"}, opt)); }
    catch (e) { return {ok: false, status: 0, data: null}; }
    let data = null;
    try { data = await r.json(); } catch (e) { /* empty body */ }
    return {ok: r.ok, status: r.status, data};
  }

  function setProgress(answered, total) {
    $("progress-text").textContent = answered + " / " + total;
    $("progress-bar").max = Math.max(total, 1);
    $("progress-bar").value = answered;
  }

  function enable(on) { btnReal.disabled = btnSyn.disabled = !on; }

  async function refresh() {
    const s = await call("/state");
    if (!s.ok) {
      if (s.status === 404) show(null);  // otherwise keep the screen: a reload may fix it
      error(s.status === 404 ? "This invitation link is not valid."
            : s.status === 0 ? "Server unreachable, please reload." : "Server error, please reload.");
      return;
    }
    error("");
    const st = s.data;
    setProgress(st.position, st.total);
    if (!st.profile_done) { show("profile"); return; }
    if (st.done) { show("thanks"); return; }
    show("study");
    if (st.image_id !== current) load(st.image_id);
  }

  function load(id) {
    current = id; shownAt = null; enable(false);
    img.removeAttribute("src");
    img.src = api("/image/" + encodeURIComponent(id));
  }
  img.addEventListener("load", () => { shownAt = performance.now(); busy = false; applyZoom(); enable(true); });
  img.addEventListener("error", async () => {
    if (!img.getAttribute("src")) return;
    // Another tab may have answered this image already: follow the server; otherwise report.
    const s = await call("/state");
    if (s.ok && s.data.image_id !== current) { await refresh(); return; }
    error("The image could not be loaded; please reload the page.");
  });

  async function answer(value) {
    if (busy || shownAt === null || current === null) return;
    busy = true; enable(false);
    const sent = current;
    const r = await call("/answer", {image_id: sent, answer: value,
                                     client_ms: Math.max(0, performance.now() - shownAt)});
    if (r.status === 0) {
      // The reply was lost, not necessarily the answer (the server may have stored it and then
      // gone down): if the server has moved past this image, the answer is saved.
      const s = await call("/state");
      if (s.ok && s.data.image_id !== sent) { busy = false; await refresh(); return; }
      busy = false; enable(true);
      error(s.ok ? "The answer was not saved, please try again."
                 : "Network problem: the answer may not have been saved, please try again.");
      return;
    }
    if (!r.ok && r.status !== 409) {
      busy = false; enable(true);
      error("Could not save the answer, please try again.");
      return;
    }
    // 409 naming this image: an earlier try of this answer (or another tab) was saved, and the
    // first answer stands. Any other 409 (e.g. a stale tab): the server's state decides what
    // comes next either way.
    busy = false;
    await refresh();
  }

  $("start").addEventListener("click", async () => {
    const specialty = $("specialty").value, years = $("years").value;
    if (!specialty || years === "" || !/^\d+$/.test(years) || +years > 70) {
      error("Please choose your specialty and enter your years in practice (0-70)."); return;
    }
    const r = await call("/profile", {specialty, years: parseInt(years, 10)});
    if (!r.ok && r.status !== 409) { error("Could not save the profile."); return; }
    await refresh();
  });
  btnReal.addEventListener("click", () => answer("real"));
  btnSyn.addEventListener("click", () => answer("synthetic"));
  document.addEventListener("keydown", (e) => {
    if ($("study").hidden || e.repeat || e.ctrlKey || e.metaKey || e.altKey) return;
    const k = e.key.toLowerCase();
    if (k === "r") answer("real");
    else if (k === "s") answer("synthetic");
    else if (k === "+" || k === "=") zoom(1.25);
    else if (k === "-") zoom(0.8);
    else if (k === "0") { scale = 0; applyZoom(); }
  });

  // Zoom: "fit" shows the whole image; otherwise `scale` times its natural (full) resolution.
  function applyZoom() {
    img.classList.toggle("fit", scale === 0);
    img.classList.toggle("zoomed", scale !== 0);
    img.style.width = scale === 0 ? "" : Math.round(img.naturalWidth * scale) + "px";
  }
  function fitScale() { return Math.min(1, img.clientWidth / Math.max(img.naturalWidth, 1)); }
  function zoom(f) {
    const base = scale === 0 ? fitScale() : scale;
    scale = Math.min(8, Math.max(0.1, base * f)); applyZoom();
  }
  img.addEventListener("click", () => { scale = scale === 0 ? 1 : 0; applyZoom(); });
  $("viewport").addEventListener("wheel", (e) => { e.preventDefault(); zoom(e.deltaY < 0 ? 1.15 : 1 / 1.15); }, {passive: false});
  $("zoom-in").addEventListener("click", () => zoom(1.25));
  $("zoom-out").addEventListener("click", () => zoom(0.8));
  $("zoom-fit").addEventListener("click", () => { scale = 0; applyZoom(); });

  // No way back: the back button lands on this same page again.
  history.pushState(null, "", location.href);
  window.addEventListener("popstate", () => history.pushState(null, "", location.href));

  refresh().catch(() => error("Server unreachable, please reload."));
})();

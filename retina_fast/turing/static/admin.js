// Admin page: live progress of every study and CSV/JSON export (the token is sent as a header,
// so downloads go through fetch + blob instead of plain links).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  let timer = null;
  const headers = () => ({"X-Admin-Token": $("token").value});

  async function get(path) {
    const r = await fetch(path, {headers: headers(), cache: "no-store"});
    if (!r.ok) throw new Error(path + ": HTTP " + r.status);
    return r;
  }

  function el(tag, text) { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; return e; }

  async function download(id, fmt) {
    const r = await get("/api/admin/studies/" + id + "/export?format=" + fmt);
    const a = el("a"); a.href = URL.createObjectURL(await r.blob());
    a.download = "turing_study_" + id + "." + fmt; a.click(); URL.revokeObjectURL(a.href);
  }

  async function render() {
    try {
      const studies = await (await get("/api/admin/studies")).json();
      const box = $("studies"); box.replaceChildren();
      for (const s of studies) {
        const prog = await (await get("/api/admin/studies/" + s.study_id + "/progress")).json();
        const links = {};
        for (const r of await (await get("/api/admin/studies/" + s.study_id + "/readers")).json())
          links[r.reader_id] = location.origin + r.url;
        const h = el("h2", "Study " + s.study_id + ": " + s.name + " (" + s.n_images + " images, " +
                     prog.filter((p) => p.done).length + " / " + prog.length + " readers done)");
        const csv = el("button", "export CSV"), json = el("button", "export JSON");
        csv.onclick = () => download(s.study_id, "csv"); json.onclick = () => download(s.study_id, "json");
        const table = el("table");
        for (const p of prog) {
          const tr = el("tr"); const bar = el("progress"); bar.max = p.total; bar.value = p.answered;
          tr.append(el("td", p.name), el("td", p.answered + " / " + p.total), el("td"),
                    el("td", links[p.reader_id] || ""));
          tr.children[2].append(bar); table.append(tr);
        }
        box.append(h, csv, json, table);
      }
      $("error").hidden = true;
    } catch (e) { $("error").textContent = e.message; $("error").hidden = false; }
  }
  $("load").addEventListener("click", () => { render(); clearInterval(timer); timer = setInterval(render, 5000); });
})();

// Lanewarden web board: live updates, drag and drop, forms without a page reload.
// Plain JavaScript, no build step. Every page works without it; this only makes it live.
"use strict";

(function () {
  const body = document.body;
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const canAct = body.dataset.canAct === "yes";
  const page = body.dataset.page || "";
  const params = new URLSearchParams(location.search);
  const filtered = ["q", "profile", "gateway"].some((k) => params.get(k));

  // ---------------------------------------------------------------- notices
  const toast = document.getElementById("toast");
  let toastTimer = null;
  function say(message, ok) {
    if (!toast) return;
    toast.replaceChildren();
    const p = document.createElement("p");
    p.className = ok ? "ok" : "error";
    p.textContent = message;
    toast.appendChild(p);
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => toast.replaceChildren(), ok ? 5000 : 12000);
  }
  if (toast && toast.firstElementChild) {
    toastTimer = setTimeout(() => toast.replaceChildren(), 8000);
    // the notice came in the URL after a form post without JavaScript; keep the URL clean
    if (params.has("notice")) {
      params.delete("notice");
      params.delete("failed");
      const rest = params.toString();
      history.replaceState(null, "", location.pathname + (rest ? "?" + rest : ""));
    }
  }

  async function post(fields) {
    const data = new URLSearchParams(fields);
    data.set("csrf", csrf);
    try {
      const response = await fetch("/act", {
        method: "POST",
        headers: { Accept: "application/json", "X-CSRF-Token": csrf },
        body: data,
        credentials: "same-origin",
      });
      const answer = await response.json().catch(() => ({ ok: false, message: response.statusText }));
      say(answer.message, answer.ok);
      return answer.ok;
    } catch (err) {
      say("the board did not answer; check your connection", false);
      return false;
    }
  }

  // ---------------------------------------------------------------- forms
  document.addEventListener("submit", async (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-async")) return;
    event.preventDefault();
    const fields = new FormData(form);
    if (event.submitter && event.submitter.name) fields.set(event.submitter.name, event.submitter.value);
    const buttons = form.querySelectorAll("button");
    buttons.forEach((b) => (b.disabled = true));
    const ok = await post(fields);
    buttons.forEach((b) => (b.disabled = false));
    if (ok) {
      form.querySelectorAll("textarea, input[name=reason]").forEach((f) => (f.value = ""));
      if (page === "task") refreshTask();
    }
  });

  // ---------------------------------------------------------------- columns
  function cardMatches(card) {
    const q = (params.get("q") || "").trim().toLowerCase().replace(/^#/, "");
    if (params.get("profile") && card.dataset.profile !== params.get("profile")) return false;
    if (params.get("gateway") && card.dataset.gateway !== params.get("gateway")) return false;
    if (q && !(card.dataset.title.includes(q) || card.dataset.id === q)) return false;
    return true;
  }

  function enableDrag(root) {
    if (!canAct) return;
    root.querySelectorAll(".card").forEach((card) => {
      card.draggable = true;
    });
  }

  function place(info) {
    const old = document.getElementById("card-" + info.id);
    if (old) old.remove();
    if (!info.column || !info.html) return;
    const list = document.querySelector('ol.cards[data-column="' + info.column + '"]');
    if (!list) return;
    const holder = document.createElement("ol");
    holder.innerHTML = info.html;
    const card = holder.firstElementChild;
    if (!card || !cardMatches(card)) return;
    let before = null;
    for (const other of list.children) {
      if (other.dataset.sort > info.sort) {
        before = other;
        break;
      }
    }
    // past the last card shown of a paged column: it is on a later page
    if (before === null && list.dataset.shownAll !== "yes") return;
    list.insertBefore(card, before);
    enableDrag(card.parentElement);
    card.classList.add("flash");
    setTimeout(() => card.classList.remove("flash"), 1600);
  }

  let resyncTimer = null;
  function resync() {
    clearTimeout(resyncTimer);
    resyncTimer = setTimeout(async () => {
      if (page === "task") return refreshTask();
      const columns = document.getElementById("columns");
      if (!columns) return;
      const response = await fetch("/board/columns" + location.search, { credentials: "same-origin" });
      if (!response.ok) return;
      const holder = document.createElement("div");
      holder.innerHTML = await response.text();
      const fresh = holder.querySelector("#columns");
      if (fresh) {
        columns.replaceWith(fresh);
        enableDrag(fresh);
      }
    }, 150);
  }

  function applyCards(payload) {
    if (page === "task") {
      if (payload.cards.some((c) => String(c.id) === body.dataset.task)) refreshTask();
      return;
    }
    if (filtered) return resync(); // counts under a filter come from the server
    payload.cards.forEach(place);
    for (const [key, count] of Object.entries(payload.counts || {})) {
      const badge = document.querySelector('[data-count="' + key + '"]');
      if (badge) badge.textContent = count;
    }
  }

  async function refreshTask() {
    const view = document.getElementById("task-view");
    if (!view) return;
    const response = await fetch(location.pathname, { credentials: "same-origin" });
    if (!response.ok) return;
    const holder = document.createElement("div");
    holder.innerHTML = await response.text();
    const fresh = holder.querySelector("#task-view");
    if (fresh && !view.contains(document.activeElement)) view.replaceWith(fresh);
    else if (fresh && !view.querySelector("textarea:focus, input:focus")) view.replaceWith(fresh);
  }

  // "N more" without leaving the board
  document.addEventListener("click", async (event) => {
    const link = event.target.closest("a[data-more]");
    if (!link) return;
    event.preventDefault();
    const response = await fetch(link.href + "&fragment=1", { credentials: "same-origin" });
    if (!response.ok) return;
    const list = document.querySelector('ol.cards[data-column="' + link.dataset.more + '"]');
    const holder = document.createElement("ol");
    holder.innerHTML = await response.text();
    const added = holder.children.length;
    list.append(...holder.children);
    enableDrag(list);
    const url = new URL(link.href);
    const offset = Number(url.searchParams.get("offset")) + added;
    const left = Number(link.textContent.split(" ")[0]) - added;
    if (left <= 0 || added === 0) {
      list.dataset.shownAll = "yes";
      link.remove();
    } else {
      url.searchParams.set("offset", offset);
      link.href = url.pathname + url.search;
      link.textContent = left + " more";
    }
  });

  // ---------------------------------------------------------------- drag and drop
  if (canAct) {
    enableDrag(document);
    document.addEventListener("dragstart", (event) => {
      const card = event.target.closest && event.target.closest(".card");
      if (!card) return;
      const from = card.closest("ol.cards").dataset.column;
      event.dataTransfer.setData("text/plain", JSON.stringify({ id: card.dataset.id, from: from }));
      event.dataTransfer.effectAllowed = "move";
    });
    document.addEventListener("dragover", (event) => {
      const column = event.target.closest && event.target.closest("section.column");
      if (!column) return;
      event.preventDefault();
      column.classList.add("drop-here");
    });
    document.addEventListener("dragleave", (event) => {
      const column = event.target.closest && event.target.closest("section.column");
      if (column && !column.contains(event.relatedTarget)) column.classList.remove("drop-here");
    });
    document.addEventListener("drop", async (event) => {
      const column = event.target.closest && event.target.closest("section.column");
      if (!column) return;
      event.preventDefault();
      column.classList.remove("drop-here");
      let moved;
      try {
        moved = JSON.parse(event.dataTransfer.getData("text/plain"));
      } catch (err) {
        return;
      }
      if (!moved || moved.from === column.dataset.column) return;
      await post({ action: "drop", id: moved.id, from: moved.from, to: column.dataset.column });
    });
  }

  // ---------------------------------------------------------------- live stream
  const columns = document.getElementById("columns");
  let cursor = columns ? columns.dataset.cursor : body.dataset.cursor || "0";
  if (page && window.EventSource) {
    const stream = new EventSource("/events?since=" + encodeURIComponent(cursor || "0"));
    body.dataset.live = "connecting";
    stream.addEventListener("open", () => (body.dataset.live = "on"));
    stream.addEventListener("error", () => (body.dataset.live = "off"));
    stream.addEventListener("cards", (event) => applyCards(JSON.parse(event.data)));
    stream.addEventListener("resync", () => resync());
    stream.addEventListener("strip", (event) => {
      const strip = document.getElementById("strip");
      if (strip) strip.innerHTML = event.data;
    });
  }
})();

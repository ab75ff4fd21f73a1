// The tasknode web console's one script: tables that refresh themselves, checks as a server
// name is typed, the concurrency calculator, copy buttons and the live task log. Forms post
// and answer without it; only those five need it.
"use strict";

(function () {
  // Requests from this script get 401 (not a redirect to the sign-in page) when the session ended.
  const HEADERS = { "X-Tasknode-Script": "1" };

  function get(url) {
    return fetch(url, { headers: HEADERS, credentials: "same-origin", cache: "no-store" });
  }

  function sessionEnded(where) {
    if (where) where.textContent = "Your session ended: reload the page to sign in again.";
  }

  // ---- tables that refresh themselves ----
  function refreshing(tbody) {
    const url = tbody.dataset.refresh;
    const state = document.getElementById("refresh-state");
    const every = 2000;
    let timer = null;
    async function tick() {
      timer = null;
      if (document.hidden) return;
      try {
        const res = await get(url);
        if (res.status === 401) return sessionEnded(state);
        if (!res.ok) throw new Error(res.status + " " + res.statusText);
        tbody.innerHTML = await res.text();
        if (state) state.textContent = "Updated " + new Date().toLocaleTimeString() + ".";
      } catch (e) {
        if (state) state.textContent = "Could not refresh (" + e.message + "); trying again.";
      }
      timer = setTimeout(tick, every);
    }
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden && timer === null) tick();
    });
    timer = setTimeout(tick, every);
  }

  // ---- a server name checked as it is typed ----
  function checked(input) {
    const out = document.getElementById(input.id + "-check");
    let timer = null;
    let asked = 0;
    input.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(async function () {
        const value = input.value.trim();
        const mine = ++asked;
        if (value === "") {
          out.textContent = "";
          out.className = "check";
          input.removeAttribute("aria-invalid");
          return;
        }
        try {
          const res = await get(input.dataset.check + "?name=" + encodeURIComponent(value));
          if (res.status === 401) return sessionEnded(out);
          const answer = await res.json();
          if (mine !== asked) return; // a later keystroke asked again
          out.textContent = answer.message;
          out.className = "check " + (answer.ok ? "ok" : "bad");
          if (answer.ok) input.removeAttribute("aria-invalid");
          else input.setAttribute("aria-invalid", "true");
        } catch (e) {
          out.textContent = "";
        }
      }, 250);
    });
  }

  // ---- the concurrency calculator ----
  function calculator() {
    const cores = document.getElementById("cores");
    const memory = document.getElementById("memory_gib");
    const result = document.getElementById("calc-result");
    const use = document.getElementById("use-calculated");
    const target = document.getElementById("max_concurrency");
    if (!cores || !memory || !result) return;
    let value = null;
    let asked = 0;
    async function compute() {
      const mine = ++asked;
      const url = "/ui/concurrency?cores=" + encodeURIComponent(cores.value) +
        "&memory_gib=" + encodeURIComponent(memory.value);
      try {
        const res = await get(url);
        if (res.status === 401) return sessionEnded(result);
        const answer = await res.json();
        if (mine !== asked) return; // a later keystroke asked again
        value = answer.max_concurrency;
        result.textContent = answer.message;
        result.className = value === null ? "bad" : "ok";
        use.disabled = value === null;
      } catch (e) {
        result.textContent = "";
      }
    }
    cores.addEventListener("input", compute);
    memory.addEventListener("input", compute);
    use.addEventListener("click", function () {
      if (value !== null) {
        target.value = String(value);
        target.focus();
      }
    });
    compute();
  }

  // ---- copy buttons ----
  function copier(button) {
    button.addEventListener("click", async function () {
      const source = document.getElementById(button.dataset.copy);
      const text = source.textContent;
      let done = false;
      if (navigator.clipboard && window.isSecureContext) {
        try {
          await navigator.clipboard.writeText(text);
          done = true;
        } catch (e) {
          done = false;
        }
      }
      if (!done) {
        const range = document.createRange();
        range.selectNodeContents(source);
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        done = document.execCommand("copy");
      }
      const label = button.textContent;
      button.textContent = done ? "Copied" : "Select and copy it by hand";
      setTimeout(function () { button.textContent = label; }, 2000);
    });
  }

  // ---- the live task log ----
  const ENDED = {
    succeeded: "The task succeeded",
    failed: "The task failed",
    timed_out: "The task timed out",
    cancelled: "The task was cancelled",
    lost: "The task was lost",
  };

  // Once a task ends, its facts (reason, exit code) are read again from its page.
  async function refreshFacts() {
    const facts = document.querySelector("dl.facts");
    try {
      const res = await get(location.pathname);
      if (!res.ok || !facts) return;
      const page = new DOMParser().parseFromString(await res.text(), "text/html");
      const fresh = page.querySelector("dl.facts");
      if (fresh) facts.replaceWith(document.importNode(fresh, true));
    } catch (e) {
      // The facts stay as they were; the log and state above are current.
    }
  }

  function liveLog(pre) {
    const url = pre.dataset.log;
    const status = document.getElementById("log-state");
    const badge = document.querySelector("#task-state .badge");
    const decoder = new TextDecoder();
    let offset = 0;
    async function next() {
      let res;
      try {
        res = await get(url + "?offset=" + offset);
      } catch (e) {
        status.textContent = "The console did not answer; trying again.";
        return setTimeout(next, 2000);
      }
      if (res.status === 401) return sessionEnded(status);
      if (!res.ok) {
        status.textContent = await res.text();
        return setTimeout(next, 3000);
      }
      const bytes = new Uint8Array(await res.arrayBuffer());
      const state = res.headers.get("x-tasknode-task-state") || "";
      const complete = res.headers.get("x-tasknode-log-complete") === "true";
      if (bytes.length > 0) {
        offset += bytes.length;
        pre.appendChild(document.createTextNode(decoder.decode(bytes, { stream: !complete })));
      }
      if (badge && state) {
        badge.textContent = state.replace("_", " ");
        badge.className = "badge badge-" + state;
        document.getElementById("task-state").dataset.state = state;
      }
      if (complete) {
        pre.appendChild(document.createTextNode(decoder.decode()));
        status.textContent = (ENDED[state] || "The task is " + state) + "; its whole log is above.";
        const cancel = document.getElementById("cancel-form");
        if (cancel) cancel.hidden = true;
        if (pre.dataset.final !== "true") refreshFacts();
        return;
      }
      status.textContent = state === "running"
        ? "Running: the log follows as it is written."
        : "The task is " + state.replace("_", " ") + ".";
      setTimeout(next, bytes.length > 0 ? 0 : 1000);
    }
    next();
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh]").forEach(refreshing);
    document.querySelectorAll("input[data-check]").forEach(checked);
    document.querySelectorAll("button[data-copy]").forEach(copier);
    document.querySelectorAll("pre[data-log]").forEach(liveLog);
    calculator();
  });
})();

// The domain XML page: CodeMirror 5 (a global, loaded by classic scripts before this module) on the
// textarea, a dry-run diff before applying, errors marked at their line, the history with revert.
// Everything goes through the JSON API (PUT/GET /api/v1/vms/{id}/xml…); without CodeMirror the
// plain textarea is the editor.

import { api, errorText, localizeTimes, sentence } from "./common.js";

const app = document.getElementById("xml-app");

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function start() {
  if (!app) return;
  const base = `/api/v1/vms/${encodeURIComponent(app.dataset.vmId)}/xml`;
  const textarea = document.getElementById("xml-text");
  const errorBox = document.getElementById("xml-error");
  const result = document.getElementById("xml-result");
  const review = document.getElementById("xml-review");
  const diffBox = document.getElementById("xml-diff");
  const nextBoot = document.getElementById("xml-next-boot");
  const restart = document.getElementById("xml-restart");
  const previewButton = document.getElementById("xml-preview");
  const applyButton = document.getElementById("xml-apply");
  let pristine = textarea.value;
  let marked = null;
  let widget = null;

  const cm = window.CodeMirror ? window.CodeMirror.fromTextArea(textarea, {
    mode: "application/xml", lineNumbers: true, lineWrapping: false, indentUnit: 2, viewportMargin: 50,
  }) : null;
  if (cm) app.dataset.editor = "codemirror";
  const getText = () => (cm ? cm.getValue() : textarea.value);
  const setText = (text) => { if (cm) cm.setValue(text); else textarea.value = text; };

  function clearError() {
    errorBox.hidden = true;
    errorBox.textContent = "";
    delete errorBox.dataset.line;
    if (cm && marked !== null) cm.removeLineClass(marked, "background", "xml-error-line");
    if (widget) widget.clear();
    marked = null;
    widget = null;
  }

  function showError(res) {
    clearError();
    const err = (res.data && res.data.error) || {};
    const where = err.line ? `Line ${err.line}` + (err.element ? ` (<${err.element}>)` : "") + ": " : "";
    errorBox.textContent = where + errorText(res);
    errorBox.hidden = false;
    if (err.line) errorBox.dataset.line = String(err.line);
    if (cm && err.line) {
      const line = Math.max(0, Math.min(cm.lineCount() - 1, err.line - 1));
      marked = cm.addLineClass(line, "background", "xml-error-line");
      widget = cm.addLineWidget(line, el("div", sentence(err.message || ""), "xml-error-widget"), { above: false });
      cm.scrollIntoView({ line, ch: 0 }, 80);
      cm.setCursor({ line, ch: 0 });
    } else if (!cm && err.line) {
      const lines = textarea.value.split("\n");
      const startAt = lines.slice(0, err.line - 1).join("\n").length + (err.line > 1 ? 1 : 0);
      textarea.focus();
      textarea.setSelectionRange(startAt, startAt + (lines[err.line - 1] || "").length);
    }
  }

  function renderDiff(box, diff) {
    box.textContent = "";
    if (!diff) { box.textContent = "No changes."; return; }
    for (const line of diff.split("\n")) {
      const cls = line.startsWith("@@") ? "hunk" : line.startsWith("+") && !line.startsWith("+++") ? "add"
        : line.startsWith("-") && !line.startsWith("---") ? "del" : "";
      box.appendChild(el("span", line + "\n", cls));
    }
  }

  function say(message) {
    result.textContent = message;
    result.hidden = false;
  }

  async function reload() {
    const res = await api("GET", base);
    if (!res.ok) return;
    pristine = res.data.xml;
    setText(pristine);
    document.getElementById("xml-version").textContent = String(res.data.version);
    app.dataset.version = String(res.data.version);
  }

  function outcome(doc, what) {
    if (!doc.changed) return `${what}: libvirt already held this definition; nothing changed.`;
    let text = `${what}: saved as version ${doc.version}.`;
    if (doc.restarted) text += ` ${app.dataset.vmName} was restarted and runs with it now.`;
    else if (doc.next_boot) text += ` ${app.dataset.vmName} is running: the changes apply at its next boot.`;
    if (doc.restart_error) text += ` The restart failed: ${sentence(doc.restart_error)}`;
    return text;
  }

  previewButton.addEventListener("click", async () => {
    clearError();
    result.hidden = true;
    previewButton.disabled = true;
    const res = await api("PUT", base, { xml: getText(), dry_run: true });
    previewButton.disabled = false;
    if (!res.ok) { review.hidden = true; showError(res); return; }
    renderDiff(diffBox, res.data.diff);
    nextBoot.hidden = !res.data.next_boot;
    applyButton.disabled = !res.data.changed && !restart.checked;
    review.hidden = false;
    diffBox.focus();
  });

  restart.addEventListener("change", () => { if (restart.checked) applyButton.disabled = false; });

  applyButton.addEventListener("click", async () => {
    clearError();
    applyButton.disabled = true;
    applyButton.textContent = restart.checked ? "Applying and restarting…" : "Applying…";
    const res = await api("PUT", base, { xml: getText(), restart: restart.checked });
    applyButton.disabled = false;
    applyButton.textContent = "Apply";
    if (!res.ok) { review.hidden = true; showError(res); return; }
    review.hidden = true;
    say(outcome(res.data, "Applied"));
    await reload();
    loadHistory();
  });

  document.getElementById("xml-cancel").addEventListener("click", () => { review.hidden = true; });
  document.getElementById("xml-reset").addEventListener("click", () => {
    clearError(); review.hidden = true; result.hidden = true; setText(pristine);
  });

  // ---- history
  const tbody = document.querySelector("#xml-history tbody");

  async function revert(version) {
    if (!window.confirm(`Apply version ${version} again? It becomes a new version; nothing is lost.`)) return;
    const res = await api("POST", `${base}/revert`, { version, restart: document.getElementById("revert-restart").checked });
    if (!res.ok) { selectTab("edit"); showError(res); return; }
    say(outcome(res.data, `Reverted to version ${version}`));
    await reload();
    await loadHistory();
  }

  async function loadHistory() {
    const res = await api("GET", `${base}/history`);
    tbody.textContent = "";
    if (!res.ok) {
      const row = el("tr");
      const cell = el("td", errorText(res), "error");
      cell.colSpan = 6;
      row.appendChild(cell);
      tbody.appendChild(row);
      return;
    }
    res.data.history.forEach((h, index) => {
      const row = el("tr");
      row.dataset.version = String(h.version);
      row.appendChild(el("td", String(h.version)));
      row.appendChild(el("td", h.source));
      row.appendChild(el("td", h.author || "—"));
      const when = el("td");
      const time = el("time", h.created_at);
      time.dateTime = h.created_at;
      when.appendChild(time);
      row.appendChild(when);
      const changes = el("td");
      if (h.diff) {
        const details = el("details");
        details.appendChild(el("summary", "Show diff"));
        const pre = el("pre", null, "xml-diff");
        renderDiff(pre, h.diff);
        details.appendChild(pre);
        changes.appendChild(details);
      } else {
        changes.appendChild(el("span", "the first version", "muted"));
      }
      row.appendChild(changes);
      const action = el("td");
      if (index > 0) {
        const button = el("button", `Revert to ${h.version}`, "secondary revert");
        button.type = "button";
        button.addEventListener("click", () => revert(h.version));
        action.appendChild(button);
      }
      row.appendChild(action);
      tbody.appendChild(row);
    });
    localizeTimes();
  }

  // ---- tabs
  const tabs = { edit: document.getElementById("tab-edit"), history: document.getElementById("tab-history") };
  const panels = { edit: document.getElementById("panel-edit"), history: document.getElementById("panel-history") };
  function selectTab(name) {
    for (const key of Object.keys(tabs)) {
      const on = key === name;
      tabs[key].setAttribute("aria-selected", on ? "true" : "false");
      tabs[key].tabIndex = on ? 0 : -1;
      panels[key].hidden = !on;
    }
    if (name === "history") loadHistory();
    if (name === "edit" && cm) cm.refresh();
  }
  tabs.edit.addEventListener("click", () => selectTab("edit"));
  tabs.history.addEventListener("click", () => selectTab("history"));
  for (const tab of Object.values(tabs)) {
    tab.addEventListener("keydown", (event) => {
      if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
        const next = tab === tabs.edit ? "history" : "edit";
        selectTab(next);
        tabs[next].focus();
      }
    });
  }
  if (location.hash === "#history") selectTab("history");
  app.dataset.ready = "1";
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();

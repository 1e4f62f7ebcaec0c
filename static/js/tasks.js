// Live task progress: every element with data-task-id whose task is pending or running is kept up to date
// by polling GET /api/v1/tasks/{id}. When a task ends, a "labcloud:task-finished" event is sent on document.

import { api, errorText, localizeTimes, poll, setBadge } from "./common.js";

const ACTIVE = new Set(["pending", "running"]);
const INTERVAL_MS = 1000;

/** Watch one task: call onUpdate(task) after every poll until it ends; returns a stop function. */
export function watchTask(taskId, onUpdate, onError) {
  return poll(async () => {
    const res = await api("GET", `/api/v1/tasks/${encodeURIComponent(taskId)}`);
    if (!res.ok) {
      if (onError) onError(res);
      return res.status !== 404 && res.status !== 401 && res.status !== 403;
    }
    const task = res.data.task;
    onUpdate(task);
    if (!ACTIVE.has(task.state)) {
      document.dispatchEvent(new CustomEvent("labcloud:task-finished", { detail: task }));
      return false;
    }
    return true;
  }, INTERVAL_MS);
}

/** Show a task's state, progress, message and error inside a widget element. */
export function renderTask(el, task) {
  el.dataset.taskState = task.state;
  const bar = el.querySelector(".task-progress");
  if (bar) {
    bar.value = task.progress;
    bar.textContent = `${task.progress}%`;
  }
  const percent = el.querySelector(".task-percent");
  if (percent) percent.textContent = `${task.progress}%`;
  const message = el.querySelector(".task-message");
  if (message) message.textContent = task.message || "";
  const error = el.querySelector(".task-error");
  if (error) error.textContent = task.error ? `${task.error}` : "";
  setBadge(el.querySelector(".task-state .badge"), task.state, "task");
  const finished = el.querySelector(".task-finished");
  if (finished && task.finished_at) {
    finished.innerHTML = "";
    const time = document.createElement("time");
    time.setAttribute("datetime", task.finished_at);
    time.textContent = task.finished_at;
    finished.append(time);
    localizeTimes(finished);
  }
  const result = el.querySelector(".task-result");
  if (result && task.result) {
    result.innerHTML = "";
    const code = document.createElement("code");
    code.textContent = JSON.stringify(task.result);
    result.append(code);
  }
}

/** Add a row for a task started from this page to its task table (#tasks), from the page's row template. */
export function addTaskRow(task) {
  const template = document.getElementById("task-row-template");
  const body = document.querySelector("#tasks tbody");
  if (!template || !body || body.querySelector(`[data-task-id="${CSS.escape(task.id)}"]`)) return;
  const row = template.content.firstElementChild.cloneNode(true);
  row.dataset.taskId = task.id;
  const link = row.querySelector("td a");
  link.href = `/tasks/${encodeURIComponent(task.id)}`;
  link.textContent = task.kind;
  const time = document.createElement("time");
  time.setAttribute("datetime", task.created_at);
  time.textContent = task.created_at;
  row.lastElementChild.replaceChildren(time);
  renderTask(row, task);
  for (const empty of body.querySelectorAll("tr:not([data-task-id])")) empty.remove();
  body.prepend(row);
  localizeTimes(row);
}

/** Show a task in every widget of the page that follows it. */
export function renderEverywhere(task) {
  for (const widget of document.querySelectorAll(`[data-task-id="${CSS.escape(task.id)}"]`)) renderTask(widget, task);
}

/** Cancel buttons (migrations and drains): POST /api/v1/tasks/{id}/cancel; hidden once the task ends. */
function initCancelButtons() {
  for (const button of document.querySelectorAll("[data-cancel-task]")) {
    const status = document.getElementById(button.getAttribute("aria-describedby"));
    button.addEventListener("click", async () => {
      button.disabled = true;
      const res = await api("POST", `/api/v1/tasks/${encodeURIComponent(button.dataset.cancelTask)}/cancel`);
      status.textContent = res.ok ? "Cancel requested; the VM stays on its source host." : errorText(res);
      button.disabled = res.ok;
    });
    document.addEventListener("labcloud:task-finished", (event) => {
      if (event.detail.id === button.dataset.cancelTask) button.hidden = true;
    });
  }
}

/** Start watching every active task widget under root (and the page-level widget's siblings). */
export function initTasks(root = document) {
  initCancelButtons();
  const seen = new Set();
  for (const el of root.querySelectorAll("[data-task-id]")) {
    if (!ACTIVE.has(el.dataset.taskState)) continue;
    const id = el.dataset.taskId;
    if (seen.has(id)) continue;
    seen.add(id);
    watchTask(id, renderEverywhere, (res) => {
      for (const widget of document.querySelectorAll(`[data-task-id="${CSS.escape(id)}"]`)) {
        const error = widget.querySelector(".task-error");
        if (error && res.status !== 0) error.textContent = errorText(res);
      }
    });
  }
}

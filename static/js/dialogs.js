// Dialogs: open and close, the destroy confirmation, and the migrate dialog with its live progress bar.

import { api, errorText } from "./common.js";
import { addTaskRow, renderEverywhere, watchTask } from "./tasks.js";

/** Buttons and links with data-open-dialog open that <dialog>; links keep their page as a fallback. */
function initOpeners() {
  for (const opener of document.querySelectorAll("[data-open-dialog]")) {
    const dialog = document.getElementById(opener.dataset.openDialog);
    if (!dialog || typeof dialog.showModal !== "function") continue;
    opener.addEventListener("click", (event) => {
      event.preventDefault();
      if (opener.disabled) return;
      dialog.showModal();
      const first = dialog.querySelector("input:not([type=hidden]):not(:disabled), select, textarea, button");
      if (first) first.focus();
    });
  }
  for (const closer of document.querySelectorAll("[data-close-dialog]")) {
    closer.addEventListener("click", () => closer.closest("dialog").close());
  }
}

/** The migrate dialog: POST /api/v1/vms/{id}/migrate, then follow its task to 100%. */
function initMigrate(dialog) {
  const form = dialog.querySelector("#migrate-form");
  const submit = form.querySelector("#migrate-submit");
  const error = form.querySelector(".form-error");
  const progress = form.querySelector(".migrate-progress");
  const cancel = form.querySelector("#migrate-cancel");
  let running = false;
  let taskId = null;

  const fail = (message) => {
    error.textContent = message;
    error.hidden = false;
    submit.disabled = false;
    cancel.hidden = true;
    running = false;
  };

  // Cancel: POST /api/v1/tasks/{id}/cancel; the task then ends failed and the VM stays on its source host.
  cancel.addEventListener("click", async () => {
    if (!taskId) return;
    cancel.disabled = true;
    const res = await api("POST", `/api/v1/tasks/${encodeURIComponent(taskId)}/cancel`);
    if (!res.ok) fail(errorText(res));
    cancel.disabled = false;
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (running) return;
    running = true;
    error.hidden = true;
    submit.disabled = true;
    const host = form.querySelector("input[name=host]:checked");
    const body = {};
    if (host && host.value) body.host = host.value;
    const res = await api("POST", `/api/v1/vms/${encodeURIComponent(dialog.dataset.vmId)}/migrate`, body);
    if (res.status === 404 || res.status === 405) {
      fail("Migration is not available on this controller yet (it answered: " + errorText(res) +
           ") The VM stays where it is; it can be moved once labcloud's migration is installed.");
      dialog.dataset.migrate = "unavailable";
      return;
    }
    if (!res.ok || !res.data || !res.data.task) {
      fail(errorText(res));
      return;
    }
    const task = res.data.task;
    taskId = task.id;
    cancel.hidden = false;
    progress.hidden = false;
    progress.dataset.taskId = task.id;
    addTaskRow(task);
    renderEverywhere(task);
    watchTask(task.id, (t) => {
      renderEverywhere(t);
      if (t.state === "succeeded") {
        const to = t.result && t.result.to ? ` to ${t.result.to}` : "";
        progress.querySelector(".task-message").textContent = `Migrated${to}.`;
        cancel.hidden = true;
        running = false;
      } else if (t.state === "failed") {
        fail(`${t.error || "The migration failed."} The VM stays on its host.`);
      }
    }, (r) => fail(errorText(r)));
  });
}

export function initDialogs() {
  initOpeners();
  const migrate = document.getElementById("migrate-dialog");
  if (migrate) initMigrate(migrate);
}

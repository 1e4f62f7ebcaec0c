// Entry point of every page: local times, live tasks and VM states, dialogs, admin switches.

import { initAdmin } from "./admin.js";
import { localizeTimes } from "./common.js";
import { initDialogs } from "./dialogs.js";
import { initTasks } from "./tasks.js";
import { initVms } from "./vms.js";

function start() {
  localizeTimes();
  initTasks();
  initVms();
  initDialogs();
  initAdmin();
  document.documentElement.dataset.ready = "1"; // browser tests wait for this
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();

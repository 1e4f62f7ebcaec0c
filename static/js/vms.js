// VM pages: live states on the list and the detail page, and the create form's small helpers.

import { api, localizeTimes, poll, setBadge } from "./common.js";

const LIST_INTERVAL_MS = 3000;
const DETAIL_INTERVAL_MS = 2000;

function hostLink(host) {
  if (!host) return document.createTextNode("—");
  const a = document.createElement("a");
  a.href = `/hosts/${encodeURIComponent(host.name)}`;
  a.textContent = host.name;
  return a;
}

function showVm(root, vm) {
  for (const badge of root.querySelectorAll(".vm-state .badge")) setBadge(badge, vm.state);
  for (const cell of root.querySelectorAll(".vm-host")) {
    if (cell.dataset.hostId === (vm.host ? vm.host.id : "")) continue;
    cell.dataset.hostId = vm.host ? vm.host.id : "";
    cell.replaceChildren(hostLink(vm.host));
  }
  for (const cell of root.querySelectorAll(".vm-ips")) cell.textContent = vm.ips.length ? vm.ips.join(", ") : "—";
}

/** The VM list: states, hosts and addresses follow the API; destroyed VMs leave the table. */
function initList(table) {
  const status = document.getElementById("vm-count");
  poll(async () => {
    const res = await api("GET", "/api/v1/vms");
    if (!res.ok) return res.status !== 401;
    const byId = new Map(res.data.vms.map((vm) => [vm.id, vm]));
    const gone = [];
    for (const row of table.querySelectorAll("tr[data-vm-id]")) {
      const vm = byId.get(row.dataset.vmId);
      if (vm) {
        showVm(row, vm);
      } else {
        gone.push(row.querySelector("th a") ? row.querySelector("th a").textContent : "a VM");
        row.remove();
      }
    }
    if (gone.length && status) {
      const left = table.querySelectorAll("tr[data-vm-id]").length;
      status.textContent = `${gone.join(", ")} ${gone.length === 1 ? "was" : "were"} destroyed; ${left} VM${left === 1 ? "" : "s"} shown.`;
    }
    return true;
  }, LIST_INTERVAL_MS);
}

/** Enable the action buttons that make sense in this state (data-when lists the states). */
function updateActions(state, gone) {
  for (const button of document.querySelectorAll("[data-when]")) {
    button.disabled = gone || !button.dataset.when.split(" ").includes(state);
  }
}

/** The VM detail page: state, host and addresses follow the API; a 404 means it was destroyed. */
function initDetail(head) {
  const id = head.dataset.vmId;
  let gone = false;
  const refresh = async () => {
    if (gone) return false;
    const res = await api("GET", `/api/v1/vms/${encodeURIComponent(id)}`);
    if (res.status === 404) {
      gone = true;
      document.getElementById("vm-gone").hidden = false;
      for (const badge of document.querySelectorAll(".vm-state .badge")) setBadge(badge, "destroyed");
      updateActions("", true);
      return false;
    }
    if (!res.ok) return res.status !== 401;
    const vm = res.data.vm;
    showVm(document, vm);
    updateActions(vm.state, false);
    const updated = document.querySelector(".vm-updated");
    if (updated && vm.updated_at && !updated.querySelector(`time[datetime="${vm.updated_at}"]`)) {
      const time = document.createElement("time");
      time.setAttribute("datetime", vm.updated_at);
      time.textContent = vm.updated_at;
      updated.replaceChildren(time);
      localizeTimes(updated);
    }
    return true;
  };
  poll(refresh, DETAIL_INTERVAL_MS);
  document.addEventListener("labcloud:task-finished", (event) => {
    if (event.detail.vm_id === id) refresh();
  });
}

/** The create form: typing an address chooses "this address"; the hint shows the chosen network's range. */
function initCreateForm(form) {
  const ip = form.querySelector("#ip");
  const chosen = form.querySelector("#ip_mode-chosen");
  const auto = form.querySelector("#ip_mode-auto");
  const network = form.querySelector("#network");
  const hint = form.querySelector("#ip-hint");
  ip.addEventListener("input", () => { if (ip.value.trim()) chosen.checked = true; });
  auto.addEventListener("change", () => { if (auto.checked) ip.value = ""; });
  chosen.addEventListener("change", () => { if (chosen.checked) ip.focus(); });
  network.addEventListener("change", () => {
    const option = network.selectedOptions[0];
    hint.textContent = option && option.dataset.range
      ? `Range ${option.dataset.range} in ${option.dataset.cidr}; ${option.dataset.free} free.`
      : "An address inside the network's range.";
  });
  const summary = document.getElementById("error-summary");
  if (summary) summary.focus();
}

export function initVms() {
  const table = document.querySelector("[data-vm-list]");
  if (table) initList(table);
  const head = document.querySelector("[data-vm-detail]");
  if (head) initDetail(head);
  const form = document.getElementById("create-form");
  if (form) initCreateForm(form);
}

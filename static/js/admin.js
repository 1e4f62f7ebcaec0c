// Admin switches that call the API directly: host maintenance and creating a network.

import { api, errorText, sentence, setBadge } from "./common.js";
import { watchTask } from "./tasks.js";

function hostBadges(hostId) {
  return document.querySelectorAll(`[data-host-id="${CSS.escape(hostId)}"] .host-state .badge, .host-state[data-host-id="${CSS.escape(hostId)}"] .badge`);
}

async function refreshHost(button) {
  const res = await api("GET", `/api/v1/hosts/${encodeURIComponent(button.dataset.hostId)}`);
  if (!res.ok) return;
  const state = res.data.host.state;
  for (const badge of hostBadges(button.dataset.hostId)) setBadge(badge, state);
  const on = state === "maintenance";
  button.dataset.enable = on ? "false" : "true";
  button.textContent = on ? "Leave maintenance" : "Enter maintenance";
}

/** Maintenance: POST /api/v1/hosts/{id}/maintenance {"enabled"}; a task (drain) is followed to its end. */
function initMaintenance(button) {
  const status = document.getElementById(`maint-status-${button.dataset.hostId}`);
  button.addEventListener("click", async () => {
    const enable = button.dataset.enable === "true";
    const name = button.dataset.hostName;
    const question = enable
      ? `Put ${name} in maintenance? Its VMs are moved to other hosts by live migration and no new VM lands on it.`
      : `Take ${name} out of maintenance? New VMs may be placed on it again.`;
    if (!window.confirm(question)) return;
    button.disabled = true;
    status.classList.remove("error");
    status.textContent = enable ? "Asking the controller to drain the host…" : "Asking the controller…";
    const res = await api("POST", `/api/v1/hosts/${encodeURIComponent(button.dataset.hostId)}/maintenance`, { enabled: enable });
    if (res.status === 404 || res.status === 405) {
      status.classList.add("error");
      status.textContent = "Maintenance mode is not available on this controller yet. Until it is, move VMs away by hand and keep the host out of use.";
      button.disabled = false;
      return;
    }
    if (!res.ok) {
      status.classList.add("error");
      status.textContent = errorText(res);
      button.disabled = false;
      return;
    }
    const task = res.data && res.data.task;
    if (!task) {
      status.textContent = enable ? "In maintenance." : "Back in service.";
      button.disabled = false;
      refreshHost(button);
      return;
    }
    watchTask(task.id, (t) => {
      status.textContent = `${t.state}: ${t.progress}% ${t.message || ""}`;
      if (t.state === "succeeded" || t.state === "failed") {
        if (t.error) { status.classList.add("error"); status.textContent = sentence(t.error); }
        button.disabled = false;
        refreshHost(button);
      }
    }, (r) => { status.textContent = errorText(r); button.disabled = false; });
  });
}

// Which field an error of POST /api/v1/networks is about: first match wins.
const NETWORK_FIELDS = [
  [/^'name'|^a network named/, "name"], [/bridge/, "bridge"], [/cidr/i, "cidr"], [/^range start/, "range_start"],
  [/^range end/, "range_end"], [/'range'/, "range_start"], [/gateway/, "gateway"], [/^dns|'dns'/, "dns"],
  [/vlan_id/, "vlan_id"],
];

function networkBody(form) {
  const value = (name) => form.elements[name].value.trim();
  const body = { name: value("name"), bridge: value("bridge"), cidr: value("cidr"), range: [value("range_start"), value("range_end")] };
  if (value("gateway")) body.gateway = value("gateway");
  const dns = value("dns").split(/[\s,]+/).filter(Boolean);
  if (dns.length) body.dns = dns;
  if (value("vlan_id")) body.vlan_id = /^\d+$/.test(value("vlan_id")) ? Number(value("vlan_id")) : value("vlan_id");
  if (value("interface")) body.interface = value("interface");
  return body;
}

/** Create a network through POST /api/v1/networks; errors show at their field. */
function initNetworkForm(form) {
  const formError = form.querySelector(".form-error");
  const setError = (field, message) => {
    const input = form.elements[field];
    const p = document.getElementById(`net-${field}-error`);
    input.setAttribute("aria-invalid", "true");
    p.textContent = message;
    p.hidden = false;
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    formError.hidden = true;
    for (const p of form.querySelectorAll(".field-error")) p.hidden = true;
    for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
    let first = null;
    for (const input of form.querySelectorAll("[required]")) {
      if (!input.value.trim()) {
        setError(input.name, `Enter the ${input.labels[0].textContent.toLowerCase()}.`);
        first = first || input;
      }
    }
    if (first) { first.focus(); return; }
    const res = await api("POST", form.dataset.api, networkBody(form));
    if (res.ok) {
      window.location.assign(`/networks/${encodeURIComponent(res.data.network.name)}`);
      return;
    }
    const message = res.data && res.data.error ? res.data.error.message : "";
    const match = NETWORK_FIELDS.find(([pattern]) => pattern.test(message));
    if (match) {
      setError(match[1], errorText(res));
      form.elements[match[1]].focus();
    } else {
      formError.textContent = `Nothing was created. ${errorText(res)}`;
      formError.hidden = false;
    }
  });
}

export function initAdmin() {
  for (const button of document.querySelectorAll(".maint-toggle")) initMaintenance(button);
  const form = document.getElementById("network-form");
  if (form) initNetworkForm(form);
}

// The VM console: noVNC in the page, connected to the controller's console proxy.
// POST /api/v1/vms/{id}/console answers {"console": {"url": "wss://…", "page", "expires_at", "password": null}}
// with a single-use, 60-second token in the URL; the browser's session cookie proves the user on connect.

import { api, errorText } from "./common.js";

const section = document.getElementById("console");
const status = document.getElementById("console-status");
const screen = document.getElementById("console-screen");
const again = document.getElementById("console-connect");
const cad = document.getElementById("console-cad");
let rfb = null;

function say(message, state) {
  status.textContent = message;
  section.dataset.console = state;
}

function socketUrl(url) {
  if (/^wss?:\/\//.test(url)) return url;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}${url.startsWith("/") ? "" : "/"}${url}`;
}

async function loadNoVnc() {
  try {
    const module = await import(section.dataset.novnc);
    return module.default;
  } catch (err) {
    return null;
  }
}

async function connect() {
  again.hidden = true;
  // Load noVNC before asking for a token: a token is single-use and should not be spent for nothing.
  const RFB = await loadNoVnc();
  if (!RFB) {
    say("The noVNC library is not installed on this controller. An admin runs scripts/ui-assets (it installs " +
        "@novnc/novnc from npm into static/node_modules), then reload this page.", "no-novnc");
    return;
  }
  say("Asking the controller for a console session…", "asking");
  const res = await api("POST", `/api/v1/vms/${encodeURIComponent(section.dataset.vmId)}/console`);
  if (res.status === 409) {
    say(errorText(res), "not-running");
    again.hidden = false;
    return;
  }
  if (!res.ok || !res.data || !res.data.console) {
    say(errorText(res), "error");
    again.hidden = false;
    return;
  }
  const info = res.data.console;
  const options = info.password ? { credentials: { password: info.password } } : {};
  say("Connecting…", "connecting");
  rfb = new RFB(screen, socketUrl(info.url), options);
  rfb.scaleViewport = true;
  rfb.focusOnClick = true;
  rfb.addEventListener("connect", () => {
    say("Connected. Click the screen (or focus it with Tab) to type into the VM.", "connected");
    cad.disabled = false;
  });
  rfb.addEventListener("disconnect", (event) => {
    cad.disabled = true;
    say(event.detail && event.detail.clean ? "Disconnected." :
        "The connection to the console was lost. Check that the VM is running, then connect again.", "disconnected");
    again.hidden = false;
  });
  rfb.addEventListener("securityfailure", (event) => {
    say(`The console refused the session (${event.detail.reason || "security failure"}). Connect again for a new one.`,
        "refused");
  });
}

again.addEventListener("click", connect);
cad.addEventListener("click", () => { if (rfb) rfb.sendCtrlAltDel(); });
connect();

// Shared helpers: calling the JSON API with the session, local times, polling, banners.

/** The page's CSRF token (a <meta> in base.html); state-changing API calls send it as X-CSRFToken. */
export function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

/**
 * Call the API with the session cookie. Resolves to {status, ok, data}; never throws on HTTP errors.
 * A network failure resolves to status 0 with an error document saying what to do.
 */
export async function api(method, url, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET" && method !== "HEAD") headers["X-CSRFToken"] = csrfToken();
  const opts = { method, headers, credentials: "same-origin" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(url, opts);
  } catch (err) {
    return { status: 0, ok: false, data: { error: { code: "network", message: "the controller did not answer; check your connection and try again" } } };
  }
  let data = null;
  try { data = await resp.json(); } catch (err) { data = null; }
  if (resp.status === 401) sessionEnded();
  return { status: resp.status, ok: resp.ok, data };
}

/** The human message of an API answer, as a sentence. */
export function errorText(res) {
  const msg = res && res.data && res.data.error ? res.data.error.message : `the controller answered HTTP ${res ? res.status : "?"}`;
  return sentence(msg);
}

/** Capitalise the first letter and end with a period. */
export function sentence(text) {
  const s = String(text || "").trim();
  if (!s) return s;
  return s[0].toUpperCase() + s.slice(1) + (/[.!?]$/.test(s) ? "" : ".");
}

let ended = false;

/** Tell the person their session is over, once, and stop live updates. */
export function sessionEnded() {
  if (ended) return;
  ended = true;
  showBanner("Your session has ended, so this page no longer updates. Log in again to go on.", "/login?next=" +
    encodeURIComponent(location.pathname + location.search));
}

/** Show the page-wide live banner with a message and an optional link. */
export function showBanner(message, href) {
  const banner = document.getElementById("live-banner");
  if (!banner) return;
  banner.textContent = message + " ";
  if (href) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = "Log in";
    banner.append(a);
  }
  banner.hidden = false;
}

/**
 * Run fn every intervalMs while the page is visible and the session lasts; fn returns false to stop.
 * Returns a function that stops the polling.
 */
export function poll(fn, intervalMs) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    if (stopped || ended) return;
    if (document.visibilityState === "visible") {
      let again = true;
      try { again = (await fn()) !== false; } catch (err) { again = true; }
      if (!again) { stopped = true; return; }
    }
    timer = setTimeout(tick, intervalMs);
  };
  timer = setTimeout(tick, intervalMs);
  return () => { stopped = true; clearTimeout(timer); };
}

const timeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

/** Show every <time datetime> under root in the browser's time zone; the UTC value stays in the title. */
export function localizeTimes(root = document) {
  for (const el of root.querySelectorAll("time[datetime]:not([data-local])")) {
    const when = new Date(el.getAttribute("datetime"));
    if (Number.isNaN(when.getTime())) continue;
    el.textContent = timeFormat.format(when);
    el.title = `${el.getAttribute("datetime")} (UTC: ${when.toISOString()})`;
    el.dataset.local = "1";
  }
}

/** Return a <time> element for an ISO string, already localised. */
export function timeElement(iso) {
  const el = document.createElement("time");
  el.setAttribute("datetime", iso);
  el.textContent = iso;
  localizeTimes(el.parentNode || wrap(el));
  return el;
}

function wrap(el) {
  const div = document.createElement("div");
  div.append(el);
  return div;
}

/** Replace a state badge's text and colour class (kind is "state" or "task"). */
export function setBadge(badge, state, kind = "state") {
  if (!badge) return;
  for (const cls of [...badge.classList]) if (cls.startsWith(`${kind}-`)) badge.classList.remove(cls);
  badge.classList.add(`${kind}-${state}`);
  badge.textContent = state;
}

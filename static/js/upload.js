// Image upload: the file is sent as the raw body of POST /api/v1/images/upload with XMLHttpRequest, whose
// upload progress events drive the progress bar. The CSRF token goes in the X-CSRFToken header.

import { csrfToken, sentence } from "./common.js";

const form = document.getElementById("upload-form");
const file = document.getElementById("up-file");
const name = document.getElementById("up-name");
const format = document.getElementById("up-format");
const box = form.querySelector(".upload-progress");
const bar = document.getElementById("up-progress");
const status = document.getElementById("up-status");
const error = document.getElementById("up-error");
const submit = document.getElementById("up-submit");

function mib(bytes) {
  return (bytes / 1048576).toFixed(1);
}

function fail(message) {
  error.textContent = sentence(message);
  error.hidden = false;
  form.dataset.upload = "failed";
  submit.disabled = false;
}

file.addEventListener("change", () => {
  const f = file.files[0];
  if (!f) return;
  if (!name.value) name.value = f.name.replace(/\.(qcow2|img|raw|bin)$/i, "").replace(/[^A-Za-z0-9._-]/g, "-");
  if (/\.(raw|img|bin)$/i.test(f.name)) format.value = "raw";
});

form.addEventListener("submit", (event) => {
  event.preventDefault();
  error.hidden = true;
  const f = file.files[0];
  if (!f) return fail("choose the image file to upload");
  if (!name.value.trim()) return fail("give the new image a name");
  const params = new URLSearchParams({ name: name.value.trim(), format: format.value,
    os: document.getElementById("up-os").value.trim(), cloud_init: document.getElementById("up-ci").checked ? "1" : "0" });
  const xhr = new XMLHttpRequest();
  xhr.open("POST", `/api/v1/images/upload?${params}`);
  xhr.setRequestHeader("X-CSRFToken", csrfToken());
  xhr.setRequestHeader("Content-Type", "application/octet-stream");
  xhr.setRequestHeader("Accept", "application/json");
  xhr.upload.addEventListener("progress", (e) => {
    if (!e.lengthComputable) return;
    const pct = Math.floor((e.loaded / e.total) * 100);
    bar.value = pct;
    bar.textContent = `${pct}%`;
    status.textContent = `${pct}%: ${mib(e.loaded)} of ${mib(e.total)} MiB sent`;
  });
  xhr.upload.addEventListener("load", () => {
    status.textContent = "Sent; the controller is checking the image with qemu-img and computing its checksum…";
  });
  xhr.addEventListener("load", () => {
    let data = null;
    try { data = JSON.parse(xhr.responseText); } catch (err) { data = null; }
    if (xhr.status === 201 && data && data.image) {
      bar.value = 100;
      form.dataset.upload = "done";
      status.textContent = `Uploaded ${data.image.name} (SHA-256 ${data.image.sha256.slice(0, 12)}…). Reloading the list…`;
      setTimeout(() => location.reload(), 800);
      return;
    }
    fail(data && data.error ? data.error.message : `the controller answered HTTP ${xhr.status}`);
  });
  xhr.addEventListener("error", () => fail("the upload was interrupted; check your connection and try again"));
  box.hidden = false;
  bar.value = 0;
  submit.disabled = true;
  form.dataset.upload = "sending";
  status.textContent = "Starting the upload…";
  xhr.send(f);
});

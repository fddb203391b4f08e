// Resumable uploads for the submit page (tus 1.0.0: core, creation, termination). Optional:
// without this script the form sends its files itself, as it always did. With it, each chosen
// file goes first through /uploads in chunks, resuming from the server's offset after a broken
// connection (retried with growing pauses for as long as the page is open); then the form is
// sent naming the finished uploads in hidden "uploads" fields instead of carrying the files.
// No framework, no third-party code; every text on screen comes from the page (translated).
"use strict";
(function () {
  var box = document.getElementById("resumable");
  var form = document.getElementById("submit-form");
  if (!box || !form || !window.XMLHttpRequest || !window.Blob || !Blob.prototype.slice ||
      !window.TextEncoder || !window.Promise) {
    return;
  }
  var CHUNK = 4 * 1024 * 1024;  // a PATCH at most; a broken one still keeps what arrived
  var STALL_MS = 60000;         // no progress for this long: give up on the connection
  var MAX_PAUSE_MS = 30000;
  var endpoint = box.getAttribute("data-endpoint");
  var digits = box.getAttribute("data-digits") || "0123456789";
  var token = form.querySelector("input[name=csrf_token]").value;
  var bar = document.getElementById("upload-progress");
  var status = document.getElementById("upload-status");
  var button = form.querySelector("button[type=submit]");
  var sending = false;

  document.getElementById("resume-off").hidden = true;
  document.getElementById("resume-on").hidden = false;

  function local(text) {
    return String(text).replace(/[0-9]/g, function (d) { return digits.charAt(+d); });
  }
  function mib(bytes) {
    var text = (bytes / 1048576).toFixed(bytes >= 10 * 1048576 ? 0 : 1);
    return box.getAttribute("data-mib").replace("{n}", local(text));
  }
  function show(done, total) {
    var percent = total ? Math.floor(done * 100 / total) : 100;
    bar.max = 100;
    bar.value = percent;
    status.textContent = box.getAttribute("data-progress").replace("{done}", mib(done))
      .replace("{total}", mib(total)).replace("{percent}", local(percent));
  }
  function say(name) { status.textContent = box.getAttribute(name); }
  function b64(text) {
    var bytes = new TextEncoder().encode(text), binary = "";
    for (var i = 0; i < bytes.length; i++) { binary += String.fromCharCode(bytes[i]); }
    return btoa(binary);
  }
  function pause(ms) { return new Promise(function (ok) { setTimeout(ok, ms); }); }

  // One tus request; resolves with the XHR whatever its status (0: no answer at all).
  function request(method, url, headers, body, progress) {
    return new Promise(function (resolve) {
      var xhr = new XMLHttpRequest(), watchdog = null;
      function arm() {
        clearTimeout(watchdog);
        watchdog = setTimeout(function () { xhr.abort(); }, STALL_MS);
      }
      xhr.open(method, url);
      xhr.setRequestHeader("Tus-Resumable", "1.0.0");
      xhr.setRequestHeader("X-CSRF-Token", token);
      Object.keys(headers).forEach(function (k) { xhr.setRequestHeader(k, headers[k]); });
      if (progress) {
        xhr.upload.onprogress = function (event) { arm(); progress(event.loaded); };
      }
      xhr.onloadend = function () { clearTimeout(watchdog); resolve(xhr); };
      arm();
      xhr.send(body);
    });
  }

  function Failed(status) { this.status = status; }

  async function create(file, field) {
    var xhr = await request("POST", endpoint, {
      "Upload-Length": String(file.size),
      "Upload-Metadata": "filename " + b64(file.name) + ",filetype " + b64(file.type) +
        ",field " + b64(field)
    }, null);
    if (xhr.status === 201) {
      return new URL(xhr.getResponseHeader("Location"), location.href).pathname;
    }
    if (xhr.status === 0 || xhr.status === 503 || xhr.status >= 500 && xhr.status !== 507) {
      return null;  // try again later
    }
    throw new Failed(xhr.status);
  }

  // Send one file from wherever the server is; resolves with its upload id.
  async function send(file, field, before, total) {
    var url = null, offset = 0, pauseMs = 1000, known = false;
    for (;;) {
      if (url === null) {
        url = await create(file, field);
        offset = 0;
        known = url !== null;
      } else if (!known) {
        var head = await request("HEAD", url, {}, null);
        if (head.status === 404) { url = null; continue; }  // lost (a restart): start again
        if (head.status === 403) { throw new Failed(403); }
        known = head.status === 200;
        if (known) { offset = +head.getResponseHeader("Upload-Offset"); }
      }
      if (known && offset === file.size) { return url.split("/").pop(); }
      if (known) {
        var start = offset;
        var xhr = await request("PATCH", url, {
          "Upload-Offset": String(start),
          "Content-Type": "application/offset+octet-stream"
        }, file.slice(start, start + CHUNK), function (loaded) {
          show(before + start + loaded, total);
        });
        if (xhr.status === 204) {
          offset = +xhr.getResponseHeader("Upload-Offset");
          show(before + offset, total);
          pauseMs = 1000;
          continue;
        }
        if (xhr.status === 404) { url = null; continue; }
        if ([403, 413, 415, 507].indexOf(xhr.status) >= 0) { throw new Failed(xhr.status); }
        known = false;  // 409, 408, 503, no answer: ask the server where it is
      }
      say("data-retrying");
      await pause(pauseMs);
      pauseMs = Math.min(pauseMs * 2, MAX_PAUSE_MS);
    }
  }

  async function sendAll(inputs) {
    var files = [], total = 0, done = 0, ids = [];
    inputs.forEach(function (input) {
      Array.prototype.forEach.call(input.files, function (file) {
        files.push({ file: file, field: input.name });
        total += file.size;
      });
    });
    box.hidden = false;
    show(0, total);
    for (var i = 0; i < files.length; i++) {
      ids.push(await send(files[i].file, files[i].field, done, total));
      done += files[i].file.size;
    }
    inputs.forEach(function (input) { input.disabled = true; });  // the files went already
    ids.forEach(function (id) {
      var hidden = document.createElement("input");
      hidden.type = "hidden";
      hidden.name = "uploads";
      hidden.value = id;
      form.appendChild(hidden);
    });
    form.submit();
  }

  form.addEventListener("submit", function (event) {
    var inputs = Array.prototype.filter.call(form.querySelectorAll("input[type=file]"),
      function (input) { return input.files && input.files.length > 0; });
    if (sending) { event.preventDefault(); return; }
    if (inputs.length === 0) { return; }  // nothing to upload: the form goes as it is
    event.preventDefault();
    sending = true;
    button.disabled = true;
    sendAll(inputs).catch(function () {
      say("data-failed");
      sending = false;
      button.disabled = false;
    });
  });
})();

// kauth's one script: runs the passkey ceremony of a form marked data-passkey ("create" or
// "get") when it is submitted, then posts the browser's answer in its `credential` field.
// The options come from the server (data-options, JSON with base64url binary values).
(function () {
  "use strict";
  function bytes(text) {
    var b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) b64 += "=";
    var raw = atob(b64), out = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out.buffer;
  }
  function text(buffer) {
    var raw = "", view = new Uint8Array(buffer);
    for (var i = 0; i < view.length; i++) raw += String.fromCharCode(view[i]);
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function ids(list) {
    (list || []).forEach(function (c) { c.id = bytes(c.id); });
  }
  async function ceremony(form) {
    var options = JSON.parse(form.dataset.options).publicKey;
    options.challenge = bytes(options.challenge);
    var created = form.dataset.passkey === "create", credential, r, answer;
    if (created) {
      options.user.id = bytes(options.user.id);
      ids(options.excludeCredentials);
      credential = await navigator.credentials.create({ publicKey: options });
    } else {
      ids(options.allowCredentials);
      credential = await navigator.credentials.get({ publicKey: options });
    }
    r = credential.response;
    answer = {
      id: credential.id, rawId: text(credential.rawId), type: credential.type,
      extensions: credential.getClientExtensionResults(),
      response: { clientDataJSON: text(r.clientDataJSON) }
    };
    if (created) {
      answer.response.attestationObject = text(r.attestationObject);
      if (r.getTransports) answer.response.transports = r.getTransports();
    } else {
      answer.response.authenticatorData = text(r.authenticatorData);
      answer.response.signature = text(r.signature);
      answer.response.userHandle = r.userHandle ? text(r.userHandle) : null;
    }
    return JSON.stringify(answer);
  }
  document.querySelectorAll("form[data-passkey]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (form.elements.credential.value) return;
      event.preventDefault();
      var status = form.querySelector("[role=status]");
      if (!window.PublicKeyCredential) {
        status.textContent = "This browser cannot use passkeys.";
        return;
      }
      status.textContent = "Follow your browser's prompt…";
      ceremony(form).then(function (answer) {
        form.elements.credential.value = answer;
        form.submit();
      }, function (e) {
        status.textContent = "The passkey was not used (" + e.name + "). Try again, or use another way in.";
      });
    });
  });
})();

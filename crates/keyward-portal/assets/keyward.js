// keyward portal: the WebAuthn ceremonies behind the sign-in and enrollment pages.
// Plain browser JavaScript, no dependencies, served by keyward itself.
(function () {
  'use strict';

  function toBuf(s) {
    s = s.replace(/-/g, '+').replace(/_/g, '/');
    while (s.length % 4) s += '=';
    const bin = atob(s);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }

  function fromBuf(buf) {
    const bytes = new Uint8Array(buf);
    let bin = '';
    for (let i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
    return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }

  function say(message, kind) {
    const el = document.getElementById('status');
    if (!el) return;
    el.textContent = message;
    el.className = 'status' + (kind ? ' ' + kind : '');
  }

  async function post(url, body) {
    const res = await fetch(url, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    let data = {};
    try { data = await res.json(); } catch (_) { /* not JSON */ }
    if (!res.ok) throw new Error(data.error || ('The server refused the request (' + res.status + ').'));
    return data;
  }

  // What the browser's own errors mean for the person in front of it.
  function explain(err) {
    switch (err && err.name) {
      case 'NotAllowedError': return 'The request was cancelled or timed out. Try again.';
      case 'InvalidStateError': return 'This authenticator is already registered.';
      case 'SecurityError': return 'This page is not on the address keyward expects; open the sign-in link again.';
      case 'NotSupportedError': return 'This browser or authenticator does not support passkeys.';
      default: return (err && err.message) || 'Something went wrong. Try again.';
    }
  }

  function registrationJSON(cred) {
    return {
      id: cred.id,
      rawId: fromBuf(cred.rawId),
      type: cred.type,
      response: {
        attestationObject: fromBuf(cred.response.attestationObject),
        clientDataJSON: fromBuf(cred.response.clientDataJSON),
        transports: cred.response.getTransports ? cred.response.getTransports() : undefined,
      },
      extensions: cred.getClientExtensionResults(),
    };
  }

  function assertionJSON(cred) {
    const r = cred.response;
    return {
      id: cred.id,
      rawId: fromBuf(cred.rawId),
      type: cred.type,
      response: {
        authenticatorData: fromBuf(r.authenticatorData),
        clientDataJSON: fromBuf(r.clientDataJSON),
        signature: fromBuf(r.signature),
        userHandle: r.userHandle ? fromBuf(r.userHandle) : null,
      },
      extensions: cred.getClientExtensionResults(),
    };
  }

  async function busy(buttons, work) {
    buttons.forEach(function (b) { b.disabled = true; });
    try {
      await work();
    } catch (err) {
      say(explain(err), 'error');
    } finally {
      buttons.forEach(function (b) { b.disabled = false; });
    }
  }

  async function signIn(section, username) {
    say('Waiting for your passkey…');
    const options = await post('/.keyward/login/begin', { rd: section.dataset.rd, username: username || null });
    const pk = options.publicKey;
    pk.challenge = toBuf(pk.challenge);
    (pk.allowCredentials || []).forEach(function (c) { c.id = toBuf(c.id); });
    const cred = await navigator.credentials.get({ publicKey: pk });
    say('Checking…');
    const done = await post('/.keyward/login/finish', assertionJSON(cred));
    say('Signed in.', 'ok');
    window.location.assign(done.redirect);
  }

  async function enroll(section, kind) {
    const name = document.getElementById('device-name').value;
    say('Follow your browser’s prompt to create the key…');
    const options = await post('/.keyward/enroll/begin', {
      invite: section.dataset.invite || null,
      name: name,
      kind: kind,
      rd: section.dataset.rd,
    });
    const pk = options.publicKey;
    pk.challenge = toBuf(pk.challenge);
    pk.user.id = toBuf(pk.user.id);
    (pk.excludeCredentials || []).forEach(function (c) { c.id = toBuf(c.id); });
    const cred = await navigator.credentials.create({ publicKey: pk });
    say('Registering…');
    const done = await post('/.keyward/enroll/finish', registrationJSON(cred));
    say('Device enrolled.', 'ok');
    window.location.assign(done.redirect);
  }

  document.addEventListener('DOMContentLoaded', function () {
    const section = document.querySelector('section[data-flow]');
    if (!section) return;
    if (!window.PublicKeyCredential) {
      say('This browser does not support passkeys. Use a current browser.', 'error');
      return;
    }
    const buttons = Array.prototype.slice.call(section.querySelectorAll('button'));
    if (section.dataset.flow === 'signin') {
      const button = document.getElementById('signin');
      if (button) button.addEventListener('click', function () { busy(buttons, function () { return signIn(section, null); }); });
      const named = document.getElementById('signin-named');
      if (named) {
        named.addEventListener('submit', function (ev) {
          ev.preventDefault();
          const username = document.getElementById('username').value;
          busy(buttons, function () { return signIn(section, username); });
        });
      }
    } else if (section.dataset.flow === 'enroll') {
      const passkey = document.getElementById('enroll-passkey');
      if (passkey) passkey.addEventListener('click', function () { busy(buttons, function () { return enroll(section, 'passkey'); }); });
      const key = document.getElementById('enroll-key');
      if (key) key.addEventListener('click', function () { busy(buttons, function () { return enroll(section, 'security-key'); }); });
    }
  });
})();

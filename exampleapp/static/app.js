// The example app's frontend: asks its own backend for a link session or
// a verification, opens kluis's page with the drop-in, and shows what the
// drop-in reports. Its backend exchanges the public token.
(function () {
  'use strict';
  var results = window.exampleResults = [];
  var handle = null;

  function show(text) { document.getElementById('result').textContent = text; }
  function note(kind, detail) {
    results.push({ kind: kind, detail: detail });
    var li = document.createElement('li');
    li.textContent = kind + (detail ? ': ' + detail : '');
    document.getElementById('events').appendChild(li);
  }
  function api(method, path, body) {
    return fetch(path, { method: method, headers: { 'Content-Type': 'application/json' }, body: body ? JSON.stringify(body) : undefined })
      .then(function (r) { return r.json().then(function (j) { if (!r.ok) { throw new Error(j.error || r.status); } return j; }); });
  }

  function link(mode) {
    var provider = document.getElementById('provider');
    api('POST', '/api/link-session', { provider: provider ? provider.value : '' }).then(function (s) {
      handle = window.KluisLink.open({
        url: s.hosted_link_url,
        mode: mode,
        container: document.getElementById('frame'),
        onEvent: function (name) { note('event', name); },
        onExit: function (err) { note('exit', err && err.code); show('The user left without linking.'); },
        onSuccess: function (publicToken, metadata) {
          note('success', metadata.link_session_id);
          api('POST', '/api/exchange', { link_session_id: metadata.link_session_id, public_token: publicToken })
            .then(function (item) { note('linked', item.accounts); show('Linked ' + item.institution + ': ' + item.accounts); })
            .catch(function (e) { show('Exchange failed: ' + e.message); });
        }
      });
    }).catch(function (e) { show('Could not start: ' + e.message); });
  }

  function verify() {
    api('POST', '/api/verification', {}).then(function (v) {
      document.getElementById('statement').textContent = v.deposits && v.deposits.length
        ? 'Your sandbox bank statement shows two deposits: ' + v.deposits.join('¢ and ') + '¢.'
        : 'The sandbox bank has not posted the deposits yet.';
      handle = window.KluisLink.open({
        url: v.hosted_verify_url, mode: 'popup',
        onEvent: function (name) { note('event', name); },
        onExit: function (err) { note('exit', err && err.code); }
      });
    }).catch(function (e) { show('Could not start: ' + e.message); });
  }

  // Back from the redirect flow: the backend reads the public token from
  // kluis (GET /v1/link/sessions/{id}) and exchanges it.
  var back = window.KluisLink.fromRedirect();
  if (back) {
    note('redirect', back.status);
    if (back.status === 'success') {
      api('POST', '/api/exchange', { link_session_id: back.link_session_id })
        .then(function (item) { note('linked', item.accounts); show('Linked ' + item.institution + ': ' + item.accounts); })
        .catch(function (e) { show('Exchange failed: ' + e.message); });
    } else {
      show('The user left without linking.');
    }
  }

  ['link-popup', 'link-iframe', 'link-redirect'].forEach(function (id) {
    var b = document.getElementById(id);
    b.addEventListener('click', function () { link(b.getAttribute('data-mode')); });
  });
  document.getElementById('link-close').addEventListener('click', function () { if (handle) { handle.close(); } });
  document.getElementById('verify').addEventListener('click', verify);
})();

// kluis hosted pages: hand the result to the app that opened the page, and
// move focus where a keyboard or screen-reader user needs it. No inline
// script anywhere: the Content-Security-Policy allows only this file (and,
// on the Plaid step, Plaid Link's own script).
(function () {
  'use strict';
  var root = document.getElementById('kluis-page');
  if (!root) { return; }
  // The app's origin, checked by kluis against its configured origins
  // before it was written here; "" when the page was opened directly.
  var origin = root.getAttribute('data-origin') || '';
  var app = window.opener || (window.parent !== window ? window.parent : null);

  // post sends a message to the app's window, to its origin only: a page
  // of any other origin in that window receives nothing.
  function post(msg) {
    if (!origin || !app) { return; }
    msg.source = 'kluis-link';
    app.postMessage(msg, origin);
  }

  // The app may ask the page to close (the drop-in's handle.close()); a
  // message from any other origin or window is ignored.
  window.addEventListener('message', function (e) {
    if (!origin || e.origin !== origin || e.source !== app) { return; }
    var d = e.data;
    if (d && d.source === 'kluis-app' && d.type === 'exit') {
      var b = document.querySelector('form.exit button');
      if (b) { b.click(); }
    }
  });

  var name = root.getAttribute('data-event');
  if (name) { post({ type: 'event', name: name }); }

  var handoff = root.getAttribute('data-handoff');
  var meta = {};
  try { meta = JSON.parse(root.getAttribute('data-metadata') || '{}'); } catch (err) { meta = {}; }
  if (handoff === 'success') {
    post({ type: 'success', public_token: root.getAttribute('data-public-token'), metadata: meta });
  } else if (handoff === 'exit') {
    post({ type: 'exit', error: meta.error || null, metadata: meta });
  }

  // Focus: the first field in error, else the page itself, so that the
  // new step is announced from its heading.
  var bad = document.querySelector('[aria-invalid="true"]');
  if (bad) { bad.focus(); } else {
    var main = document.getElementById('main');
    if (main && !document.querySelector('input[autofocus]')) { main.focus(); }
  }
})();

/*! kluis link.js v1: opens kluis's hosted link or verification page in a
 * popup, an iframe or by redirect, and calls back with the result. No
 * dependencies. docs/HOSTED.md; load it with its integrity hash. */
(function (global) {
  'use strict';

  // open(options): options.url is the session's hosted_link_url (or a
  // verification's hosted_verify_url); options.mode is "popup" (default),
  // "iframe" (in options.container) or "redirect"; options.onSuccess(
  // public_token, metadata), options.onExit(error, metadata) and
  // options.onEvent(name) are called with what the page reports.
  function open(options) {
    var url = new URL(options.url);
    var kluisOrigin = url.origin;
    var mode = options.mode || 'popup';
    url.searchParams.set('origin', global.location.origin);
    url.searchParams.set('mode', mode);
    if (mode === 'redirect') {
      global.location.assign(url.toString());
      return { close: function () {} };
    }
    var win = null;
    var frame = null;
    var timer = null;
    var done = false;

    function source() { return frame ? frame.contentWindow : win; }

    function finish() {
      done = true;
      global.removeEventListener('message', onMessage);
      if (timer) { global.clearInterval(timer); }
      if (frame && frame.parentNode) { frame.parentNode.removeChild(frame); }
      if (win && !win.closed) { win.close(); }
    }

    function call(fn, a, b) {
      if (typeof fn === 'function') { fn(a, b); }
    }

    // Only kluis's origin, and only the window this call opened, is
    // listened to: a message from any other origin or window is ignored.
    function onMessage(e) {
      if (done || e.origin !== kluisOrigin || e.source !== source()) { return; }
      var d = e.data;
      if (!d || d.source !== 'kluis-link') { return; }
      if (d.type === 'event') {
        call(options.onEvent, String(d.name));
      } else if (d.type === 'success') {
        finish();
        call(options.onSuccess, String(d.public_token), d.metadata || {});
      } else if (d.type === 'exit') {
        finish();
        call(options.onExit, d.error || null, d.metadata || {});
      }
    }
    global.addEventListener('message', onMessage);

    if (mode === 'iframe') {
      frame = global.document.createElement('iframe');
      frame.src = url.toString();
      frame.title = options.title || 'Link your bank account';
      frame.className = 'kluis-link-frame';
      frame.style.border = '0';
      frame.style.width = '100%';
      frame.style.minHeight = '640px';
      (options.container || global.document.body).appendChild(frame);
    } else {
      win = global.open(url.toString(), 'kluis-link', 'popup,width=480,height=720');
      if (!win) {
        finish();
        call(options.onExit, { code: 'popup_blocked' }, {});
        return { close: function () {} };
      }
      timer = global.setInterval(function () {
        if (win.closed && !done) {
          finish();
          call(options.onExit, { code: 'user_closed' }, {});
        }
      }, 500);
    }

    return {
      // close asks the page to end the flow (the user's exit); onExit follows.
      close: function () {
        var w = source();
        if (!done && w) { w.postMessage({ source: 'kluis-app', type: 'exit' }, kluisOrigin); }
      }
    };
  }

  // fromRedirect reads what the hosted page put on the redirect_uri:
  // {link_session_id, status} ("success" or "exit"). The public token is
  // never in a URL: the app's server takes it from GET /v1/link/sessions/{id}.
  function fromRedirect(href) {
    var q = new URL(href || global.location.href).searchParams;
    if (!q.get('kluis_link_session_id')) { return null; }
    return { link_session_id: q.get('kluis_link_session_id'), status: q.get('kluis_status') };
  }

  global.KluisLink = { open: open, fromRedirect: fromRedirect, version: '1' };
})(window);
